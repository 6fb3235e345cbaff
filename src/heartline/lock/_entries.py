"""Session-scoped entries: small records that live as long as the process that wrote them.

Both backends keep them: lockd (entries owned by the client's session, gone when its
connection closes or its lease runs out) and etcd (keys attached to the client's lease). A
client writes its entries with :meth:`Entries.put`; if its connection drops and comes back (a
lock server restart), it writes them again. Anyone may read a prefix (:meth:`Entries.entries`)
or keep a live copy of it (:meth:`Entries.watch`, a :class:`Mirror` the backend's pushes keep
current, with nobody polling).

The cluster keeps its load reports and placement holds this way (``heartline.cluster``).
"""

# No `from __future__ import annotations`: see _backend (NamedTuple fields).

import threading
import time
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable


class Entry(NamedTuple):
    key: str
    value: str
    #: The backend's revision of the write (orders the changes of one backend).
    revision: int
    #: Seconds since it was written, by the backend's own clock (lockd); None when the
    #: backend keeps no such clock (etcd: readers use the writer's own timestamp).
    age: "float | None"


class Entries(Protocol):
    """A backend's entries, under one session of this process."""

    def put(self, key: str, value: str, *, keep: bool = False) -> None:
        """Write ``key`` under this session (replacing any writer's); written again after a
        reconnect, until :meth:`delete` or :meth:`close`. With ``keep``, the entry belongs to
        no session and stays until deleted (lockd: until it restarts; etcd: for good)."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` if this session wrote it, or it is kept."""
        ...

    def entries(self, prefix: str) -> list[Entry]:
        """Every entry whose key starts with ``prefix``, by key."""
        ...

    def watch(self, prefix: str) -> "Mirror":
        """A live copy of the entries under ``prefix``."""
        ...

    def close(self) -> None:
        """End the session: this session's entries vanish."""
        ...


class Mirror:
    """A live copy of the entries under one prefix, kept current by the backend's thread."""

    #: Set by the backend: what ends the watch on its side.
    on_close: "list[Callable[[], None]]"

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._cond = threading.Condition()
        # key -> (value, revision, age when received, monotonic time received)
        self._items: dict[str, tuple[str, int, float | None, float]] = {}
        self._version = 0
        self._seen = 0
        self.closed = False
        #: Set by the backend: what ends the watch on its side.
        self.on_close: list[object] = []

    def snapshot(self) -> dict[str, Entry]:
        """The entries now, with their ages as of now."""
        now = time.monotonic()
        with self._cond:
            self._seen = self._version
            return {
                k: Entry(k, v, rev, None if age is None else age + (now - at))
                for k, (v, rev, age, at) in sorted(self._items.items())
            }

    def wait_changed(self, timeout: float | None) -> bool:
        """Wait until something changed since the last :meth:`snapshot` (or this call's
        last True); False on timeout or once closed."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._version != self._seen or self.closed, timeout)
            if not ok or self.closed:
                return False
            self._seen = self._version
            return True

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        for fn in self.on_close:
            fn()

    # --- fed by the backend ------------------------------------------------------------------
    def reset(self, entries: "list[Entry]") -> None:
        now = time.monotonic()
        with self._cond:
            self._items = {e.key: (e.value, e.revision, e.age, now) for e in entries}
            self._version += 1
            self._cond.notify_all()

    def changed(self, key: str, entry: "Entry | None") -> None:
        with self._cond:
            if entry is None:
                if self._items.pop(key, None) is None:
                    return
            else:
                self._items[key] = (entry.value, entry.revision, entry.age, time.monotonic())
            self._version += 1
            self._cond.notify_all()
