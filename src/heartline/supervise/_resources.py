"""What each program's processes cost: CPU, memory, IO and descriptors, read from /proc.

The iotop/atop hunt for who hammers the disk, per program: every process of a program's
process group is summed, so a worker pool counts as its program. Rates (CPU %, bytes per
second) need two readings; the Sampler keeps the previous one and compares.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

from heartline._util import ProcInfo, scan

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Proc:
    pid: int
    ppid: int
    pgrp: int
    name: str
    cpu_ticks: int
    rss: int
    read_bytes: int | None = None
    write_bytes: int | None = None
    fds: int | None = None


@dataclass
class Reading:
    at: float
    procs: dict[int, Proc] = field(default_factory=dict)


def _read_proc(info: ProcInfo) -> Proc | None:
    if info.state == "Z":
        return None
    pid = info.pid
    proc = Proc(
        pid=pid,
        ppid=info.ppid,
        pgrp=info.pgrp,
        name=info.name,
        cpu_ticks=info.cpu_ticks,
        rss=info.rss_pages * _PAGE,
    )
    try:
        with open(f"/proc/{pid}/io", "rb") as f:
            for line in f:
                key, _, value = line.partition(b":")
                if key == b"read_bytes":
                    proc.read_bytes = int(value)
                elif key == b"write_bytes":
                    proc.write_bytes = int(value)
    except OSError:
        pass  # another user's process, unless we are root
    with contextlib.suppress(OSError):
        proc.fds = len(os.listdir(f"/proc/{pid}/fd"))
    return proc


def read_groups(pgids: set[int]) -> Reading:
    """One pass over /proc: every live process whose process group is in ``pgids``."""
    reading = Reading(at=time.monotonic())
    if not pgids:
        return reading
    for info in scan().values():
        if info.pgrp in pgids and (proc := _read_proc(info)) is not None:
            reading.procs[info.pid] = proc
    return reading


def _rate(now: int | None, before: int | None, dt: float) -> float | None:
    if now is None or before is None or dt <= 0:
        return None
    return max(0, now - before) / dt


def _sum(values: list[Any]) -> Any:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def figures(reading: Reading, before: Reading | None) -> dict[int, dict[str, Any]]:
    """Per process group: totals and a row per process. Rates compare with ``before``; they
    are None without it, and so is any figure /proc would not tell (another user's IO)."""
    dt = reading.at - before.at if before is not None else 0.0
    rows: dict[int, list[dict[str, Any]]] = {}
    for proc in sorted(reading.procs.values(), key=lambda p: p.pid):
        old = before.procs.get(proc.pid) if before is not None else None
        cpu = None
        if old is not None and dt > 0:
            cpu = round(100.0 * max(0, proc.cpu_ticks - old.cpu_ticks) / _TICK / dt, 1)
        rows.setdefault(proc.pgrp, []).append(
            {
                "pid": proc.pid,
                "ppid": proc.ppid,
                "name": proc.name,
                "cpu_pct": cpu,
                "rss": proc.rss,
                "read_bps": _rate(proc.read_bytes, old.read_bytes if old else None, dt),
                "write_bps": _rate(proc.write_bytes, old.write_bytes if old else None, dt),
                "fds": proc.fds,
            }
        )
    out: dict[int, dict[str, Any]] = {}
    for pgrp, procs in rows.items():
        cpu = _sum([r["cpu_pct"] for r in procs])
        read, write = _sum([r["read_bps"] for r in procs]), _sum([r["write_bps"] for r in procs])
        out[pgrp] = {
            "cpu_pct": None if cpu is None else round(cpu, 1),
            "rss": sum(r["rss"] for r in procs),
            "read_bps": None if read is None else round(read),
            "write_bps": None if write is None else round(write),
            "fds": _sum([r["fds"] for r in procs]),
            "processes": procs,
        }
    return out
