"""For tests, heartline's own and yours: real servers on loopback, lab hosts (a cluster of
namespaces on this machine), and virtual time."""

from __future__ import annotations

from heartline.testing._etcd import EtcdServer
from heartline.testing._lab import LabHosts, lab_hosts, lab_unavailable
from heartline.testing._lockd import LockdServer
from heartline.testing._virtual import (
    FakeLauncher,
    FakeProcess,
    VirtualClock,
    run_until,
    virtual_loop,
)

__all__ = [
    "EtcdServer",
    "FakeLauncher",
    "FakeProcess",
    "LabHosts",
    "LockdServer",
    "VirtualClock",
    "lab_hosts",
    "lab_unavailable",
    "run_until",
    "virtual_loop",
]
