"""The daemon's own log: stderr, capped in size when stderr is a file.

Under systemd stderr is the journal, in a terminal a person reads it: the daemon leaves such a
stream alone (the journal has its own limits). When stderr is a regular file, as with
``heartline up --detach`` (``<log_dir>/heartline.log``) or ``heartline up 2>>FILE``, nothing
else bounds it, so the daemon caps it as it caps a program's log: once the file holds
MAX_BYTES, it is renamed ``NAME.1`` (older ones shift up, the one beyond BACKUPS goes), a new
file takes its place, and the descriptor behind stderr (and stdout, when it wrote to the same
file) is moved onto the new file, so that anything written there without logging, such as a
traceback from the interpreter itself, lands in the current file too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
from typing import TextIO

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3


def file_behind(fd: int) -> str | None:
    """The path of the regular file that ``fd`` writes to, or None (a pipe, a terminal, a
    socket, or a file that no longer has a name)."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        path = os.readlink(f"/proc/self/fd/{fd}")
        named = os.stat(path)
    except OSError:
        return None
    if (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino):
        return None
    return path


class CappedFileHandler(logging.StreamHandler[TextIO]):
    """Writes records to ``stream``, whose descriptor writes to the file ``path``, and rotates
    that file when it reaches ``max_bytes``, keeping ``backups`` older ones."""

    def __init__(
        self, stream: TextIO, path: str, *, max_bytes: int = MAX_BYTES, backups: int = BACKUPS
    ) -> None:
        super().__init__(stream)
        self.fd = stream.fileno()
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if os.fstat(self.fd).st_size >= self.max_bytes:
                self._rotate()
        except OSError:
            # Out of descriptors, a full disk, a vanished directory: keep writing where the
            # descriptor points, and try again with the next record.
            pass
        super().emit(record)

    def _rotate(self) -> None:
        current = os.fstat(self.fd)
        with contextlib.suppress(FileNotFoundError):
            named = os.stat(self.path)
            # Rotate only the file written to. If someone moved it away, or a rotation got as
            # far as the rename but could not open the new file, a new file is all it takes.
            if (named.st_dev, named.st_ino) == (current.st_dev, current.st_ino):
                if self.backups:
                    for i in range(self.backups - 1, 0, -1):
                        with contextlib.suppress(FileNotFoundError):
                            os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
                    os.replace(self.path, f"{self.path}.1")
                else:
                    os.unlink(self.path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        new = os.open(self.path, flags, stat.S_IMODE(current.st_mode))
        try:
            targets = [fd for fd in (1, 2, self.fd) if _same_file(fd, current)]
            for stream in (sys.stdout, sys.stderr, self.stream):
                with contextlib.suppress(Exception):
                    stream.flush()
            for fd in dict.fromkeys(targets):
                os.dup2(new, fd)
        finally:
            os.close(new)


def _same_file(fd: int, st: os.stat_result) -> bool:
    try:
        other = os.fstat(fd)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


def configure(stream: TextIO, *, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
    """Log to ``stream`` at INFO; under systemd's journal without our own timestamps; capped
    at ``max_bytes`` and rotated through ``backups`` older files when the stream writes to a
    regular file."""
    fmt = "%(levelname)s %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s heartline[%(process)d] " + fmt
    path = file_behind(stream.fileno())
    handler: logging.Handler = (
        CappedFileHandler(stream, path, max_bytes=max_bytes, backups=backups)
        if path is not None
        else logging.StreamHandler(stream)
    )
    handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
