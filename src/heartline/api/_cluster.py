"""The cluster's messages: what every daemon publishes in the backend, the holds placements
charge, and what `heartline hosts --json` prints. Plain JSON objects, defined once here;
``heartline.cluster`` checks every field of what it reads (other hosts write it)."""

from __future__ import annotations

from typing import Literal, TypedDict

#: Version of the report and hold formats; a reader skips entries of another version.
CLUSTER_FORMAT = 1

#: ``up``: reported within 2 intervals; ``unresponsive``: its report is older (never chosen);
#: ``unknown``: listed in ``[cluster.hosts]`` but never reported (its session is gone or never was).
HostState = Literal["up", "unresponsive", "unknown"]


class Capacity(TypedDict):
    cpus: float | None
    mem: int | None


class HostReport(TypedDict):
    v: int
    host: str
    #: Wall-clock time of the sample on the reporting host.
    sampled: float
    seq: int
    interval: float
    cpus: int
    #: Tasks in state R or D in the host's own /proc (the reporter's own threads left out).
    runnable: int
    load: list[float]
    cpu_busy: float | None
    mem_available: int
    mem_total: int
    #: PSI "some avg10" per resource (cpu, memory, io), None without PSI.
    psi: dict[str, float] | None
    #: Programs the host's daemon runs now.
    programs: int
    #: CPUs claimed by the placements' holds on this host when the sample was taken (so a
    #: reader can tell the placed commands in ``runnable`` from the host's other load).
    held: float
    #: The host's own load (its runnable tasks less the placed commands), the lower of this
    #: sample's and the one before: a spike shorter than an interval (a burst of logins) is
    #: not load.
    other: float
    labels: list[str]
    groups: list[str]
    capacity: Capacity
    #: Where SSH reaches the host.
    address: str


class HoldRecord(TypedDict):
    v: int
    id: str
    host: str
    cpus: float
    mem: int
    #: Who placed it: "host:pid".
    who: str
    command: str
    #: Wall-clock time the hold was charged.
    at: float


class HostInfo(TypedDict):
    name: str
    state: HostState
    #: Seconds since the report was written, as of the read; None if it never reported.
    age: float | None
    report: HostReport | None
    holds: list[HoldRecord]
