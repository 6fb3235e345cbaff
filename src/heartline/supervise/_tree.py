"""The processes of a program beyond its main process: what is left in its group after the main
process exits, and what escaped the group (``setsid()``, a double fork).

Why this matters: a supervisor that only knows its main process says "exited" while a daemonized
grandchild runs on, and starts a second copy beside it. The daemon is a child subreaper
(PR_SET_CHILD_SUBREAPER), so an orphan among its programs' descendants becomes the daemon's own
child instead of init's; a walk of the daemon's own process tree (the /proc/PID/task/TID/children
files, or a pass over all of /proc where the kernel lacks them) then finds it, and the
environment every program starts with (``HEARTLINE_PROGRAM``, ``NOTIFY_SOCKET``) says whose it is
even after it left the process group. There is no kernel event for "a process was reparented to
you", so the walk runs when it matters: before a stop, on SIGCHLD, for status, and when a main
process exits, where a glance at the daemon's own children first tells whether anything came
back at all (the common case costs one small read, not a walk).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass

_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class ProcInfo:
    """One line of /proc/PID/stat, the fields used here."""

    pid: int
    ppid: int
    pgrp: int
    session: int
    state: str
    start_time: int
    name: str


def read_stat(pid: int) -> ProcInfo | None:
    """/proc/PID/stat of one process, or None when it is gone (or unreadable)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    close = data.rfind(b")")
    if close < 0:
        return None
    fields = data[close + 2 :].split()
    try:
        return ProcInfo(
            pid=pid,
            ppid=int(fields[1]),
            pgrp=int(fields[2]),
            session=int(fields[3]),
            state=fields[0].decode("ascii", "replace"),
            start_time=int(fields[19]),
            name=data[data.find(b"(") + 1 : close].decode(errors="replace"),
        )
    except (IndexError, ValueError):
        return None


def scan() -> dict[int, ProcInfo]:
    """Every process of this pid namespace (one pass over /proc)."""
    out: dict[int, ProcInfo] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for entry in entries:
        if entry.isdigit():
            info = read_stat(int(entry))
            if info is not None:
                out[info.pid] = info
    return out


def children_of(pid: int) -> set[int] | None:
    """The children of every thread of ``pid``; None when the kernel has no
    /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN), and the caller must scan all of /proc.
    """
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return set()
    kids: set[int] = set()
    for tid in tids:
        try:
            fd = os.open(f"/proc/{pid}/task/{tid}/children", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if os.path.exists(f"/proc/{pid}/task/{tid}"):
                return None  # the thread is there, the file is not: not offered here
            continue
        except OSError:
            continue
        try:
            data = b""
            while chunk := os.read(fd, 65536):
                data += chunk
        except OSError:
            continue
        finally:
            os.close(fd)
        kids.update(int(x) for x in data.split())
    return kids


def descendants(roots: set[int], limit: int = 1 << 20) -> dict[int, ProcInfo] | None:
    """``roots`` and every process below them, from the children files (far cheaper than a
    pass over all of /proc on a busy machine); None where those files are not offered."""
    out: dict[int, ProcInfo] = {}
    todo = list(roots)
    while todo and len(out) < limit:
        pid = todo.pop()
        if pid in out:
            continue
        info = read_stat(pid)
        if info is None:
            continue
        out[pid] = info
        kids = children_of(pid)
        if kids is None:
            return None
        todo.extend(kids)
    return out


def environ_of(pid: int, keys: tuple[bytes, ...]) -> dict[str, str]:
    """Some variables of the environment ``pid`` was started with (empty when unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read(1 << 20)
    except OSError:
        return {}
    found: dict[str, str] = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key in keys:
            found[key.decode()] = value.decode(errors="replace")
    return found


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux 3.4+); False if refused."""
    import ctypes  # only the daemon needs it: kept off the CLI's cold start
    import ctypes.util

    libc_name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def reap_zombie(pid: int) -> bool:
    """Collect the exit of a zombie child of ours; False when it is not ours or not dead."""
    try:
        got, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return got == pid


def release_exited(loop: asyncio.AbstractEventLoop, pidfd: int) -> None:
    """Done with the pidfd of a followed process that exited: stop watching it, collect its
    exit if it became our child (reparented to this subreaper), close it."""
    loop.remove_reader(pidfd)
    with contextlib.suppress(OSError):
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    os.close(pidfd)
