"""The etcd backend: heartline's locks as keys with leases in an etcd v3 cluster.

Everything goes through etcd's JSON gateway (``POST /v3/...``, keys and values base64), so the
backend needs nothing beyond the standard library.

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
import http.client
import json
import logging
import math
import socket
import ssl
import threading
import time
from base64 import b64decode, b64encode
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from heartline.errors import (
    LockAuthError,
    LockError,
    LockServerUnreachable,
    LockTimeout,
    UsageError,
)
from heartline.lock._backend import ClientInfo, Holder, LockInfo
from heartline.lock._lease import Lease, frozen_for
from heartline.lock._params import check_name, check_request

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/heartline/locks/"
#: How long one request to etcd may take before the endpoint counts as unreachable.
_REQUEST_TIMEOUT = 5.0
#: A waiter reads its queue again at least this often, even if its watch stays silent (a
#: connection that died without a FIN would otherwise keep it waiting).
_RECHECK = 30.0
#: How long a waiting acquire keeps trying to reach an etcd that went away before it gives up.
_UNREACHABLE_FOR = 30.0
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0
#: Idle connections kept per endpoint.
_POOL_SIZE = 4
_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}

# gRPC status codes etcd's gateway reports in {"code": N}.
_NOT_FOUND = 5
_PERMISSION_DENIED = 7
_UNAVAILABLE = 14
_UNAUTHENTICATED = 16


# --- keys ---------------------------------------------------------------------------------------
def lock_prefix(prefix: str, name: str) -> str:
    """The directory of lock ``name``'s queue: ``prefix + quote(name) + "/"``.

    Quoting turns ``/`` into ``%2F``, so no lock's directory contains another's.
    """
    return prefix + quote(name, safe="") + "/"


def lock_key(prefix: str, name: str, lease_id: int) -> str:
    """The key of one request for ``name``, named after the lease it is attached to."""
    return lock_prefix(prefix, name) + format(lease_id, "x")


def lock_name(prefix: str, key: str) -> str | None:
    """The lock a key under ``prefix`` belongs to, or None for a key heartline did not write."""
    if not key.startswith(prefix):
        return None
    quoted, sep, lease_hex = key[len(prefix) :].rpartition("/")
    if not sep or not quoted or "/" in quoted or not lease_hex:
        return None
    return unquote(quoted)


def prefix_end(key: bytes) -> bytes:
    """etcd's ``range_end`` covering every key that starts with ``key``."""
    end = bytearray(key)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


def etcd_ttl(ttl: float) -> int:
    """etcd leases count whole seconds: round up, so etcd never drops us before we think."""
    return max(1, math.ceil(ttl))


def _b64(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode()
    return b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return b64decode(text) if text else b""


@dataclass(frozen=True)
class _Kv:
    """One request in a lock's queue, as etcd returned it."""

    key: str
    create_revision: int
    lease: int
    value: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, kv: dict[str, Any]) -> _Kv:
        value: Any = {}
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            value = json.loads(_unb64(kv.get("value", "")))
        return cls(
            key=_unb64(kv.get("key", "")).decode("utf-8", "replace"),
            create_revision=int(kv.get("create_revision", 0)),
            lease=int(kv.get("lease", 0)),
            value=value if isinstance(value, dict) else {},
        )

    @property
    def limit(self) -> int | None:
        limit = self.value.get("limit")
        return limit if isinstance(limit, int) and not isinstance(limit, bool) else None

    def holder(self, token: int) -> Holder:
        v = self.value
        pid, since = v.get("pid"), v.get("since")
        return Holder(
            host=str(v.get("host", "?")),
            pid=pid if isinstance(pid, int) else 0,
            since=float(since) if isinstance(since, int | float) else 0.0,
            token=token,
            label=str(v.get("label", "")),
        )

    def who(self) -> str:
        h = self.holder(0)
        label = f" ({h.label})" if h.label else ""
        return f"{h.host} pid {h.pid}{label}"


def _sorted_kvs(answer: dict[str, Any]) -> list[_Kv]:
    return sorted((_Kv.parse(kv) for kv in answer.get("kvs", ())), key=lambda k: k.create_revision)


# --- errors -------------------------------------------------------------------------------------
class _EtcdError(LockError):
    """etcd answered with an error; ``code`` is its gRPC status code."""

    def __init__(self, message: str, *, code: int, name: str = "") -> None:
        super().__init__(message, name=name)
        self.code = code


class _Closed(LockError):
    pass


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {e.verify_message or e}"
    if isinstance(e, ssl.SSLError):
        return f"TLS failed: {e.reason or e}"
    if isinstance(e, http.client.RemoteDisconnected | http.client.IncompleteRead):
        return "closed the connection"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _first_json(raw: bytes) -> Any:
    """The first JSON document of a body (streaming answers are one document per line)."""
    return json.JSONDecoder().raw_decode(raw.decode("utf-8", "replace").lstrip())[0]


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
        self.failures = 0
        self.lease: Lease | None = None  # set when granted
        self.gone: str | None = None  # why etcd no longer has this lease or key
        self.watch: http.client.HTTPConnection | None = None  # the waiter's open watch


# --- the backend --------------------------------------------------------------------------------
class EtcdBackend:
    """A :class:`~heartline.lock._backend.LockBackend` on an etcd v3 cluster (3.4 or later).

    ``endpoints`` are the members' client addresses; requests go to the one that answered last
    and move on to the next when it does not answer. ``tls`` talks HTTPS, checking the members'
    certificates against ``ca_file`` (or the system's CAs). Every key lives under ``prefix``.
    """

    def __init__(
        self,
        endpoints: tuple[tuple[str, int], ...],
        *,
        tls: bool = False,
        ca_file: str | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if not endpoints:
            raise UsageError("etcd lock backend: give at least one HOST:PORT")
        if not prefix:
            raise UsageError("etcd lock backend: the key prefix must not be empty")
        self.endpoints = tuple(endpoints)
        self.prefix = prefix
        self._ssl: ssl.SSLContext | None = None
        if tls:
            try:
                self._ssl = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as e:
                raise UsageError(f"etcd CA file {ca_file!r}: {_describe(e)}") from None
        self._mutex = threading.Lock()
        self._wakeup = threading.Condition(self._mutex)
        self._stop = threading.Event()
        self._entries: dict[int, _Entry] = {}  # lease id -> entry, kept alive by the thread
        self._held: dict[Lease, _Entry] = {}
        self._pool: dict[int, list[http.client.HTTPConnection]] = {}
        self._preferred = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def _where(self) -> str:
        scheme = "etcds" if self._ssl else "etcd"
        return f"{scheme}://" + ",".join(f"{h}:{p}" for h, p in self.endpoints)

    def __repr__(self) -> str:
        return f"<EtcdBackend {self._where()} prefix={self.prefix!r}>"

    # --- HTTP -----------------------------------------------------------------------------------
    def _connect(self, idx: int, timeout: float) -> http.client.HTTPConnection:
        host, port = self.endpoints[idx]
        if self._ssl is not None:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _checkout(self, idx: int, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        with self._mutex:
            idle = self._pool.get(idx)
            conn = idle.pop() if idle else None
        if conn is None:
            return self._connect(idx, timeout), False
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, True

    def _checkin(self, idx: int, conn: http.client.HTTPConnection) -> None:
        with self._mutex:
            idle = self._pool.setdefault(idx, [])
            if not self._closed and len(idle) < _POOL_SIZE:
                idle.append(conn)
                return
        conn.close()

    def _drop_pool(self, idx: int) -> None:
        with self._mutex:
            idle = self._pool.pop(idx, [])
        for conn in idle:
            conn.close()

    def _order(self) -> list[int]:
        first, n = self._preferred, len(self.endpoints)
        return [(first + i) % n for i in range(n)]

    def _post(
        self, path: str, body: dict[str, Any], *, name: str = "", timeout: float = _REQUEST_TIMEOUT
    ) -> dict[str, Any]:
        """POST ``body`` to the gateway; the answer (the first result, for streaming calls).

        Tries each endpoint in turn; raises LockServerUnreachable when none answers, and
        LockError (LockAuthError) with etcd's message when etcd refuses the request.
        """
        data = json.dumps(body).encode()
        failures: list[str] = []
        tls_failed = False
        for idx in self._order():
            host, port = self.endpoints[idx]
            while True:
                conn, reused = self._checkout(idx, timeout)
                try:
                    conn.request("POST", path, body=data, headers=_HEADERS)
                    resp = conn.getresponse()
                    raw = resp.read()
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    self._drop_pool(idx)
                    if reused:
                        continue  # a kept-alive connection etcd had closed: try a fresh one
                    failures.append(f"{host}:{port}: {_describe(e)}")
                    tls_failed = tls_failed or isinstance(e, ssl.SSLError)
                    break
                if resp.will_close:
                    conn.close()
                else:
                    self._checkin(idx, conn)
                try:
                    answer = _first_json(raw)
                except ValueError:
                    answer = None
                if not isinstance(answer, dict):
                    answer = {}
                if "result" in answer and isinstance(answer["result"], dict):
                    answer = answer["result"]  # a streaming call's first message
                code = answer.get("code") if "error" in answer else None
                if resp.status == 503 or code == _UNAVAILABLE:
                    failures.append(f"{host}:{port}: {answer.get('message') or 'unavailable'}")
                    break
                self._preferred = idx
                if resp.status != 200 or "error" in answer:
                    raise self._error(path, resp.status, answer, raw, name)
                return answer
        hint = (
            "check the CA file and the members' certificates"
            if tls_failed
            else "is etcd running there, and is the lock URL right?"
        )
        raise LockServerUnreachable(
            f"etcd at {self._where()} is unreachable ({'; '.join(failures)}); {hint}", name=name
        )

    def _error(
        self, path: str, status: int, answer: dict[str, Any], raw: bytes, name: str
    ) -> LockError:
        if isinstance(answer.get("error"), dict):
            answer = answer["error"]  # an error inside a stream: {"error": {"code", "message"}}
        code = answer.get("code")
        message = answer.get("message") or answer.get("error")
        if not message:
            text = raw.decode("utf-8", "replace").strip()[:200]
            return LockError(
                f"etcd at {self._where()} answered {path} with HTTP {status} ({text}); is this "
                "an etcd 3.4+ client URL?",
                name=name,
            )
        msg = f"etcd at {self._where()}: {message}"
        if code in (_UNAUTHENTICATED, _PERMISSION_DENIED):
            return LockAuthError(msg, name=name)
        return _EtcdError(msg, code=code if isinstance(code, int) else 0, name=name)

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

    def _enqueue(self, name: str, ttl: float, value: bytes) -> tuple[_Entry, list[_Kv], int]:
        """Grant a lease and queue our key on it; the entry, the queue (create-revision order)
        and the revision it was read at."""
        self._ensure_thread()
        sent_at = time.monotonic()
        grant = self._post("/v3/lease/grant", {"TTL": etcd_ttl(ttl)}, name=name)
        lease_id = int(grant.get("ID", 0))
        if not lease_id or int(grant.get("TTL", 0)) <= 0:
            raise LockError(f"etcd at {self._where()} granted no lease ({grant})", name=name)
        entry = _Entry(name, lock_key(self.prefix, name, lease_id), lease_id, ttl, sent_at)
        with self._wakeup:
            self._entries[lease_id] = entry
            self._wakeup.notify_all()
        try:
            key = entry.key.encode()
            directory = lock_prefix(self.prefix, name).encode()
            queue = {"key": _b64(directory), "range_end": _b64(prefix_end(directory))}
            answer = self._post(
                "/v3/kv/txn",
                {
                    # Our key is named after our new lease, so it cannot exist yet, unless this
                    # is a retry of a put that reached etcd: then it is ours already.
                    "compare": [{"target": "CREATE", "key": _b64(key), "create_revision": "0"}],
                    "success": [
                        {
                            "request_put": {
                                "key": _b64(key),
                                "value": _b64(value),
                                "lease": str(lease_id),
                            }
                        },
                        {"request_range": queue},
                    ],
                    "failure": [{"request_range": queue}],
                },
                name=name,
            )
        except BaseException:
            self._abandon(entry)
            raise
        revision = int(answer.get("header", {}).get("revision", 0))
        ranges = [r["response_range"] for r in answer.get("responses", ()) if "response_range" in r]
        return entry, _sorted_kvs(ranges[0] if ranges else {}), revision

    def _keepalive_loop(self) -> None:
        while True:
            late = 0.0  # how much later than planned the last wait ended
            with self._wakeup:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    due = [e for e in self._entries.values() if e.next_due <= now]
                    changes = [(t, lease) for lease in self._held
                               if (t := lease.next_change()) is not None]  # fmt: skip
                    changed = [lease for t, lease in changes if t <= now]
                    if due or changed:
                        break
                    soonest = min([e.next_due for e in self._entries.values()]
                                  + [t for t, _lease in changes], default=now + 60)  # fmt: skip
                    self._wakeup.wait(soonest - now)
                    late = time.monotonic() - soonest
            for lease in changed:
                # SUSPECT, or lost at its proven end (frozen, if this thread overslept it).
                lease.poll(now, late=late)
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

    def _renew(self, entry: _Entry, *, late: float = 0.0) -> None:
        """Renew ``entry``'s lease (and check a holder's key); ``late`` is how much later than
        planned the keepalive thread woke for it."""
        sent_at = time.monotonic()
        timeout = min(max(entry.ttl / 2, 0.5), _REQUEST_TIMEOUT)
        try:
            answer = self._post(
                "/v3/lease/keepalive",
                {"ID": str(entry.lease_id)},
                name=entry.name,
                timeout=timeout,
            )
            alive = int(answer.get("TTL", 0)) > 0
            if alive and entry.lease is not None:
                # A holder also checks its key: an admin may have deleted it.
                found = self._post(
                    "/v3/kv/range",
                    {"key": _b64(entry.key), "count_only": True},
                    name=entry.name,
                    timeout=timeout,
                )
                if int(found.get("count", 0)) == 0:
                    self._gone(entry, "its key was deleted from etcd (the lock was broken)")
                    return
        except LockError as e:
            entry.failures += 1
            delay = min(entry.ttl / 3, _BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (entry.failures - 1))
            entry.next_due = time.monotonic() + delay
            if entry.failures == 1:
                log.warning(
                    "lock %r: renewing lease %x failed, retrying: %s", entry.name, entry.lease_id, e
                )
            else:
                log.debug("lock %r: renewal attempt %d failed: %s", entry.name, entry.failures, e)
            return
        if not alive:
            # Ran out on our clock too, while the thread overslept: we were frozen meanwhile.
            ran_out = entry.lease is not None and sent_at >= entry.lease.valid_until
            frozen = frozen_for(late) if ran_out else None
            self._gone(entry, frozen or "etcd no longer has its lease (it expired or was revoked)")
            return
        if entry.failures:
            log.info(
                "lock %r: lease %x renewed again after %d failed attempts",
                entry.name,
                entry.lease_id,
                entry.failures,
            )
        entry.failures = 0
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
            conn = entry.watch
        sock = conn.sock if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _revoke(self, entry: _Entry, why: str) -> bool:
        """Revoke the entry's lease: etcd deletes its key in the same step. False when etcd
        could not be told: the key then stays until the lease runs out on etcd's side."""
        try:
            self._post("/v3/lease/revoke", {"ID": str(entry.lease_id)}, name=entry.name)
        except LockError as e:
            if isinstance(e, _EtcdError) and e.code == _NOT_FOUND:
                return True  # gone already
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
    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

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
        request: dict[str, Any] = {
            "key": _b64(key),
            "start_revision": str(start_revision),
            "filters": ["NOPUT"],
        }
        if range_end is not None:
            request["range_end"] = _b64(range_end)
        data = json.dumps({"create_request": request}).encode()
        end = time.monotonic() + limit
        for idx in self._order():
            conn = self._connect(idx, min(_REQUEST_TIMEOUT, max(limit, 0.05)))
            streaming = False
            try:
                conn.connect()
                with self._mutex:
                    entry.watch = conn
                    if entry.gone is not None or self._closed:
                        return True
                conn.request("POST", "/v3/watch", body=data, headers=_HEADERS)
                resp = conn.getresponse()
                if resp.status != 200:
                    raw = resp.read()
                    answer = _first_json(raw) if raw.lstrip().startswith(b"{") else {}
                    raise self._error("/v3/watch", resp.status, answer, raw, entry.name)
                self._preferred = idx
                streaming = True
                while True:
                    left = end - time.monotonic()
                    if left <= 0:
                        return True
                    if conn.sock is not None:
                        conn.sock.settimeout(left)
                    line = resp.readline()
                    if not line:
                        return True  # etcd ended the stream (shutting down, or interrupted)
                    if not line.strip():
                        continue
                    msg = json.loads(line)
                    result = msg.get("result") or {}
                    if "error" in msg or result.get("canceled"):
                        return True  # e.g. start_revision compacted: read the queue again
                    if any(ev.get("type") == "DELETE" for ev in result.get("events", ())):
                        return True
            except (OSError, http.client.HTTPException, ValueError) as e:
                if streaming and isinstance(e, TimeoutError):
                    return True  # quiet until the limit: the caller reads the queue again
                log.debug(
                    "lock %r: watch on %s:%d failed: %s",
                    entry.name,
                    *self.endpoints[idx],
                    _describe(e),
                )
                continue
            finally:
                with self._mutex:
                    if entry.watch is conn:
                        entry.watch = None
                conn.close()
        return False

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
        directory = lock_prefix(self.prefix, name).encode()
        entry, kvs, revision = self._enqueue(name, ttl, value)
        unreachable_since: float | None = None
        backoff = _BACKOFF_FIRST
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
                    self._sleep(min(backoff, left))
                # Read the queue again (after a deletion, a broken watch or a quiet spell).
                try:
                    answer = self._post(
                        "/v3/kv/range",
                        {"key": _b64(directory), "range_end": _b64(prefix_end(directory))},
                        name=name,
                    )
                except LockServerUnreachable as e:
                    now = time.monotonic()
                    if unreachable_since is None:
                        unreachable_since = now
                        log.warning("lock %r: etcd went away while waiting; retrying: %s", name, e)
                    if now - unreachable_since > _UNREACHABLE_FOR:
                        raise LockServerUnreachable(
                            f"{e} (tried for {_UNREACHABLE_FOR:g}s while waiting for lock "
                            f"{name!r})",
                            name=name,
                        ) from None
                    if deadline is not None and now >= deadline:
                        raise LockTimeout(
                            f"lock {name!r} was not granted within {wait:g}s (etcd at "
                            f"{self._where()} stopped answering)",
                            name=name,
                        ) from None
                    self._sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                    continue
                if unreachable_since is not None:
                    log.info("lock %r: etcd answers again; still waiting", name)
                unreachable_since = None
                backoff = _BACKOFF_FIRST
                kvs = _sorted_kvs(answer)
                revision = int(answer.get("header", {}).get("revision", 0))
        except BaseException:
            self._abandon(entry)
            raise

    def _grant(self, entry: _Entry, kv: _Kv, limit: int, ttl: float) -> Lease | None:
        """We are among the holders: the lease to hand out, or None if etcd dropped ours."""
        if time.monotonic() - entry.confirmed > ttl / 3:
            # We waited: prove the lease is still there, and start its deadline afresh.
            sent_at = time.monotonic()
            with contextlib.suppress(LockServerUnreachable):
                answer = self._post(
                    "/v3/lease/keepalive", {"ID": str(entry.lease_id)}, name=entry.name
                )
                if int(answer.get("TTL", 0)) <= 0:
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
    def _queue(self, name: str) -> list[_Kv]:
        directory = lock_prefix(self.prefix, name).encode()
        answer = self._post(
            "/v3/kv/range",
            {"key": _b64(directory), "range_end": _b64(prefix_end(directory))},
            name=name,
        )
        return _sorted_kvs(answer)

    def locks(self) -> list[LockInfo]:
        root = self.prefix.encode()
        answer = self._post(
            "/v3/kv/range", {"key": _b64(root), "range_end": _b64(prefix_end(root))}
        )
        queues: dict[str, list[_Kv]] = {}
        for kv in _sorted_kvs(answer):
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
        kvs = self._queue(name)
        if not kvs:
            return 0
        limit = kvs[0].limit or 1
        dropped = 0
        for kv in kvs[:limit]:
            if kv.lease:
                try:
                    self._post("/v3/lease/revoke", {"ID": str(kv.lease)}, name=name)
                except _EtcdError as e:
                    if e.code != _NOT_FOUND:
                        raise
                else:
                    dropped += 1
                    continue
            answer = self._post("/v3/kv/deleterange", {"key": _b64(kv.key)}, name=name)
            dropped += int(answer.get("deleted", 0))
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
            thread.join(_REQUEST_TIMEOUT + 1)
        with self._mutex:
            pools, self._pool = self._pool, {}
        for idle in pools.values():
            for conn in idle:
                conn.close()


__all__ = ["DEFAULT_PREFIX", "EtcdBackend"]
