"""Write files atomically: a reader sees the old content or the new, never a torn one."""

from __future__ import annotations

import contextlib
import os


def atomic_write(path: str, data: bytes, *, mode: int = 0o600, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` (write a temporary file, fsync, rename).

    On any failure (a full disk, most often) ``path`` keeps its old content and the temporary
    file is removed: nothing half-written is left beside it.
    """
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
