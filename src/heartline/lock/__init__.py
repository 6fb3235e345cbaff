"""Cluster locks: :class:`Lock`, the lockd server and client, and the etcd backend."""

from heartline.errors import LockError, LockLost, LockReleased, LockTimeout
from heartline.lock._backend import ClientInfo, Holder, LockBackend, LockInfo
from heartline.lock._lease import Lease, LeaseState
from heartline.lock._lock import Lock, open_backend
from heartline.lock._params import (
    DEFAULT_TTL,
    DEFAULT_URL,
    MAX_TTL,
    MIN_TTL,
    check_limit,
    check_name,
    check_request,
    check_ttl,
    check_wait,
    parse_url,
)

__all__ = [
    "DEFAULT_TTL",
    "DEFAULT_URL",
    "MAX_TTL",
    "MIN_TTL",
    "ClientInfo",
    "Holder",
    "Lease",
    "LeaseState",
    "Lock",
    "LockBackend",
    "LockError",
    "LockInfo",
    "LockLost",
    "LockReleased",
    "LockTimeout",
    "check_limit",
    "check_name",
    "check_request",
    "check_ttl",
    "check_wait",
    "open_backend",
    "parse_url",
]
