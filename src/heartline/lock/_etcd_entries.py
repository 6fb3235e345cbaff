"""Session-scoped entries on etcd: keys attached to one lease of this process's.

The lease is granted on the first write and kept alive by one thread (every TTL/3; etcd
counts whole seconds, so the lease is ``ceil(ttl)``). If etcd forgot the lease (it ran out
while etcd was unreachable), the thread takes a new one and writes this session's entries
again. :meth:`EtcdEntries.close` revokes the lease, and etcd deletes its keys in the same
step. A watch is a thread of its own: it reads the prefix, then follows etcd's events from
the revision after that read, and reads again whenever the stream ends (so no event is lost
between the two).

etcd keeps no write time per key, so the entries' ``age`` is None here: readers use the
writer's own timestamp (so the hosts' clocks must agree, as NTP keeps them).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time

from heartline._util import Retry
from heartline.errors import LockError, LockServerUnreachable
from heartline.lock._entries import Entry, Mirror
from heartline.lock._etcd_gateway import EtcdError, EtcdGateway, Watch, prefix_end

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/heartline/entries/"
#: A watch stream is started again at least this often (a dead connection without a FIN).
_REWATCH = 30.0


class EtcdEntries:
    """:class:`~heartline.lock._entries.Entries` in etcd, under a lease of this process's."""

    def __init__(self, etcd: EtcdGateway, *, ttl: float, prefix: str = DEFAULT_PREFIX) -> None:
        self.etcd = etcd
        self.ttl = ttl
        self.prefix = prefix
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._lease = 0
        self._owned: dict[str, str] = {}
        self._thread: threading.Thread | None = None
        self._watches: list[tuple[Watch, Mirror]] = []

    def _key(self, key: str) -> bytes:
        return (self.prefix + key).encode()

    def _lease_id(self) -> int:
        with self._mutex:
            if self._stop.is_set():
                raise LockError("these entries' backend was closed")
            if self._lease:
                return self._lease
        lease = self.etcd.lease_grant(math.ceil(self.ttl), name="entries")
        with self._mutex:
            self._lease = lease
            if self._thread is None:
                self._thread = threading.Thread(target=self._keepalive, name="heartline-entries",
                                                daemon=True)  # fmt: skip
                self._thread.start()
        return lease

    def _keepalive(self) -> None:
        retry = Retry(first=0.05, cap=min(1.0, self.ttl / 3))
        wait = self.ttl / 3
        while not self._stop.wait(wait):
            with self._mutex:
                lease = self._lease
            try:
                if lease and self.etcd.lease_keepalive(lease, name="entries") > 0:
                    retry.restart()
                    wait = self.ttl / 3
                    continue
                # etcd forgot the lease (it ran out while we could not reach it): a new one,
                # and every entry written again under it.
                log.warning("entries: etcd at %s forgot our lease; writing %d entries again",
                            self.etcd.where, len(self._owned))  # fmt: skip
                lease = self.etcd.lease_grant(math.ceil(self.ttl), name="entries")
                with self._mutex:
                    self._lease = lease
                    owned = list(self._owned.items())
                for key, value in owned:
                    self.etcd.put(self._key(key), value.encode(), lease=lease, name=key)
                wait = self.ttl / 3
            except LockError as e:
                log.debug("entries: keeping the lease alive: %s", e)
                wait = retry.next_delay()

    # --- the Entries protocol ---------------------------------------------------------------
    def put(self, key: str, value: str, *, keep: bool = False) -> None:
        if keep:
            self.etcd.put(self._key(key), value.encode(), name=key)
            return
        lease = self._lease_id()
        with self._mutex:
            self._owned[key] = value
        self.etcd.put(self._key(key), value.encode(), lease=lease, name=key)

    def delete(self, key: str) -> None:
        with self._mutex:
            mine = self._owned.pop(key, None) is not None
        if not mine:
            # Another session's entry stays; a kept one (on no lease) anyone may delete.
            got = self.etcd.range(self._key(key), name=key)
            if not got.kvs or got.kvs[0].lease != 0:
                return
        self.etcd.delete_range(self._key(key), name=key)

    def entries(self, prefix: str) -> list[Entry]:
        start = self._key(prefix)
        got = self.etcd.range(start, prefix_end(start), name=prefix or "entries")
        return [self._entry(kv.key, kv.value, kv.create_revision) for kv in got.kvs]

    def _entry(self, key: bytes, value: bytes, revision: int) -> Entry:
        text = key.decode("utf-8", "replace")[len(self.prefix) :]
        return Entry(text, value.decode("utf-8", "replace"), revision, None)

    def watch(self, prefix: str) -> Mirror:
        mirror = Mirror(prefix)
        start = self._key(prefix)
        first = self.etcd.range(start, prefix_end(start), name=prefix or "entries")
        mirror.reset([self._entry(kv.key, kv.value, kv.create_revision) for kv in first.kvs])
        w = Watch()
        with self._mutex:
            self._watches.append((w, mirror))
        done = threading.Event()

        def stop() -> None:
            done.set()
            w.cancel()

        mirror.on_close.append(stop)
        threading.Thread(target=self._follow, args=(mirror, w, done, first.revision),
                         name="heartline-entries-watch", daemon=True).start()  # fmt: skip
        return mirror

    def _follow(self, mirror: Mirror, w: Watch, done: threading.Event, revision: int) -> None:
        start = self._key(mirror.prefix)
        end = prefix_end(start)
        retry = Retry(first=0.05, cap=1.0)
        while not done.is_set() and not self._stop.is_set():
            try:
                for batch in self.etcd.watch(w, start, end, start_revision=revision + 1,
                                             until=time.monotonic() + _REWATCH,
                                             name=mirror.prefix or "entries"):  # fmt: skip
                    for kind, kv in batch:
                        key = kv.key.decode("utf-8", "replace")[len(self.prefix) :]
                        if kind == "DELETE":
                            mirror.changed(key, None)
                        else:
                            mirror.changed(key, self._entry(kv.key, kv.value, kv.create_revision))
                if done.is_set():
                    return
                # The stream ended: read again (catching what happened meanwhile) and follow
                # from there.
                again = self.etcd.range(start, end, name=mirror.prefix or "entries")
                mirror.reset([self._entry(kv.key, kv.value, kv.create_revision)
                              for kv in again.kvs])  # fmt: skip
                revision = again.revision
                retry.restart()
            except LockError as e:
                log.debug("entries: watching %r: %s", mirror.prefix, e)
                if done.wait(retry.next_delay()):
                    return

    def close(self) -> None:
        """Revoke the lease: etcd deletes this session's keys at once."""
        with self._mutex:
            if self._stop.is_set():
                return
            self._stop.set()
            lease, self._lease = self._lease, 0
            watches, self._watches = self._watches, []
        for _w, mirror in watches:
            mirror.close()
        if lease:
            with contextlib.suppress(LockServerUnreachable, EtcdError):
                self.etcd.lease_revoke(lease, name="entries")
        self.etcd.close()


__all__ = ["DEFAULT_PREFIX", "EtcdEntries"]
