"""Real servers on loopback for tests: heartline's own and yours."""

from __future__ import annotations

from heartline.testing._etcd import EtcdServer
from heartline.testing._lockd import LockdServer

__all__ = ["EtcdServer", "LockdServer"]
