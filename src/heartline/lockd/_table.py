"""lockd's lock table: FIFO queues, semaphores and grants, with no I/O and no clock.

The server feeds it requests and session ends; it answers with the grants it made, which the
server journals and then pushes. Strict FIFO: a newcomer is granted at once only when nobody
waits before it, so a stream of try-locks or fresh requests can never overtake a waiter.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from heartline.errors import LockError


class LimitMismatch(LockError):
    """A request for a lock in use asks for another number of holders (you did it)."""

    def __init__(self, name: str, have: int, asked: int) -> None:
        super().__init__(
            f"lock {name!r} is in use with limit {have}; this request asked for limit {asked}",
            name=name,
        )


@dataclass(frozen=True)
class Who:
    session: str
    host: str
    pid: int
    label: str


@dataclass(frozen=True)
class Grant:
    name: str
    token: int
    limit: int
    who: Who
    since: float  # wall clock


@dataclass
class Waiter:
    name: str
    req_id: int
    who: Who
    since: float


@dataclass
class Entry:
    limit: int
    holders: dict[int, Grant] = field(default_factory=dict)  # token -> grant, in grant order
    waiters: deque[Waiter] = field(default_factory=deque)

    def empty(self) -> bool:
        return not self.holders and not self.waiters


#: A waiter and the grant it just received.
Promoted = tuple[Waiter, Grant]


class Table:
    """Every lock with holders or waiters. ``next_token`` hands out fencing tokens."""

    def __init__(self, next_token: Callable[[], int]) -> None:
        self._next_token = next_token
        self.entries: dict[str, Entry] = {}
        #: While frozen (after a host crash, for one lease period) nothing new is granted.
        self.frozen = False

    def acquire(
        self, name: str, limit: int, waiter: Waiter, *, try_only: bool, now: float
    ) -> Grant | None:
        """A grant made at once, or None: queued (``try_only`` False) or refused (True)."""
        entry = self.entries.get(name)
        if entry is None:
            entry = self.entries[name] = Entry(limit)
        elif entry.limit != limit:
            if not entry.empty():
                raise LimitMismatch(name, entry.limit, limit)
            entry.limit = limit
        if not self.frozen and not entry.waiters and len(entry.holders) < entry.limit:
            return self._grant(name, entry, waiter.who, now)
        if try_only:
            self._forget_if_empty(name, entry)
            return None
        entry.waiters.append(waiter)
        return None

    def restore(self, grant: Grant) -> None:
        """Put back a grant read from the journal (its holder may come back to resume it)."""
        entry = self.entries.setdefault(grant.name, Entry(grant.limit))
        entry.holders[grant.token] = grant

    def release(self, name: str, token: int, now: float) -> tuple[Grant | None, list[Promoted]]:
        """Drop the holder with ``token``; returns it and the grants this made to waiters."""
        entry = self.entries.get(name)
        if entry is None:
            return None, []
        dropped = entry.holders.pop(token, None)
        if dropped is None:
            return None, []
        return dropped, self._promote(name, entry, now)

    def cancel(self, name: str, session: str, req_id: int | None = None) -> list[Waiter]:
        """Remove this session's waiters for ``name`` (the one with ``req_id`` if given)."""
        entry = self.entries.get(name)
        if entry is None:
            return []
        gone = [
            w
            for w in entry.waiters
            if w.who.session == session and (req_id is None or w.req_id == req_id)
        ]
        if gone:
            entry.waiters = deque(w for w in entry.waiters if w not in gone)
        self._forget_if_empty(name, entry)
        return gone

    def drop_session(self, session: str, now: float) -> tuple[list[Grant], list[Promoted]]:
        """A session ended: release its grants, forget its waiters. Returns (released, granted)."""
        released: list[Grant] = []
        granted: list[Promoted] = []
        for name, entry in list(self.entries.items()):
            mine = [t for t, g in entry.holders.items() if g.who.session == session]
            for token in mine:
                released.append(entry.holders.pop(token))
            if any(w.who.session == session for w in entry.waiters):
                entry.waiters = deque(w for w in entry.waiters if w.who.session != session)
            granted.extend(self._promote(name, entry, now))
        return released, granted

    def thaw(self, now: float) -> list[Promoted]:
        """End the freeze: grant whatever waited."""
        self.frozen = False
        granted: list[Promoted] = []
        for name, entry in list(self.entries.items()):
            granted.extend(self._promote(name, entry, now))
        return granted

    def grants_of(self, session: str) -> Iterator[Grant]:
        for entry in self.entries.values():
            for g in entry.holders.values():
                if g.who.session == session:
                    yield g

    def holders(self, name: str) -> list[Grant]:
        entry = self.entries.get(name)
        return list(entry.holders.values()) if entry else []

    def _grant(self, name: str, entry: Entry, who: Who, now: float) -> Grant:
        g = Grant(name, self._next_token(), entry.limit, who, now)
        entry.holders[g.token] = g
        return g

    def _promote(self, name: str, entry: Entry, now: float) -> list[Promoted]:
        granted: list[Promoted] = []
        while not self.frozen and entry.waiters and len(entry.holders) < entry.limit:
            w = entry.waiters.popleft()
            granted.append((w, self._grant(name, entry, w.who, now)))
        self._forget_if_empty(name, entry)
        return granted

    def _forget_if_empty(self, name: str, entry: Entry) -> None:
        if entry.empty() and self.entries.get(name) is entry:
            del self.entries[name]
