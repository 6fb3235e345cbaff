"""lockd's session-scoped entries: small key/value records that live as long as the session
that wrote them, and watches on key prefixes. No I/O; the server feeds it the clock.

What the cluster keeps here: each daemon's load report and each placement's hold. An entry
belongs to the session that wrote it last and vanishes when that session ends (its
connection closed, or its lease ran out), so a crashed writer's entries go with it, with no
timer of their own. Entries are not journalled: after a lockd restart every writer reconnects
and writes its entries again (a report is rewritten every interval anyway).

Each change gets a revision from one counter, so a watcher can tell the order of events.
"""

from __future__ import annotations

from dataclasses import dataclass

from heartline.errors import LockError

#: Entries one session may own (a daemon owns one report; a placement one hold).
MAX_PER_SESSION = 4096
#: Entries the whole server keeps.
MAX_TOTAL = 200_000
#: The owner of a kept entry (one that outlives the session that wrote it, such as a rolling
#: operation's progress): no session; any session may rewrite or delete it.
KEPT = ""
#: Kept entries the server holds at most.
MAX_KEPT = 10_000


class EntryLimit(LockError):
    """A put that would pass one of the limits above."""


@dataclass
class Item:
    value: str
    owner: str  # session id
    revision: int
    written: float  # the server's monotonic clock


class EntryTable:
    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self.owned: dict[str, set[str]] = {}  # session id -> keys
        self.revision = 0

    def put(self, key: str, value: str, owner: str, now: float, *, keep: bool = False) -> int:
        """Write ``key`` as ``owner``'s (the last writer owns it), or with ``keep`` as nobody's
        (it outlives the session); its revision."""
        if keep:
            owner = KEPT
        old = self.items.get(key)
        mine = self.owned.get(owner, set())
        if old is None or old.owner != owner:
            limit = MAX_KEPT if keep else MAX_PER_SESSION
            if len(mine) >= limit:
                raise EntryLimit(f"at most {limit} entries " + ("kept" if keep else
                                 "owned by one session"))  # fmt: skip
            if old is None and len(self.items) >= MAX_TOTAL:
                raise EntryLimit(f"lockd keeps at most {MAX_TOTAL} entries")
        if old is not None and old.owner != owner:
            self._disown(old.owner, key)
        self.revision += 1
        self.items[key] = Item(value, owner, self.revision, now)
        self.owned.setdefault(owner, set()).add(key)
        return self.revision

    def delete(self, key: str, owner: str) -> int | None:
        """Remove ``key`` if ``owner`` owns it or it is kept; the revision of the removal, or
        None."""
        item = self.items.get(key)
        if item is None or item.owner not in (owner, KEPT):
            return None
        del self.items[key]
        self._disown(item.owner, key)
        self.revision += 1
        return self.revision

    def drop_session(self, owner: str) -> list[tuple[str, int]]:
        """Remove every entry ``owner`` owns: (key, revision) of each removal, by key."""
        gone = []
        for key in sorted(self.owned.pop(owner, ())):
            del self.items[key]
            self.revision += 1
            gone.append((key, self.revision))
        return gone

    def read(self, prefix: str, now: float) -> list[list[object]]:
        """``[key, value, revision, age]`` of every entry under ``prefix``, by key."""
        return [
            [key, item.value, item.revision, round(max(now - item.written, 0.0), 6)]
            for key, item in sorted(self.items.items())
            if key.startswith(prefix)
        ]

    def _disown(self, owner: str, key: str) -> None:
        keys = self.owned.get(owner)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.owned[owner]
