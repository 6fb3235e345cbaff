"""What a host reports about its load: read from its own /proc, cheaply.

The placement signal is the number of tasks (threads) in state R or D, counted from this
host's /proc, as GNU parallel counts with ``ps axH``: the kernel's load average lags a
minute behind and, inside a lab host's pid namespace, describes the whole machine. CPU busy,
memory and pressure come from files that are machine-wide even in a namespace; they are
reported for people and for the memory filter.

Cost matters (the goal is under 0.1 % of a core at one report every 2 s). In the machine's
own pid namespace the kernel keeps the count: ``procs_running`` and ``procs_blocked`` in
/proc/stat (tasks runnable, and tasks in uninterruptible I/O wait, which is what D mostly
is), one read that the CPU figures need anyway. Only inside a pid namespace of its own (a lab
host, a container), where /proc/stat describes the whole machine, is /proc walked: a
process's own ``stat`` says how many threads it has, only processes with more than one
thread are walked task by task, and stat files stay open between reports (one ``pread``
each).
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from dataclasses import dataclass

_STAT_SIZE = 1024


def _read(path: str, size: int = 4096) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, size)
    except OSError:
        return None
    finally:
        os.close(fd)


def _state_and_threads(stat: bytes) -> tuple[int, int]:
    """(state letter as a byte, number of threads) from a /proc/PID/stat line."""
    # The command name is in parentheses and may hold anything, ')' included: split at the
    # last one.
    rest = stat[stat.rindex(b")") + 2 :]
    fields = rest.split(b" ", 18)
    return rest[0], int(fields[17])


_BUSY = frozenset(b"RD")


class RunnableCounter:
    """Counts tasks in state R (running or waiting for a CPU) or D (uninterruptible, mostly
    I/O) in ``proc``, one per thread, the threads of ``exclude`` (the reporter) left out.

    It keeps each stat file open between counts and re-reads it with one ``pread``: five
    times cheaper than open/read/close, and safe, since an open /proc stat file belongs to
    its task for good (once the task is gone it fails with ESRCH, even if the pid is reused).
    At most ``max_open`` files are kept; the rest are opened and closed each time.
    """

    def __init__(self, proc: str = "/proc", *, exclude: int | None = None,
                 max_open: int | None = None) -> None:  # fmt: skip
        self.proc = proc
        self.exclude = None if exclude is None else str(exclude)
        if max_open is None:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            max_open = 512 if soft == resource.RLIM_INFINITY else max(0, min(512, soft // 4))
        self.max_open = max_open
        self._open: dict[str, int] = {}

    def _read(self, path: str) -> bytes | None:
        fd = self._open.get(path)
        if fd is not None:
            try:
                return os.pread(fd, _STAT_SIZE, 0)
            except OSError:  # the task is gone (its pid may live on in a new process)
                os.close(self._open.pop(path))
        if len(self._open) >= self.max_open:
            return _read(path, _STAT_SIZE)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            data = os.pread(fd, _STAT_SIZE, 0)
        except OSError:
            os.close(fd)
            return None
        self._open[path] = fd
        return data

    def count(self) -> int:
        n = 0
        seen: set[str] = set()
        try:
            entries = os.listdir(self.proc)
        except OSError:
            return 0
        for name in entries:
            if not name.isdigit() or name == self.exclude:
                continue
            path = f"{self.proc}/{name}/stat"
            seen.add(path)
            stat = self._read(path)
            if not stat:
                continue
            try:
                state, threads = _state_and_threads(stat)
            except (ValueError, IndexError):
                continue
            if threads <= 1:
                n += state in _BUSY
                continue
            try:
                tasks = os.listdir(f"{self.proc}/{name}/task")
            except OSError:
                continue
            for tid in tasks:
                tpath = f"{self.proc}/{name}/task/{tid}/stat"
                seen.add(tpath)
                tstat = self._read(tpath)
                if not tstat:
                    continue
                try:
                    n += _state_and_threads(tstat)[0] in _BUSY
                except (ValueError, IndexError):
                    continue
        for path in [p for p in self._open if p not in seen]:
            os.close(self._open.pop(path))
        return n

    def close(self) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()


def count_runnable(proc: str = "/proc", *, exclude: int | None = None) -> int:
    """One count with nothing kept open (see :class:`RunnableCounter`)."""
    counter = RunnableCounter(proc, exclude=exclude, max_open=0)
    return counter.count()


@dataclass(frozen=True)
class CpuTimes:
    busy: int
    total: int


#: The inode of the machine's initial pid namespace (the kernel's PROC_PID_INIT_INO).
_INIT_PID_NS = 0xEFFFFFFC


def in_initial_pid_namespace() -> bool:
    """This process sees the whole machine's tasks (not a lab host's or a container's)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino == _INIT_PID_NS
    except OSError:
        return False


def kernel_runnable(stat: bytes) -> int | None:
    """``procs_running + procs_blocked`` from /proc/stat's text, minus the reader itself
    (running as it reads); None when either line is missing."""
    found: dict[bytes, int] = {}
    for line in stat.split(b"\n"):
        if line.startswith(b"procs_"):
            key, _, value = line.partition(b" ")
            with contextlib.suppress(ValueError):
                found[key] = int(value)
    if b"procs_running" not in found or b"procs_blocked" not in found:
        return None
    return max(found[b"procs_running"] - 1, 0) + found[b"procs_blocked"]


def cpu_times(proc: str = "/proc", data: bytes | None = None) -> CpuTimes | None:
    """The machine's CPU time, from /proc/stat (or its text ``data``, already read)."""
    if data is None:
        data = _read(f"{proc}/stat", 512)
    if not data or not data.startswith(b"cpu "):
        return None
    try:
        values = [int(x) for x in data.split(b"\n", 1)[0].split()[1:]]
    except ValueError:
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: inside user/nice]
    total = sum(values[:8])
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return CpuTimes(busy=total - idle, total=total)


def busy_percent(before: CpuTimes | None, after: CpuTimes | None) -> float | None:
    if before is None or after is None or after.total <= before.total:
        return None
    return round(100.0 * (after.busy - before.busy) / (after.total - before.total), 1)


def load_averages(proc: str = "/proc") -> list[float]:
    data = _read(f"{proc}/loadavg", 256)
    try:
        return [float(x) for x in (data or b"").split()[:3]]
    except ValueError:
        return []


def memory(proc: str = "/proc") -> tuple[int, int]:
    """(MemAvailable, MemTotal) in bytes; (0, 0) when unreadable."""
    data = _read(f"{proc}/meminfo", 8192) or b""
    found: dict[bytes, int] = {}
    for line in data.split(b"\n"):
        key, _, rest = line.partition(b":")
        if key in (b"MemAvailable", b"MemTotal"):
            with contextlib.suppress(ValueError, IndexError):
                found[key] = int(rest.split()[0]) * 1024
    return found.get(b"MemAvailable", 0), found.get(b"MemTotal", 0)


def pressure(proc: str = "/proc") -> dict[str, float] | None:
    """PSI "some avg10" for cpu, memory and io, or None where the kernel has no PSI."""
    out: dict[str, float] = {}
    for what in ("cpu", "memory", "io"):
        data = _read(f"{proc}/pressure/{what}", 512)
        if not data:
            continue
        for word in data.split(b"\n", 1)[0].split():
            if word.startswith(b"avg10="):
                with contextlib.suppress(ValueError):
                    out[what] = float(word[6:])
    return out or None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Sample:
    sampled: float
    cpus: int
    runnable: int
    load: list[float]
    cpu_busy: float | None
    mem_available: int
    mem_total: int
    psi: dict[str, float] | None


class LoadSampler:
    """Takes load samples; CPU busy % is over the time since the previous sample."""

    def __init__(self, proc: str = "/proc", *, walk: bool | None = None) -> None:
        """``walk``: count runnable tasks by walking /proc even where the kernel's own count
        serves (None: only where it does not)."""
        self.proc = proc
        self._last = cpu_times(proc)
        self._counter = RunnableCounter(proc, exclude=os.getpid())
        self.walk = walk if walk is not None else not (proc == "/proc"
                                                       and in_initial_pid_namespace())  # fmt: skip

    def sample(self) -> Sample:
        stat = _read(f"{self.proc}/stat", 1 << 16) or b""
        now = cpu_times(self.proc, stat)
        busy = busy_percent(self._last, now)
        self._last = now
        available, total = memory(self.proc)
        runnable = None if self.walk else kernel_runnable(stat)
        return Sample(
            sampled=time.time(),
            cpus=cpu_count(),
            runnable=self._counter.count() if runnable is None else runnable,
            load=load_averages(self.proc),
            cpu_busy=busy,
            mem_available=available,
            mem_total=total,
            psi=pressure(self.proc),
        )

    def close(self) -> None:
        self._counter.close()
