"""Where backdoor sockets live and who may use them: the backdoor's errors, the default
paths, the checks on directories, and the probe and sweep of sockets left by dead processes.

Part of :mod:`heartline.service.backdoor`, which re-exports the errors and
:func:`default_path`; the rules themselves are told in that module's documentation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import stat

from heartline._util import check_private_dir, program_name
from heartline._util import ensure_private_dir as _ensure_private_dir
from heartline.errors import HeartlineError

#: The audit log of every backdoor module: its name is documented, so it is not the module's.
log = logging.getLogger("heartline.backdoor")


class BackdoorError(HeartlineError):
    """The backdoor cannot be installed or reached."""


class UnsafePath(BackdoorError):
    """The socket path or its directory is unsafe: not a socket, not ours, or open to others."""


class BackdoorInUse(BackdoorError):
    """Something already answers on the socket path."""

    # Not 6, which says that a daemon already runs (DaemonAlreadyRunning).
    exit_code = 9


def default_dir() -> str:
    """Directory of the default socket path (see :mod:`heartline.service.backdoor`)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "heartline", "backdoor")
    if os.getuid() == 0:
        return "/run/heartline/backdoor"
    return f"/tmp/heartline-{os.getuid()}/backdoor"


def default_path(pid: int | None = None) -> str:
    """``<default dir>/<prog>-<pid>.sock`` for this program (or for ``pid``)."""
    return os.path.join(default_dir(), f"{prog_name()}-{pid or os.getpid()}.sock")


def prog_name() -> str:
    """The program's name as socket paths show it (see heartline._util.program_name)."""
    return program_name()


def check_dir(path: str, *, private: bool) -> None:
    """See heartline._util.check_private_dir; refusals are :class:`UnsafePath`."""
    check_private_dir(path, private=private, error=UnsafePath)


def ensure_private_dir(path: str) -> None:
    """See heartline._util.ensure_private_dir; refusals are :class:`UnsafePath`."""
    _ensure_private_dir(path, error=UnsafePath)


def probe(path: str) -> None:
    """Make ``path`` free for a new socket: remove a stale socket, refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UnsafePath(f"{path} exists and is not a socket; not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        # Nobody listens: a socket left by a process that died. Only unlink what we looked at.
        try:
            again = os.lstat(path)
        except FileNotFoundError:
            return
        if (again.st_dev, again.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(path)
            log.info("backdoor: removed stale socket %s", path)
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BackdoorError(f"cannot check {path}: {exc}") from exc
    finally:
        probe.close()
    raise BackdoorInUse(f"{path} is in use: another process answers on it")


_SOCKET_NAME = re.compile(r"^(?:.+-(\d+)\.sock|\.(\d+)-\d+\.tmp)$")
#: Entries looked at per sweep, so a directory flooded with files cannot stall install().
_SWEEP_LIMIT = 1000


def sweep(directory: str) -> None:
    """Remove the sockets of dead processes from our private default directory.

    A program killed with SIGKILL never runs its atexit hook, so every such death would leave
    a ``<prog>-<pid>.sock`` behind for ever. Only entries named after a pid that no longer
    exists are looked at, and each goes through :func:`probe`, which unlinks a socket only
    when nobody answers on it.
    """
    try:
        names = os.listdir(directory)[:_SWEEP_LIMIT]
    except OSError:
        return
    for name in names:
        m = _SOCKET_NAME.match(name)
        if m is None:
            continue
        pid = int(m.group(1) or m.group(2))
        if pid == os.getpid() or os.path.exists(f"/proc/{pid}"):
            continue
        with contextlib.suppress(OSError, BackdoorError):
            probe(os.path.join(directory, name))
