"""A small client for etcd v3's JSON gateway (``POST /v3/...``): keys, leases and watches.

Only the standard library: requests are JSON over HTTP/1.1 (HTTPS with ``tls``), keys and values
base64 in the body. This module owns the transport and nothing about locks: a connection pool
per member, failover to the next member when one does not answer, and the mapping of etcd's
gRPC status codes to heartline's errors (:class:`~heartline.errors.LockServerUnreachable`
when no member answers, :class:`~heartline.errors.LockAuthError` when etcd refuses the
credentials, :class:`EtcdError` with the code otherwise). The lock recipe (``_etcd.py``) talks
to etcd only through :class:`EtcdGateway`.
"""

# No `from __future__ import annotations`: see _backend (NamedTuple fields and cold starts).

import contextlib
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from base64 import b64decode, b64encode
from collections.abc import Iterator
from typing import Any, NamedTuple

from heartline.errors import LockAuthError, LockError, LockServerUnreachable, UsageError
from heartline.lock._tls import ClientCert, client_context

log = logging.getLogger(__name__)

#: How long one request to etcd may take before the member counts as unreachable.
REQUEST_TIMEOUT = 5.0
#: Idle connections kept per member.
_POOL_SIZE = 4
_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}

# gRPC status codes etcd's gateway reports in {"code": N}.
NOT_FOUND = 5
_PERMISSION_DENIED = 7
_UNAVAILABLE = 14
_UNAUTHENTICATED = 16


class EtcdError(LockError):
    """etcd answered with an error; ``code`` is its gRPC status code (e.g. :data:`NOT_FOUND`)."""

    def __init__(self, message: str, *, code: int, name: str = "") -> None:
        super().__init__(message, name=name)
        self.code = code


class KeyValue(NamedTuple):
    """One key as etcd returned it."""

    key: bytes
    value: bytes
    create_revision: int
    lease: int  # 0: attached to no lease


class Range(NamedTuple):
    """The answer to a range read: the keys in etcd's order (by key), how many match (also
    for a ``count_only`` read, which returns no keys), and the store's revision it saw."""

    kvs: list[KeyValue]
    total: int
    revision: int


class TxnResult(NamedTuple):
    succeeded: bool
    revision: int
    ranges: list[Range]  # the answers of the range operations the chosen branch ran


def prefix_end(key: bytes) -> bytes:
    """etcd's ``range_end`` covering every key that starts with ``key``."""
    end = bytearray(key)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


def _b64(data: bytes) -> str:
    return b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return b64decode(text) if text else b""


# --- transaction parts --------------------------------------------------------------------
def absent(key: bytes) -> dict[str, Any]:
    """A txn comparison that holds while ``key`` does not exist."""
    return {"target": "CREATE", "key": _b64(key), "create_revision": "0"}


def put_op(key: bytes, value: bytes, *, lease: int = 0) -> dict[str, Any]:
    """A txn operation that writes ``key`` (attached to ``lease`` unless 0)."""
    put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        put["lease"] = str(lease)
    return {"request_put": put}


def range_op(key: bytes, range_end: bytes | None = None) -> dict[str, Any]:
    """A txn operation that reads ``key`` (or the keys in [key, range_end))."""
    return {"request_range": _range_request(key, range_end)}


def _range_request(key: bytes, range_end: bytes | None, count_only: bool = False) -> dict[str, Any]:
    request: dict[str, Any] = {"key": _b64(key)}
    if range_end is not None:
        request["range_end"] = _b64(range_end)
    if count_only:
        request["count_only"] = True
    return request


def _revision(answer: dict[str, Any]) -> int:
    return int(answer.get("header", {}).get("revision", 0))


def _kv(doc: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=_unb64(doc.get("key", "")),
        value=_unb64(doc.get("value", "")),
        create_revision=int(doc.get("create_revision", 0)),
        lease=int(doc.get("lease", 0)),
    )


def _range(answer: dict[str, Any]) -> Range:
    kvs = [_kv(doc) for doc in answer.get("kvs", ())]
    return Range(kvs, int(answer.get("count", len(kvs))), _revision(answer))


def describe(e: BaseException) -> str:
    """A transport failure in a few words (for one-line messages)."""
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


#: TLS alerts a server sends when it turns the client's certificate away (none shown, not
#: signed by a CA it trusts, expired, ...). A certificate the *client* does not accept is an
#: SSLCertVerificationError raised here instead, never an alert.
_REFUSAL_ALERTS = ("ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_REQUIRED", "ALERT_UNKNOWN_CA",
                   "ALERT_CERTIFICATE_EXPIRED", "ALERT_CERTIFICATE_REVOKED",
                   "ALERT_CERTIFICATE_UNKNOWN", "ALERT_UNSUPPORTED_CERTIFICATE",
                   "ALERT_ACCESS_DENIED")  # fmt: skip


#: How a connection closed under the first request looks (see EtcdGateway._why_closed), and
#: how long the second try waits for an alert.
_CLOSED_EARLY = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError,
                 BrokenPipeError, http.client.RemoteDisconnected)  # fmt: skip
_ALERT_WAIT = 0.5


def _cert_refused(e: BaseException) -> bool:
    reason = getattr(e, "reason", None) if isinstance(e, ssl.SSLError) else None
    return isinstance(reason, str) and reason.endswith(_REFUSAL_ALERTS)


def _first_json(raw: bytes) -> Any:
    """The first JSON document of a body (streaming answers are one document per line)."""
    return json.JSONDecoder().raw_decode(raw.decode("utf-8", "replace").lstrip())[0]


class Watch:
    """One watch's stream, for :meth:`EtcdGateway.watch`; :meth:`cancel` (from any thread)
    ends it, and a watch not started yet never starts."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self.cancelled = False

    def _attach(self, conn: http.client.HTTPConnection | None) -> bool:
        with self._mutex:
            self._conn = conn
            return not self.cancelled

    def cancel(self) -> None:
        with self._mutex:
            self.cancelled = True
            conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class EtcdGateway:
    """The members of one etcd cluster (3.4 or later), reached through their JSON gateway.

    Requests go to the member that answered last and move on to the next when it does not
    answer (refused, timed out, or etcd says it is unavailable). ``tls`` talks HTTPS, checking
    the members' certificates against ``ca_file`` (or the system's CAs) and showing the client
    certificate ``cert_file`` with its key ``key_file`` (None: in ``cert_file``) to members
    that ask for one (etcd's ``--client-cert-auth``); or ``context``, a TLS context made
    already. Thread-safe. Every call takes ``name``: the lock (or other object) an error it
    raises concerns.
    """

    def __init__(
        self, endpoints: tuple[tuple[str, int], ...], *, tls: bool = False,
        ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None,
        context: ssl.SSLContext | None = None,
    ) -> None:  # fmt: skip
        if not endpoints:
            raise UsageError("etcd lock backend: give at least one HOST:PORT")
        self.endpoints = tuple(endpoints)
        self._ssl: ssl.SSLContext | None = None
        if tls:
            cert = ClientCert(cert_file, key_file) if cert_file else None
            if key_file and not cert_file:
                raise UsageError(f"client key {key_file}: no client certificate goes with it")
            self._ssl = context or client_context(ca_file, cert)
        elif cert_file or key_file or context is not None:
            raise UsageError("a client certificate needs TLS: write the etcd URL as etcds://")
        self._mutex = threading.Lock()
        self._pool: dict[int, list[http.client.HTTPConnection]] = {}
        self._preferred = 0
        self._closed = False

    @property
    def where(self) -> str:
        """The cluster as a lock URL, for messages."""
        scheme = "etcds" if self._ssl else "etcd"
        return f"{scheme}://" + ",".join(f"{h}:{p}" for h, p in self.endpoints)

    def __repr__(self) -> str:
        return f"<EtcdGateway {self.where}>"

    # --- keys -------------------------------------------------------------------------------
    def range(
        self, key: bytes, range_end: bytes | None = None, *, count_only: bool = False,
        name: str = "", timeout: float = REQUEST_TIMEOUT,
    ) -> Range:  # fmt: skip
        """The key ``key``, or the keys in [key, range_end) (:func:`prefix_end` for a prefix)."""
        request = _range_request(key, range_end, count_only)
        return _range(self._post("/v3/kv/range", request, name=name, timeout=timeout))

    def put(self, key: bytes, value: bytes, *, lease: int = 0, name: str = "") -> int:
        """Write ``key``; the revision it was written at."""
        answer = self._post("/v3/kv/put", put_op(key, value, lease=lease)["request_put"],
                            name=name)  # fmt: skip
        return _revision(answer)

    def delete_range(self, key: bytes, range_end: bytes | None = None, *, name: str = "") -> int:
        """Delete ``key`` (or the keys in [key, range_end)); how many were deleted."""
        answer = self._post("/v3/kv/deleterange", _range_request(key, range_end), name=name)
        return int(answer.get("deleted", 0))

    def txn(
        self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
        failure: list[dict[str, Any]], *, name: str = "",
    ) -> TxnResult:  # fmt: skip
        """If every comparison holds (see :func:`absent`), run ``success``, else ``failure``
        (operations from :func:`put_op` and :func:`range_op`), as one step."""
        answer = self._post(
            "/v3/kv/txn", {"compare": compare, "success": success, "failure": failure}, name=name
        )
        ranges = [_range(r["response_range"]) for r in answer.get("responses", ())
                  if "response_range" in r]  # fmt: skip
        return TxnResult(bool(answer.get("succeeded", False)), _revision(answer), ranges)

    # --- leases -----------------------------------------------------------------------------
    def lease_grant(self, ttl: int, *, name: str = "") -> int:
        """A new lease of ``ttl`` whole seconds; its id."""
        grant = self._post("/v3/lease/grant", {"TTL": ttl}, name=name)
        lease_id = int(grant.get("ID", 0))
        if not lease_id or int(grant.get("TTL", 0)) <= 0:
            raise LockError(f"etcd at {self.where} granted no lease ({grant})", name=name)
        return lease_id

    def lease_keepalive(
        self, lease_id: int, *, name: str = "", timeout: float = REQUEST_TIMEOUT
    ) -> int:
        """Renew the lease; the seconds it has left, 0 when etcd no longer has it."""
        answer = self._post("/v3/lease/keepalive", {"ID": str(lease_id)}, name=name,
                            timeout=timeout)  # fmt: skip
        return max(0, int(answer.get("TTL", 0)))

    def lease_revoke(self, lease_id: int, *, name: str = "") -> bool:
        """Revoke the lease (etcd deletes its keys in the same step); False when etcd did not
        have it."""
        try:
            self._post("/v3/lease/revoke", {"ID": str(lease_id)}, name=name)
        except EtcdError as e:
            if e.code == NOT_FOUND:
                return False
            raise
        return True

    # --- watches ----------------------------------------------------------------------------
    def watch(
        self, watch: Watch, key: bytes, range_end: bytes | None = None, *, start_revision: int,
        no_put: bool = False, until: float, name: str = "",
    ) -> Iterator[list[tuple[str, KeyValue]]]:  # fmt: skip
        """The events on ``key`` (or [key, range_end)) from ``start_revision`` on, a batch at a
        time: ``("PUT" | "DELETE", kv)``. ``no_put`` leaves out the writes.

        The stream ends (the iterator stops) when etcd ends it (a restart, a compacted start
        revision, an error inside the stream), at ``until`` (monotonic), or when ``watch`` is
        cancelled; a caller reads what it watches again then. Raises LockServerUnreachable
        when no member could start the watch.
        """
        request: dict[str, Any] = {"key": _b64(key), "start_revision": str(start_revision)}
        if range_end is not None:
            request["range_end"] = _b64(range_end)
        if no_put:
            request["filters"] = ["NOPUT"]
        data = json.dumps({"create_request": request}).encode()
        connect_timeout = min(REQUEST_TIMEOUT, max(until - time.monotonic(), 0.05))
        failures: list[str] = []
        errors: list[BaseException] = []
        for idx in self._order():
            conn = self._connect(idx, connect_timeout)
            streaming = False
            try:
                conn.connect()
                if not watch._attach(conn):
                    return
                conn.request("POST", "/v3/watch", body=data, headers=_HEADERS)
                resp = conn.getresponse()
                if resp.status != 200:
                    raw = resp.read()
                    answer = _first_json(raw) if raw.lstrip().startswith(b"{") else {}
                    raise self._error("/v3/watch", resp.status, answer, raw, name)
                self._preferred = idx
                streaming = True
                while True:
                    left = until - time.monotonic()
                    if left <= 0:
                        return
                    if conn.sock is not None:
                        conn.sock.settimeout(left)
                    line = resp.readline()
                    if not line:
                        return  # etcd ended the stream (shutting down, or cancelled)
                    if not line.strip():
                        continue
                    msg = json.loads(line)
                    result = msg.get("result") or {}
                    if "error" in msg or result.get("canceled"):
                        return  # e.g. start_revision compacted
                    events = [(str(ev.get("type", "PUT")), _kv(ev.get("kv", {})))
                              for ev in result.get("events", ())]  # fmt: skip
                    if events:
                        yield events
            except (OSError, http.client.HTTPException, ValueError) as e:
                if streaming and isinstance(e, TimeoutError):
                    return  # quiet until ``until``
                # Broken before or while streaming: the next member (a cancelled watch ends
                # there, as it does not start).
                why = e if streaming else self._why_closed(idx, e)
                host, port = self.endpoints[idx]
                log.debug("%r: watch on %s:%d failed: %s", name, host, port, describe(why))
                failures.append(f"{host}:{port}: {describe(why)}")
                errors.append(why)
                continue
            finally:
                watch._attach(None)
                conn.close()
        raise self._unreachable(failures, errors, name)

    # --- transport --------------------------------------------------------------------------
    def _connect(self, idx: int, timeout: float) -> http.client.HTTPConnection:
        host, port = self.endpoints[idx]
        if self._ssl is not None:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _why_closed(self, idx: int, e: BaseException) -> BaseException:
        """``e``, or the TLS alert behind it: a member that turns this client's certificate
        away says so after a TLS 1.3 handshake, and a request written meanwhile often meets a
        closed connection instead of the alert. So a fresh TLS connection closed under its
        first request is tried once more, writing nothing, to read what the member says."""
        if self._ssl is None or not isinstance(e, _CLOSED_EARLY):
            return e
        host, port = self.endpoints[idx]
        try:
            with (
                socket.create_connection((host, port), timeout=REQUEST_TIMEOUT) as raw,
                self._ssl.wrap_socket(raw, server_hostname=host) as tls,
            ):
                tls.settimeout(_ALERT_WAIT)
                tls.recv(1)  # a member content with us says nothing: this times out
        except ssl.SSLError as alert:
            if _cert_refused(alert):
                return alert
        except OSError:
            pass
        return e

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
        self, path: str, body: dict[str, Any], *, name: str = "", timeout: float = REQUEST_TIMEOUT
    ) -> dict[str, Any]:
        """POST ``body``; the answer (the first result, for streaming calls).

        Tries each member in turn; raises LockServerUnreachable when none answers, and
        LockError (LockAuthError) with etcd's message when etcd refuses the request.
        """
        data = json.dumps(body).encode()
        failures: list[str] = []
        errors: list[BaseException] = []
        for idx in self._order():
            host, port = self.endpoints[idx]
            end = time.monotonic() + timeout  # for this member, whatever it takes
            while True:
                conn, reused = self._checkout(idx, max(0.05, end - time.monotonic()))
                try:
                    conn.request("POST", path, body=data, headers=_HEADERS)
                    resp = conn.getresponse()
                    raw = resp.read()
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    self._drop_pool(idx)
                    if reused and not isinstance(e, TimeoutError):
                        # A kept-alive connection etcd had closed: try a fresh one. (A member
                        # that did not answer in time gets no second wait.)
                        continue
                    why = self._why_closed(idx, e)
                    failures.append(f"{host}:{port}: {describe(why)}")
                    errors.append(why)
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
        raise self._unreachable(failures, errors, name)

    def _unreachable(
        self, failures: list[str], errors: list[BaseException], name: str
    ) -> LockError:
        """No member answered: LockServerUnreachable, or LockAuthError when a member turned
        this client's certificate away (etcd's --client-cert-auth)."""
        refused = [e for e in errors if _cert_refused(e)]
        if refused:
            return LockAuthError(
                f"etcd at {self.where} refused this client's certificate "
                f"({describe(refused[0])}); give a client certificate and key signed by a CA "
                "the members trust (--cert-file and --key-file, or [cluster] cert_file and "
                "key_file)",
                name=name,
            )
        hint = (
            "check the CA file and the members' certificates"
            if any(isinstance(e, ssl.SSLError) for e in errors)
            else "is etcd running there, and is the lock URL right?"
        )
        return LockServerUnreachable(
            f"etcd at {self.where} is unreachable ({'; '.join(failures)}); {hint}", name=name
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
                f"etcd at {self.where} answered {path} with HTTP {status} ({text}); is this "
                "an etcd 3.4+ client URL?",
                name=name,
            )
        msg = f"etcd at {self.where}: {message}"
        if code in (_UNAUTHENTICATED, _PERMISSION_DENIED):
            return LockAuthError(msg, name=name)
        return EtcdError(msg, code=code if isinstance(code, int) else 0, name=name)

    def close(self) -> None:
        """Close the idle connections; a watch in progress ends with its own cancel."""
        with self._mutex:
            self._closed = True
            pools, self._pool = self._pool, {}
        for idle in pools.values():
            for conn in idle:
                conn.close()


__all__ = [
    "NOT_FOUND",
    "REQUEST_TIMEOUT",
    "EtcdError",
    "EtcdGateway",
    "KeyValue",
    "Range",
    "TxnResult",
    "Watch",
    "absent",
    "describe",
    "prefix_end",
    "put_op",
    "range_op",
]
