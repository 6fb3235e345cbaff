"""Size-capped log files for a program's stdout and stderr.

A file grows to ``max_size`` bytes, then is renamed ``NAME.1`` (older ones shift up, the oldest
beyond ``backups`` is deleted) and a new file starts. The disk a program can fill is therefore
bounded by ``max_size * (backups + 1)`` per stream, whatever the program writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable

from heartline.config import LogSpec

log = logging.getLogger(__name__)

Follower = Callable[[bytes], None]


class LogFile:
    """One stream's log file with rotation. Writes are synchronous (page cache)."""

    def __init__(self, path: str, spec: LogSpec) -> None:
        self.path = path
        self.spec = spec
        self.followers: set[Follower] = set()
        self._fd = -1
        self._size = 0
        self._open()

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o640)
        self._size = os.fstat(self._fd).st_size

    def reopen(self) -> None:
        """Close and open the path again (after an external tool moved the file)."""
        self.close()
        self._open()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def rotate(self) -> None:
        self.close()
        backups = self.spec.backups
        if backups == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        else:
            for i in range(backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path, f"{self.path}.1")
        self._open()

    def write(self, data: bytes) -> None:
        for follow in list(self.followers):
            follow(data)
        if self._fd < 0:
            return
        view = memoryview(data)
        cap = self.spec.max_size
        try:
            while view:
                if self._size >= cap:
                    self.rotate()
                room = cap - self._size
                n = os.write(self._fd, view[:room])
                self._size += n
                view = view[n:]
        except OSError as e:
            # A full disk or a vanished directory must not take the daemon down; the data is
            # dropped and the next write tries again.
            log.warning("cannot write %s: %s", self.path, e.strerror)
            with contextlib.suppress(OSError):
                self.reopen()

    def tail(self, lines: int) -> bytes:
        """The last ``lines`` lines, reading back into rotated files when needed."""
        chunks: list[bytes] = []
        count = 0
        paths = [self.path] + [f"{self.path}.{i}" for i in range(1, self.spec.backups + 1)]
        for p in paths:
            try:
                with open(p, "rb") as f:
                    data = f.read()
            except OSError:
                break
            chunks.insert(0, data)
            count += data.count(b"\n")
            if count > lines:
                break
        blob = b"".join(chunks)
        if lines <= 0:
            return b""
        parts = blob.splitlines(keepends=True)
        return b"".join(parts[-lines:])
