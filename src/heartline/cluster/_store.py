"""The cluster's view of its backend: entries under one session, and the short placement lock.

One object per process and session (the daemon's reporter, one `heartline place`): the
report or hold it writes lives exactly as long as this session (``heartline.lock``'s
session-scoped entries); the placement lock is taken through the backend's lock client,
opened only when a decision needs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from heartline.lock import (
    ClientInfo,
    Entries,
    Entry,
    LockBackend,
    Mirror,
    open_backend,
    open_entries,
)

if TYPE_CHECKING:
    from heartline.config import ClusterSpec


class EntryStore:
    def __init__(self, spec: ClusterSpec, *, ttl: float, label: str) -> None:
        self.spec = spec
        self.ttl = ttl
        self.label = label
        self._entries: Entries | None = None
        self._locks: LockBackend | None = None

    @property
    def backend(self) -> Entries:
        if self._entries is None:
            self._entries = open_entries(
                self.spec.backend, ttl=self.ttl, client=ClientInfo.here(self.label),
                **self.spec.credentials,
            )  # fmt: skip
        return self._entries

    def put(self, key: str, value: str, *, keep: bool = False) -> None:
        self.backend.put(key, value, keep=keep)

    def delete(self, key: str) -> None:
        self.backend.delete(key)

    def entries(self, prefix: str) -> list[Entry]:
        return self.backend.entries(prefix)

    def watch(self, prefix: str) -> Mirror:
        return self.backend.watch(prefix)

    @contextlib.contextmanager
    def locked(self, name: str, *, wait: float) -> Iterator[None]:
        """Hold the lock ``name`` for a moment (decisions are serialised by it)."""
        if self._locks is None:
            self._locks = open_backend(self.spec.backend, **self.spec.credentials)
        lease = self._locks.acquire(
            name, limit=1, ttl=self.ttl, wait=wait, client=ClientInfo.here(self.label)
        )
        try:
            yield
        finally:
            self._locks.release(lease)

    def close(self) -> None:
        entries, self._entries = self._entries, None
        locks, self._locks = self._locks, None
        try:
            if locks is not None:
                locks.close()
        finally:
            if entries is not None:
                entries.close()


def open_store(spec: ClusterSpec, *, ttl: float, label: str) -> EntryStore:
    """A store for ``spec``'s backend; nothing is opened until first used."""
    return EntryStore(spec, ttl=ttl, label=label)
