"""Linux inotify through ctypes (the standard library has no binding to it), and the draining
of descriptors that woke a sleeper.

Reports use it twice: the helper thread sleeps until faulthandler writes to the raw dump file
(:data:`IN_MODIFY`), and :func:`heartline.service.reports.wait_for_report` sleeps until a report
arrives in its directory (:data:`IN_MOVED_TO`, :data:`IN_CLOSE_WRITE`). ctypes is loaded on
first use only: a program that imports reports and never installs them does not pay for it.
"""

from __future__ import annotations

import errno
import os

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ctypes import CDLL

#: A watched file was written to.
IN_MODIFY = 0x2
#: A file written in a watched directory was closed.
IN_CLOSE_WRITE = 0x8
#: A file was renamed into a watched directory (how reports arrive: written, then renamed).
IN_MOVED_TO = 0x80
#: A file or directory was created in a watched directory.
IN_CREATE = 0x100

_libc: list[CDLL] = []  # the C library, once loaded


def _inotify_calls() -> CDLL:
    if not _libc:
        import ctypes

        _libc.append(ctypes.CDLL(None, use_errno=True))
    return _libc[0]


def open_inotify() -> int | None:
    """A new non-blocking inotify descriptor, or None where inotify is not available (no
    such system call, or the per-user limit of instances is reached)."""
    try:
        libc = _inotify_calls()
        fd = int(libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK))
    except (OSError, AttributeError):
        return None
    return fd if fd >= 0 else None


def add_watch(fd: int, path: str, mask: int) -> int:
    """Watch ``path`` for the events in ``mask`` on ``fd`` (again: the mask is replaced);
    0, or the errno of the failure (ENOENT: no such path; ENOSPC: no watch left)."""
    import ctypes

    libc = _inotify_calls()
    if int(libc.inotify_add_watch(fd, os.fsencode(path), mask)) >= 0:
        return 0
    return ctypes.get_errno()


def watch_file(path: str) -> int | None:
    """An inotify descriptor that becomes readable when ``path`` is written to, or None where
    inotify is not available."""
    fd = open_inotify()
    if fd is None:
        return None
    if add_watch(fd, path, IN_MODIFY) != 0:
        os.close(fd)
        return None
    return fd


def watch_directory(fd: int, path: str) -> bool:
    """Watch ``path`` on ``fd`` for files renamed into it (how reports arrive) or written in
    place (how a writer other than ours may make them). While it is missing (a program makes it
    again at its next report), watch its deepest existing parent for what is created there
    instead: call this again after each wake-up, to follow the directory down as it appears.
    False when nothing could be watched."""
    head = os.path.abspath(path)
    mask = IN_MOVED_TO | IN_CLOSE_WRITE
    while (error := add_watch(fd, head, mask)) == errno.ENOENT:
        parent = os.path.dirname(head)
        if parent == head:
            return False
        head, mask = parent, IN_CREATE | IN_MOVED_TO
    return error == 0


def drain(fd: int, *, stop: bytes = b"") -> bool:
    """Read what is there without blocking; False when ``stop`` was read or the other end
    closed."""
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data or (stop and stop in data):
            return False
