"""The etcd backend: heartline's locks as keys with leases in an etcd v3 cluster.

This is the lock recipe; it reaches etcd only through :class:`~._etcd_gateway.EtcdGateway`
(the JSON gateway's transport, failover and error mapping live there), so it needs nothing
beyond the standard library.

Layout. A request for lock ``name`` is one key, ``PREFIX + quote(name) + "/" + LEASE_ID_HEX``,
attached to a lease of its own and holding ``{host, pid, label, since, limit}`` as JSON. The
lock's queue is the set of keys under ``PREFIX + quote(name) + "/"``, in create-revision order:
the first ``limit`` are the holders, the rest wait. A newcomer always lands at the end (its
create revision is the cluster's newest), so nobody can overtake a waiter, and a holder's create
revision is its fencing token (strictly increasing per lock, as etcd revisions never go back).

Waiting. A waiter watches for DELETE events from the revision it last read, so no deletion can
slip between reading the queue and watching it, and reads the queue again after each one. With
``limit == 1`` it watches only the key just before its own (no herd: one release wakes one
waiter). The gateway's watch is a long HTTP response that breaks when etcd restarts; the waiter
then reconnects (bounded back-off, across the endpoints), reads the queue again and watches
again, so it never stops watching silently.

Keeping alive. One thread per backend renews every lease it owns (waiters' and holders') every
``ttl / 3``, retrying quickly while etcd is unreachable, and tells each held lease what time
does to it (SUSPECT, then LOST at its proven end). Each confirmed renewal moves the lease's
deadline to the moment the renewal was *sent* plus ``ttl``. etcd only counts whole seconds, so
the etcd lease is ``ceil(ttl)``: never shorter than what the holder believes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

from heartline._util import Retry
from heartline.errors import LockError, LockServerUnreachable, LockTimeout, UsageError
from heartline.lock._backend import ClientInfo, LockInfo
from heartline.lock._etcd_gateway import (
    REQUEST_TIMEOUT,
    EtcdGateway,
    Watch,
    absent,
    prefix_end,
    put_op,
    range_op,
)
from heartline.lock._etcd_keys import Kv, etcd_ttl, lock_key, lock_name, lock_prefix, sorted_kvs
from heartline.lock._lease import Lease, LeaseState, frozen_for
from heartline.lock._params import check_name, check_request

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/heartline/locks/"
#: A waiter reads its queue again at least this often, even if its watch stays silent (a
#: connection that died without a FIN would otherwise keep it waiting).
_RECHECK = 30.0
#: How long a waiting acquire keeps trying to reach an etcd that went away before it gives up.
_UNREACHABLE_FOR = 30.0
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0


class _Closed(LockError):
    """The backend was closed under a waiting acquire."""


class _Entry:
    """One etcd lease this backend keeps alive: a waiter's or, once granted, a holder's."""

    def __init__(self, name: str, key: str, lease_id: int, ttl: float, confirmed: float) -> None:
        self.name = name
        self.key = key
        self.lease_id = lease_id
        self.ttl = ttl
        #: Monotonic send time of the newest grant or renewal etcd confirmed.
        self.confirmed = confirmed
        self.next_due = confirmed + ttl / 3
        #: Quick retries while renewals fail, never further apart than a renewal's period.
        cap = min(ttl / 3, _BACKOFF_MAX)
        self.retry = Retry(first=min(_BACKOFF_FIRST, cap), cap=cap)
        self.lease: Lease | None = None  # set when granted
        self.gone: str | None = None  # why etcd no longer has this lease or key
        self.watch: Watch | None = None  # the waiter's open watch


# --- the backend --------------------------------------------------------------------------------
class EtcdBackend:
    """A :class:`~heartline.lock.LockBackend` on an etcd v3 cluster (3.4 or later).

    ``endpoints`` are the members' client addresses; requests go to the one that answered last
    and move on to the next when it does not answer. ``tls`` talks HTTPS, checking the members'
    certificates against ``ca_file`` (or the system's CAs) and showing them the client
    certificate ``cert_file`` (its key in ``key_file``) when they ask for one; ``context``: a
    TLS context made already, instead. Every key lives under ``prefix``.
    """

    def __init__(
        self,
        endpoints: tuple[tuple[str, int], ...],
        *,
        tls: bool = False,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        context: ssl.SSLContext | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.etcd = EtcdGateway(endpoints, tls=tls, ca_file=ca_file, cert_file=cert_file,
                                key_file=key_file, context=context)  # fmt: skip
        if not prefix:
            raise UsageError("etcd lock backend: the key prefix must not be empty")
        self.endpoints = self.etcd.endpoints
        self.prefix = prefix
        self._mutex = threading.Lock()
        self._wakeup = threading.Condition(self._mutex)
        self._stop = threading.Event()
        self._entries: dict[int, _Entry] = {}  # lease id -> entry, kept alive by the thread
        self._held: dict[Lease, _Entry] = {}
        self._thread: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<EtcdBackend {self.etcd.where} prefix={self.prefix!r}>"

    def _queue_of(self, name: str) -> bytes:
        return lock_prefix(self.prefix, name).encode()

    # --- leases ---------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._mutex:
            if self._closed:
                raise _Closed("this etcd lock backend was closed")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._keepalive_loop, name="heartline-etcd-keepalive", daemon=True
                )
                self._thread.start()

    def _enqueue(self, name: str, ttl: float, value: bytes) -> tuple[_Entry, list[Kv], int]:
        """Grant a lease and queue our key on it; the entry, the queue (create-revision order)
        and the revision it was read at."""
        self._ensure_thread()
        sent_at = time.monotonic()
        lease_id = self.etcd.lease_grant(etcd_ttl(ttl), name=name)
        entry = _Entry(name, lock_key(self.prefix, name, lease_id), lease_id, ttl, sent_at)
        with self._wakeup:
            self._entries[lease_id] = entry
            self._wakeup.notify_all()
        try:
            key = entry.key.encode()
            directory = self._queue_of(name)
            queue = range_op(directory, prefix_end(directory))
            answer = self.etcd.txn(
                # Our key is named after our new lease, so it cannot exist yet, unless this is
                # a retry of a put that reached etcd: then it is ours already.
                [absent(key)],
                [put_op(key, value, lease=lease_id), queue],
                [queue],
                name=name,
            )
        except BaseException:
            self._abandon(entry)
            raise
        ranges = answer.ranges
        return entry, sorted_kvs(ranges[0]) if ranges else [], answer.revision

    def _keepalive_loop(self) -> None:
        while True:
            late = 0.0  # how much later than planned the last wait ended
            with self._wakeup:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    due = [e for e in self._entries.values() if e.next_due <= now]
                    changes = self._lease_changes()
                    if due or (changes and min(changes) <= now):
                        break
                    soonest = min([e.next_due for e in self._entries.values()] + changes,
                                  default=now + 60)  # fmt: skip
                    self._wakeup.wait(soonest - now)
                    late = time.monotonic() - soonest
            # SUSPECT, or lost at its proven end (frozen, if this thread overslept it).
            self._poll_leases(late)
            for entry in sorted(due, key=lambda e: e.next_due):
                if self._stop.is_set():
                    return
                with self._mutex:
                    current = self._entries.get(entry.lease_id) is entry
                if not current:
                    continue
                try:
                    self._renew(entry, late=late)
                except Exception:  # never let one odd answer end every renewal
                    log.exception("lock %r: renewing lease %x failed", entry.name, entry.lease_id)
                    entry.next_due = time.monotonic() + entry.ttl / 3
                self._poll_leases(0.0)

    def _lease_changes(self) -> list[float]:
        """When each held lease next changes state by time alone (with the mutex held)."""
        return [t for lease in self._held if (t := lease.next_change()) is not None]

    def _poll_leases(self, late: float) -> None:
        """Tell each held lease whose next change has come what time did to it. One that ran
        out is renewed no more: etcd then lets it go within its TTL, as the holder already
        has (and a release still revokes it at once)."""
        now = time.monotonic()
        with self._mutex:
            leases = [le for le in self._held if (t := le.next_change()) is not None and t <= now]
        for lease in leases:
            if lease.poll(now, late=late) is LeaseState.LOST:
                with self._mutex:
                    entry = self._held.get(lease)
                    if entry is not None and self._entries.get(entry.lease_id) is entry:
                        del self._entries[entry.lease_id]

    def _renew(self, entry: _Entry, *, late: float = 0.0) -> None:
        """Renew ``entry``'s lease (and check a holder's key); ``late`` is how much later than
        planned the keepalive thread woke for it."""
        sent_at = time.monotonic()
        timeout = min(max(entry.ttl / 2, 0.5), REQUEST_TIMEOUT)
        with self._mutex:
            changes = self._lease_changes()
        if changes:
            # A request to an etcd that does not answer must not keep this thread from telling
            # a held lease that it turned SUSPECT or LOST: it gives up by then (and retries).
            timeout = max(0.05, min(timeout, min(changes) - sent_at))
        try:
            alive = self.etcd.lease_keepalive(entry.lease_id, name=entry.name, timeout=timeout) > 0
            if alive and entry.lease is not None:
                # A holder also checks its key: an admin may have deleted it.
                found = self.etcd.range(
                    entry.key.encode(), count_only=True, name=entry.name, timeout=timeout
                )
                if found.total == 0:
                    self._gone(entry, "its key was deleted from etcd (the lock was broken)")
                    return
        except LockError as e:
            entry.next_due = time.monotonic() + entry.retry.next_delay()
            if entry.retry.attempts == 1:
                log.warning(
                    "lock %r: renewing lease %x failed, retrying: %s", entry.name, entry.lease_id, e
                )
            else:
                log.debug(
                    "lock %r: renewal attempt %d failed: %s", entry.name, entry.retry.attempts, e
                )
            return
        if not alive:
            # Ran out on our clock too, while the thread overslept: we were frozen meanwhile.
            ran_out = entry.lease is not None and sent_at >= entry.lease.valid_until
            frozen = frozen_for(late) if ran_out else None
            self._gone(entry, frozen or "etcd no longer has its lease (it expired or was revoked)")
            return
        if entry.retry.attempts:
            log.info(
                "lock %r: lease %x renewed again after %d failed attempts",
                entry.name,
                entry.lease_id,
                entry.retry.attempts,
            )
        entry.retry.restart()
        with self._mutex:
            entry.confirmed = max(entry.confirmed, sent_at)
            lease = entry.lease
        if lease is not None:
            lease.renewed(sent_at)
        entry.next_due = sent_at + entry.ttl / 3

    def _gone(self, entry: _Entry, reason: str) -> None:
        """etcd no longer has this entry's lease or key: a holder has lost the lock, a waiter
        its place in the queue. Unless we let it go ourselves (a release or an abandoned wait
        while a renewal was under way): that is no loss."""
        with self._mutex:
            if self._entries.get(entry.lease_id) is not entry:
                return
            self._entries.pop(entry.lease_id, None)
            entry.gone = reason
            lease = entry.lease
            if lease is not None:
                self._held.pop(lease, None)
        if lease is not None:
            # Info, not a warning: the holder learns of it through the lease (LockLost,
            # on_lost) and reports it itself, as `heartline lock` does.
            log.info("lock %r lost (token %d): %s", entry.name, lease.token, reason)
            lease.mark_lost(reason)
        else:
            self._interrupt(entry)

    def _interrupt(self, entry: _Entry) -> None:
        """Wake the thread waiting on ``entry``'s watch."""
        with self._mutex:
            watch = entry.watch
        if watch is not None:
            watch.cancel()

    def _revoke(self, entry: _Entry, why: str) -> bool:
        """Revoke the entry's lease: etcd deletes its key in the same step. False when etcd
        could not be told: the key then stays until the lease runs out on etcd's side."""
        try:
            self.etcd.lease_revoke(entry.lease_id, name=entry.name)  # False: gone already
        except LockError as e:
            # No promise of "within the TTL": a member that becomes leader (after a restart,
            # or an election) gives every lease its full TTL again, counted from then.
            log.warning(
                "lock %r: %s: could not revoke lease %x: %s; etcd deletes the key once the "
                "lease's %ds TTL runs out unrenewed (the count starts again whenever etcd "
                "restarts or elects a leader)",
                entry.name,
                why,
                entry.lease_id,
                e,
                etcd_ttl(entry.ttl),
            )
            return False
        return True

    def _abandon(self, entry: _Entry) -> None:
        """Leave the queue: stop renewing, wake the watch, revoke (which deletes the key)."""
        with self._mutex:
            self._entries.pop(entry.lease_id, None)
            if entry.gone is None:
                entry.gone = "abandoned"
        self._interrupt(entry)
        self._revoke(entry, "leaving the queue")

    # --- waiting --------------------------------------------------------------------------------
    def _watch_deletes(
        self,
        entry: _Entry,
        key: bytes,
        range_end: bytes | None,
        start_revision: int,
        limit: float,
    ) -> bool:
        """Block until a DELETE of ``key`` (or of a key in [key, range_end)) at or after
        ``start_revision``, the watch ends (etcd restarting, compaction), ``limit`` seconds
        pass, or the entry is interrupted. False when no endpoint could be reached."""
        watch = Watch()
        with self._mutex:
            entry.watch = watch
            if entry.gone is not None or self._closed:
                return True
        try:
            for events in self.etcd.watch(
                watch, key, range_end, start_revision=start_revision, no_put=True,
                until=time.monotonic() + limit, name=entry.name,
            ):  # fmt: skip
                if any(kind == "DELETE" for kind, _kv in events):
                    return True
        except LockServerUnreachable:
            return False
        finally:
            with self._mutex:
                if entry.watch is watch:
                    entry.watch = None
        return True

    def acquire(
        self, name: str, *, limit: int, ttl: float, wait: float | None, client: ClientInfo
    ) -> Lease:
        check_request(name, limit=limit, ttl=ttl, wait=wait)
        deadline = None if wait is None else time.monotonic() + max(0.0, wait)
        value = json.dumps(
            {
                "host": client.host,
                "pid": client.pid,
                "label": client.label[:200],
                "since": time.time(),
                "limit": limit,
            }
        ).encode()
        directory = self._queue_of(name)
        entry, kvs, revision = self._enqueue(name, ttl, value)
        # While etcd does not answer; close() cuts its pauses short.
        retry = Retry(first=_BACKOFF_FIRST, cap=_BACKOFF_MAX, sleep=self._stop.wait)
        try:
            while True:
                if self._closed:
                    raise _Closed(f"lock {name!r}: the etcd lock backend was closed while waiting")
                if entry.gone is not None:
                    # Our lease ran out while we could not renew it (etcd was out of reach for
                    # longer than the TTL): the place in the queue is gone, take a new one.
                    log.warning(
                        "lock %r: the waiting request lost its place (%s); queuing again",
                        name,
                        entry.gone,
                    )
                    self._abandon(entry)
                    entry, kvs, revision = self._enqueue(name, ttl, value)
                    continue
                pos = next((i for i, kv in enumerate(kvs) if kv.key == entry.key), None)
                if pos is None:
                    with self._mutex:
                        if entry.gone is None:
                            entry.gone = "its key is no longer in etcd"
                    continue
                others = [kv for kv in kvs if kv.key != entry.key]
                have = others[0].limit if others else None
                if have is not None and have != limit and pos > 0:
                    raise UsageError(
                        f"lock {name!r} is in use with limit {have}; this request asked for "
                        f"limit {limit}"
                    )
                if pos < limit:
                    lease = self._grant(entry, kvs[pos], limit, ttl)
                    if lease is not None:
                        return lease
                    continue  # the lease went away meanwhile
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    holders = ", ".join(kv.who() for kv in kvs[: min(pos, limit)])
                    if wait == 0:
                        raise LockTimeout(f"lock {name!r} is busy (held by {holders})", name=name)
                    raise LockTimeout(
                        f"lock {name!r} was not granted within {wait:g}s (held by {holders}; "
                        f"{pos - limit} waiting before this request)",
                        name=name,
                    )
                left = _RECHECK if deadline is None else min(_RECHECK, deadline - now)
                if limit == 1:
                    # Only the key just before ours can make us the holder when it goes: one
                    # release wakes one waiter.
                    watched = self._watch_deletes(
                        entry, kvs[pos - 1].key.encode(), None, revision + 1, left
                    )
                else:
                    # A semaphore's place opens when *any* key before ours goes (any of the
                    # holders, or a waiter ahead of us), and those are not one key range. So
                    # watch the whole lock's directory; the extra wakeups (a key after ours
                    # going) only cost one read of the queue.
                    watched = self._watch_deletes(
                        entry, directory, prefix_end(directory), revision + 1, left
                    )
                if not watched:
                    retry.pause(most=left, grow=False)
                # Read the queue again (after a deletion, a broken watch or a quiet spell).
                try:
                    answer = self.etcd.range(directory, prefix_end(directory), name=name)
                except LockServerUnreachable as e:
                    if retry.deadline is None:
                        retry.restart(deadline=time.monotonic() + _UNREACHABLE_FOR)
                        log.warning("lock %r: etcd went away while waiting; retrying: %s", name, e)
                    if retry.expired():
                        raise LockServerUnreachable(
                            f"{e} (tried for {_UNREACHABLE_FOR:g}s while waiting for lock "
                            f"{name!r})",
                            name=name,
                        ) from None
                    if deadline is not None and time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"lock {name!r} was not granted within {wait:g}s (etcd at "
                            f"{self.etcd.where} stopped answering)",
                            name=name,
                        ) from None
                    retry.pause()
                    continue
                if retry.deadline is not None:
                    log.info("lock %r: etcd answers again; still waiting", name)
                retry.restart()
                kvs = sorted_kvs(answer)
                revision = answer.revision
        except BaseException:
            self._abandon(entry)
            raise

    def _grant(self, entry: _Entry, kv: Kv, limit: int, ttl: float) -> Lease | None:
        """We are among the holders: the lease to hand out, or None if etcd dropped ours."""
        if time.monotonic() - entry.confirmed > ttl / 3:
            # We waited: prove the lease is still there, and start its deadline afresh.
            sent_at = time.monotonic()
            with contextlib.suppress(LockServerUnreachable):
                if self.etcd.lease_keepalive(entry.lease_id, name=entry.name) <= 0:
                    with self._mutex:
                        entry.gone = "etcd no longer has its lease"
                    return None
                with self._mutex:
                    entry.confirmed = max(entry.confirmed, sent_at)
        with self._wakeup:
            if entry.gone is not None:
                return None
            lease = Lease(
                entry.name,
                kv.create_revision,
                limit=limit,
                ttl=ttl,
                valid_until=entry.confirmed + ttl,
            )
            entry.lease = lease
            self._held[lease] = entry
            self._wakeup.notify_all()  # the keepalive thread now watches this lease's deadline
        log.debug("lock %r granted (token %d)", entry.name, lease.token)
        return lease

    def release(self, lease: Lease) -> None:
        lease.mark_released()
        with self._mutex:
            entry = self._held.pop(lease, None)
            if entry is not None:
                self._entries.pop(entry.lease_id, None)
        if entry is None:
            return
        # Revoking the lease deletes the key in the same raft entry, which wakes the next waiter.
        self._revoke(entry, "releasing")
        log.debug("lock %r released (token %d)", lease.name, lease.token)

    def session_connection(self) -> socket.socket | None:
        """None: an etcd lease runs out on its own, whatever connections close."""
        return None

    # --- admin ----------------------------------------------------------------------------------
    def locks(self) -> list[LockInfo]:
        root = self.prefix.encode()
        queues: dict[str, list[Kv]] = {}
        for kv in sorted_kvs(self.etcd.range(root, prefix_end(root))):
            name = lock_name(self.prefix, kv.key)
            if name is not None:
                queues.setdefault(name, []).append(kv)
        infos = []
        for name in sorted(queues):
            kvs = queues[name]
            limit = kvs[0].limit or 1
            infos.append(
                LockInfo(
                    name=name,
                    limit=limit,
                    holders=tuple(kv.holder(kv.create_revision) for kv in kvs[:limit]),
                    waiters=tuple(kv.holder(0) for kv in kvs[limit:]),
                )
            )
        return infos

    def break_lock(self, name: str) -> int:
        check_name(name)
        directory = self._queue_of(name)
        kvs = sorted_kvs(self.etcd.range(directory, prefix_end(directory), name=name))
        if not kvs:
            return 0
        limit = kvs[0].limit or 1
        dropped = 0
        for kv in kvs[:limit]:
            if kv.lease and self.etcd.lease_revoke(kv.lease, name=name):
                dropped += 1
                continue
            dropped += self.etcd.delete_range(kv.key.encode(), name=name)
        log.info("lock %r broken: %d holder(s) dropped", name, dropped)
        return dropped

    def close(self) -> None:
        with self._wakeup:
            if self._closed:
                return
            self._closed = True
            held = list(self._held)
            waiting = [e for e in self._entries.values() if e.lease is None]
            thread = self._thread
            self._wakeup.notify_all()
        self._stop.set()
        for entry in waiting:
            self._interrupt(entry)
        for lease in held:
            self.release(lease)
        if thread is not None and thread is not threading.current_thread():
            thread.join(REQUEST_TIMEOUT + 1)
        self.etcd.close()


__all__ = ["DEFAULT_PREFIX", "EtcdBackend"]
