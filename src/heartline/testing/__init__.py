"""For tests, heartline's own and yours: real servers on loopback, lab hosts (a cluster of
namespaces on this machine), and virtual time."""

from __future__ import annotations

import os as _os

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

#: A program that logs its runs to a shared history and catches a second copy at once
#: (see its docstring): ``[sys.executable, RUN_LOG_PROGRAM, HISTORY, LOCKFILE, HOST]``.
RUN_LOG_PROGRAM = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "_runlog.py")

__all__ = [
    "RUN_LOG_PROGRAM",
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
