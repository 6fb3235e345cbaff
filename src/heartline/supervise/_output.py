"""A program's output: the read ends of its pipes, copied into its log files as data comes."""

from __future__ import annotations

import asyncio
import os

from heartline.supervise._logs import LogFile


class Output:
    """Watches a process's stdout and stderr pipes on the loop and writes what comes to the
    log files; a pipe at end of file is closed. Reading never blocks (the pipes are
    non-blocking) and reads at most 64 KiB at a time, so a flood cannot starve the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._pipes: set[int] = set()

    def watch(self, fd: int, logfile: LogFile | None) -> int:
        """Copy ``fd`` into ``logfile``; the pipe's inode (kept to find it again on adoption)."""
        self._pipes.add(fd)
        self.loop.add_reader(fd, self._on_output, fd, logfile)
        return os.fstat(fd).st_ino

    def _on_output(self, fd: int, logfile: LogFile | None) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            if logfile is not None:
                logfile.write(data)
            return
        self._close(fd)

    def _close(self, fd: int) -> None:
        self.loop.remove_reader(fd)
        self._pipes.discard(fd)
        os.close(fd)

    def close(self) -> None:
        for fd in list(self._pipes):
            self._close(fd)
