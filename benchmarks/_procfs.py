"""What /proc says about processes, their threads and the machine: the one place the benchmark
scripts read it from, so that every figure of the same name is measured the same way.

Readers of one process return None (or leave the process out) when it is gone, unless they say
otherwise. Linux only; standard library only.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Iterable
from typing import NamedTuple

from _common import one_line


class ProcStat(NamedTuple):
    """The fields of /proc/PID/stat the benchmarks use; times in clock ticks."""

    state: str
    ppid: int
    pgrp: int
    session: int
    utime: int
    stime: int
    starttime: int


def proc_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name in parentheses may hold spaces and parentheses: fields start after the last.
    rest = data[data.rfind(")") + 2 :].split()
    return ProcStat(
        state=rest[0],
        ppid=int(rest[1]),
        pgrp=int(rest[2]),
        session=int(rest[3]),
        utime=int(rest[11]),
        stime=int(rest[12]),
        starttime=int(rest[19]),
    )


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def proc_exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` in clock ticks (``os.sysconf("SC_CLK_TCK")`` a second)."""
    st = proc_stat(pid)
    if st is None:
        return None
    return st.utime + st.stime


def total_cpu_ticks(pids: Iterable[int]) -> int:
    """utime + stime summed over ``pids``; those that are gone count nothing."""
    return sum(cpu_ticks(pid) or 0 for pid in pids)


def sched_ns(pid: int) -> int | None:
    """On-CPU time of all live threads in ns (finer than clock ticks)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def vm_rss_kb(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB; None when it has none (a zombie). Raises OSError when it is gone."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid``. Raises OSError when it is gone."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def ctxt_switches(pid: int, tids: Iterable[int] | None = None) -> dict[int, tuple[int, int]]:
    """(voluntary, involuntary) context switches of each thread of ``pid`` (or of ``tids``
    only); a thread that ended meanwhile is left out. A thread that never wakes up keeps both
    figures still."""
    if tids is None:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            return {}
    out = {}
    for tid in tids:
        vol = invol = 0
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        invol = int(line.split()[1])
        except OSError:
            continue
        out[tid] = (vol, invol)
    return out


def descendants(root_pids: Iterable[int]) -> list[int]:
    """All live descendants of ``root_pids`` (by ppid links)."""
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st:
            children.setdefault(st.ppid, []).append(pid)
    out: list[int] = []
    todo, seen = list(root_pids), set()
    while todo and len(seen) < 100000:
        p = todo.pop()
        for c in children.get(p, []):
            if c not in seen:
                seen.add(c)
                out.append(c)
                todo.append(c)
    return out


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, or "?"."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def machine_info() -> dict[str, object]:
    """Cores, CPU model, memory, kernel, OS and Python of this machine, and the time now."""

    def read(path: str) -> str:
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return ""

    model = ""
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = ""
    for line in read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem = "%.1f GiB" % (int(line.split()[1]) / 1024.0 / 1024.0)
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
        "os": one_line(read("/etc/debian_version"))
        and "Debian " + read("/etc/debian_version").strip(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
