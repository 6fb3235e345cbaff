"""Cluster locks: :class:`Lock`, the lockd server and client, and the etcd backend."""

from heartline.errors import LockError, LockLost, LockReleased, LockTimeout
from heartline.lock._backend import ClientInfo, Holder, Lease, LockBackend, LockInfo
from heartline.lock._lock import Lock, open_backend

__all__ = [
    "ClientInfo",
    "Holder",
    "Lease",
    "Lock",
    "LockBackend",
    "LockError",
    "LockInfo",
    "LockLost",
    "LockReleased",
    "LockTimeout",
    "open_backend",
]
