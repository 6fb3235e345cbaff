"""The cluster's view of its backend: entries under one session, and the short placement lock.

One object per process and session (the daemon's reporter, one `heartline place`): the
report or hold it writes lives exactly as long as this session, and the placement lock is
taken on the same connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, cast

from heartline.lock import ClientInfo, LockBackend, open_backend

if TYPE_CHECKING:
    from heartline.config import ClusterSpec


class Entry(Protocol):
    """An entry as the backend returns it (``heartline.lock.Entry``)."""

    @property
    def key(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def age(self) -> float | None: ...


class Mirror(Protocol):
    """A live copy of a prefix's entries (``heartline.lock`` backends' ``watch``)."""

    def snapshot(self) -> dict[str, Entry]: ...
    def wait_changed(self, timeout: float | None) -> bool: ...
    def close(self) -> None: ...


class _Entries(Protocol):
    def put(self, key: str, value: str, *, ttl: float, client: ClientInfo) -> None: ...
    def delete(self, key: str) -> None: ...
    def entries(self, prefix: str) -> list[Entry]: ...
    def watch(self, prefix: str) -> Mirror: ...


class _Backend(LockBackend, _Entries, Protocol):
    pass


class EntryStore:
    def __init__(self, backend: _Backend) -> None:
        self.backend = backend

    def put(self, key: str, value: str, *, ttl: float, label: str) -> None:
        self.backend.put(key, value, ttl=ttl, client=ClientInfo.here(label))

    def delete(self, key: str) -> None:
        self.backend.delete(key)

    def entries(self, prefix: str) -> list[Entry]:
        return self.backend.entries(prefix)

    def watch(self, prefix: str) -> Mirror:
        return self.backend.watch(prefix)

    @contextlib.contextmanager
    def locked(self, name: str, *, ttl: float, wait: float, label: str) -> Iterator[None]:
        """Hold the lock ``name`` for a moment (decisions are serialised by it)."""
        lease = self.backend.acquire(
            name, limit=1, ttl=ttl, wait=wait, client=ClientInfo.here(label)
        )
        try:
            yield
        finally:
            self.backend.release(lease)

    def close(self) -> None:
        self.backend.close()


def open_store(spec: ClusterSpec) -> EntryStore:
    backend = open_backend(spec.backend, token_file=spec.token_file, ca_file=spec.ca_file)
    return EntryStore(cast("_Backend", backend))
