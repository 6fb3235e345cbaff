"""What every lock backend provides, and the lease a grant comes with.

A backend is synchronous and thread-safe: :class:`heartline.Lock` calls it from the caller's
thread (or from a worker thread for ``async with``), and the backend keeps each lease alive from
a thread of its own. Both backends (lockd and etcd) pass the same conformance suite.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

from heartline.errors import LockError, LockLost

#: A thread that wakes this much later than it asked to was not running meanwhile: its process
#: was frozen (SIGSTOP) or its machine paused. Far beyond any scheduling delay.
STALL = 0.25


def frozen_for(late: float) -> str | None:
    """What to say of a lease that ran out while the thread keeping it woke ``late`` seconds
    after it meant to (its wake-up was due before the lease's end); None if it was on time."""
    if late < STALL:
        return None
    return f"the lease ran out while this process was frozen (for at least {late:.1f}s)"


# NamedTuples rather than dataclasses: importing dataclasses costs a cold `heartline lock`
# several milliseconds.
class ClientInfo(NamedTuple):
    """Who asks for a lock: shown by `heartline locks`."""

    host: str
    pid: int
    label: str = ""

    @classmethod
    def here(cls, label: str = "") -> ClientInfo:
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


class Lease:
    """One grant: its fencing token, and whether it is still ours.

    ``valid_until`` is a ``time.monotonic()`` deadline that the backend moves forward each time
    the server confirms a renewal. It is computed from the moment the renewal was *sent*, so it
    always ends before the server's own deadline (which starts when the request arrived). Past
    it, nothing proves the server still counts us as the holder, so the lease is lost even if
    no message said so (a frozen or partitioned holder learns it this way).
    """

    def __init__(
        self, name: str, token: int, *, limit: int, ttl: float, valid_until: float
    ) -> None:
        self.name = name
        self.token = token
        self.limit = limit
        self.ttl = ttl
        self.valid_until = valid_until
        self.released = False
        self._lost: LockLost | None = None
        self._mutex = threading.Lock()
        self._callbacks: list[Callable[[LockLost], None]] = []
        self._renew_callbacks: list[Callable[[], None]] = []

    @property
    def lost(self) -> bool:
        return self._lost is not None or (
            not self.released and time.monotonic() >= self.valid_until
        )

    @property
    def lost_error(self) -> LockLost | None:
        if self._lost is None and self.lost:
            return LockLost(
                f"lock {self.name!r}: the lease (token {self.token}) ran out before it was renewed",
                name=self.name,
            )
        return self._lost

    def renewed(self, sent_at: float) -> None:
        """The server confirmed a renewal that was sent at ``sent_at`` (monotonic)."""
        with self._mutex:
            if self._lost is not None or sent_at + self.ttl <= self.valid_until:
                return
            self.valid_until = sent_at + self.ttl
            callbacks = list(self._renew_callbacks)
        for cb in callbacks:
            cb()

    def on_renewed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from a backend thread) each time ``valid_until`` moves on."""
        with self._mutex:
            self._renew_callbacks.append(callback)

    def mark_lost(self, reason: str) -> None:
        """The backend knows the lease is gone; tell every subscriber once."""
        with self._mutex:
            if self._lost is not None or self.released:
                return
            self._lost = LockLost(f"lock {self.name!r} lost (token {self.token}): {reason}",
                                  name=self.name)  # fmt: skip
            callbacks = list(self._callbacks)
        for cb in callbacks:
            cb(self._lost)

    def on_lost(self, callback: Callable[[LockLost], None]) -> None:
        """Call ``callback`` (from a backend thread) when the lease is known to be lost."""
        with self._mutex:
            if self._lost is None:
                self._callbacks.append(callback)
                return
            lost = self._lost
        callback(lost)

    def __repr__(self) -> str:
        return f"<Lease {self.name!r} token={self.token} lost={self.lost}>"


class LockBackend(Protocol):
    """A lock service. Every method may raise :class:`heartline.errors.LockError` subclasses:
    ``LockTimeout`` (not granted in time), ``LockServerUnreachable``, ``LockAuthError``, and
    :class:`heartline.errors.UsageError` for a request the lock parameters refuse."""

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
