"""Cluster locks: :class:`Lock`, its leases, and the backends it runs on (lockd's client, etcd).

The lock server is a program of its own, :mod:`heartline.lockd`; the wire protocol both sides
speak is ``heartline.lock.protocol``. Names that only a command or the server needs (the
`heartline lock` runner, the protocol, the backends' classes) are imported on first use, so
``import heartline.lock`` stays cheap for a cold `heartline lock`.
"""

from typing import TYPE_CHECKING

from heartline.errors import LockError, LockLost, LockReleased, LockTimeout
from heartline.lock._backend import ClientInfo, Holder, LockBackend, LockInfo
from heartline.lock._entries import Entries, Entry, Mirror
from heartline.lock._lease import HELD, Lease, LeaseState, stop_grace
from heartline.lock._lock import Lock, open_backend, open_entries
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
from heartline.lock._secret import read_token_text

if TYPE_CHECKING:
    from heartline.lock import _protocol as protocol
    from heartline.lock._etcd import EtcdBackend
    from heartline.lock._etcd_gateway import EtcdGateway
    from heartline.lock._lockd import LockdBackend
    from heartline.lock._runner import log_to_stderr_when_used, run_locked

__all__ = [
    "DEFAULT_TTL",
    "DEFAULT_URL",
    "HELD",
    "MAX_TTL",
    "MIN_TTL",
    "ClientInfo",
    "Entries",
    "Entry",
    "EtcdBackend",
    "EtcdGateway",
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
    "LockdBackend",
    "Mirror",
    "check_limit",
    "check_name",
    "check_request",
    "check_ttl",
    "check_wait",
    "log_to_stderr_when_used",
    "open_backend",
    "open_entries",
    "parse_url",
    "protocol",
    "read_token_text",
    "run_locked",
    "stop_grace",
]


def __getattr__(name: str) -> object:
    # Explicit imports, not importlib: each costs only what it loads.
    if name == "protocol":
        from heartline.lock import _protocol

        return _protocol
    if name in ("run_locked", "log_to_stderr_when_used"):
        from heartline.lock import _runner

        return getattr(_runner, name)
    if name == "EtcdBackend":
        from heartline.lock._etcd import EtcdBackend

        return EtcdBackend
    if name == "EtcdGateway":
        from heartline.lock._etcd_gateway import EtcdGateway

        return EtcdGateway
    if name == "LockdBackend":
        from heartline.lock._lockd import LockdBackend

        return LockdBackend
    raise AttributeError(f"module 'heartline.lock' has no attribute {name!r}")
