"""What every lock backend provides, and what it reports about locks.

A backend is synchronous and thread-safe: :class:`heartline.Lock` calls it from the caller's
thread (or from a worker thread for ``async with``), and the backend keeps each lease alive from
a thread of its own. Both backends (lockd and etcd) pass the same conformance suite.
"""

# No `from __future__ import annotations` here: with it, typing turns every NamedTuple field's
# annotation into a ForwardRef it compiles, a few hundred microseconds of each cold
# `heartline lock`. So annotations that name a class not yet defined are written as strings.

import os
import socket
from typing import NamedTuple, Protocol

from heartline.errors import LockError
from heartline.lock._lease import Lease


# NamedTuples rather than dataclasses: importing dataclasses costs a cold `heartline lock`
# several milliseconds.
class ClientInfo(NamedTuple):
    """Who asks for a lock: shown by `heartline locks`."""

    host: str
    pid: int
    label: str = ""

    @classmethod
    def here(cls, label: str = "") -> "ClientInfo":
        return cls(host=socket.gethostname(), pid=os.getpid(), label=label)


class Holder(NamedTuple):
    """One holder (``token`` set) or waiter (``token`` 0) of a lock."""

    host: str
    pid: int
    since: float  # wall-clock seconds (time.time()) when granted or queued
    token: int = 0
    label: str = ""
    #: False for a grant a restarted server restored, until its holder reconnects.
    connected: bool = True


class LockInfo(NamedTuple):
    name: str
    limit: int
    holders: tuple[Holder, ...]
    waiters: tuple[Holder, ...]

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "limit": self.limit,
                "holders": [h._asdict() for h in self.holders],
                "waiters": [w._asdict() for w in self.waiters]}  # fmt: skip


class LockBackend(Protocol):
    """A lock service. Every method may raise :class:`heartline.errors.LockError` subclasses:
    ``LockTimeout`` (not granted in time), ``LockServerUnreachable``, ``LockAuthError``, and
    :class:`heartline.errors.UsageError` for a request the lock parameters refuse.

    The backend keeps each :class:`Lease` it grants: it reports renewals
    (:meth:`Lease.renewed`) and losses (:meth:`Lease.mark_lost`), and its lease thread calls
    :meth:`Lease.poll` at :meth:`Lease.next_change`, so the lease's listeners hear of the
    changes time alone makes (SUSPECT, then LOST) when they happen.
    """

    def acquire(
        self, name: str, *, limit: int, ttl: float, wait: float | None, client: ClientInfo
    ) -> Lease:
        """Wait (for ever when ``wait`` is None, not at all when 0) for a place among the
        ``limit`` holders of ``name``, strictly in arrival order, and return the lease."""
        ...

    def release(self, lease: Lease) -> None:
        """Give the place back; the next waiter is granted at once. Idempotent."""
        ...

    def locks(self) -> list[LockInfo]:
        """Every lock with holders or waiters."""
        ...

    def break_lock(self, name: str) -> int:
        """Drop every holder of ``name`` (admin only); returns how many were dropped."""
        ...

    def session_connection(self) -> socket.socket | None:
        """The connection whose closing ends this backend's session on the server, or None
        when no connection does (etcd: its leases run out on their own).

        lockd counts a session alive while its connection is open and lets every grant of it
        go when the last copy of that connection closes. So a process may hand a copy of its
        descriptor to another (the `heartline lock` runner gives one to its guard): the
        grants then outlive this process until that copy is closed, and no longer. The object
        changes when the backend reconnects (a resumed session); compare it with ``is``.
        """
        ...

    def close(self) -> None:
        """Release everything this backend holds and close its connections."""
        ...


__all__ = [
    "ClientInfo",
    "Holder",
    "Lease",
    "LockBackend",
    "LockError",
    "LockInfo",
]
