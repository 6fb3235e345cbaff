"""Real servers on loopback for tests: heartline's own and yours."""

from __future__ import annotations

from heartline.testing._etcd import EtcdServer

__all__ = ["EtcdServer"]
