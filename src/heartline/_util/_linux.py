"""Linux process helpers in one place: /proc/PID/stat, start times, the boot id, process-group
signals, which signals a process catches, its environment, its children and descendants, and
the child subreaper.

Why a walk of the children files: a supervisor that only knows its main process says "exited"
while a daemonized grandchild runs on. The daemon is a child subreaper (PR_SET_CHILD_SUBREAPER),
so an orphan among its programs' descendants becomes the daemon's own child instead of init's;
a walk of the daemon's own process tree (the /proc/PID/task/TID/children files, or a pass over
all of /proc where the kernel lacks them) then finds it (see supervise/_escapes for when).
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio  # only named in a signature: the CLI's cold start must not load it

#: Pids this process forked itself and reaps itself (programs, checks, the fd holder). With the
#: daemon a child subreaper, any other child of ours is a process that escaped a program.
OWN_CHILDREN: set[int] = set()


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
    #: utime + stime, in clock ticks.
    cpu_ticks: int = 0
    #: Resident set size, in pages.
    rss_pages: int = 0


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
            cpu_ticks=int(fields[11]) + int(fields[12]),
            rss_pages=int(fields[21]),
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


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if it is gone.

    Together with the pid it identifies a process across a daemon restart: a recycled pid has
    a different start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    return int(fields[19])


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:  # pragma: no cover
        return ""


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def handles_signal(pid: int, sig: int) -> bool:
    """Whether ``pid`` catches ``sig`` (so sending it asks rather than kills)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


def signal_leader(pid: int, pidfd: int, sig: int) -> None:
    """``sig`` to the process group ``pid`` leads, else to ``pid`` alone (through its pidfd).

    The group is looked up and signalled microseconds apart; a pid is not handed out again
    that fast (the kernel allocates them in a cycle).
    """
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(pidfd, sig)
