"""For tests, heartline's own and yours: real servers on loopback, and virtual time."""

from __future__ import annotations

from heartline.testing._etcd import EtcdServer
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
    "LockdServer",
    "VirtualClock",
    "run_until",
    "virtual_loop",
]
