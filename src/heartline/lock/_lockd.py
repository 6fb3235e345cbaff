"""The client side of lockd: one TCP (or TLS) connection, one session, one lease thread.

Threads, not asyncio (DESIGN.md asks for one asyncio loop per process): this client serves
plain synchronous callers and `heartline lock`, which must start in a few milliseconds and
cannot make its users run an event loop; ``async with Lock`` reaches it through a thread.

The caller's thread writes each request and reads the answer itself (so a pushed grant wakes
the waiting thread directly). The lease thread sends the pings that renew the session's lease
(every TTL/3) and notices when the lease can no longer be proven. If the connection drops while
grants are held, it reconnects and resumes the session (a restarted lockd restores it from its
journal); grants the server does not hand back, or that are not back before their lease ends,
are lost.

(Longer than the house's ~600 lines on purpose: one connection's state, its socket, the
requests in flight and the leases, is read and written by the callers' threads and the lease
thread under one locking discipline (``_io``, ``_mutex``, ``_send_lock``). Split across
modules, that discipline would be harder to check.)
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging
    import ssl
    from collections.abc import Callable

from heartline.errors import (
    LockAuthError,
    LockError,
    LockServerUnreachable,
    LockTimeout,
    UsageError,
)
from heartline.lock import _protocol as proto
from heartline.lock._backend import ClientInfo, Holder, LockInfo
from heartline.lock._lease import HELD, Lease
from heartline.lock._params import check_request

_log_hooks: list[Callable[[], None]] = []
_log_hooks_lock = threading.Lock()


def before_first_log(hook: Callable[[], None]) -> None:
    """Call ``hook`` once, just before this module first logs (`heartline lock` sets up its
    stderr this way without importing logging at start-up)."""
    with _log_hooks_lock:
        _log_hooks.append(hook)


def _log() -> logging.Logger:
    # Imported on first use: logging costs a cold `heartline lock` about 5 ms.
    import logging

    if _log_hooks:
        with _log_hooks_lock:
            while _log_hooks:
                _log_hooks.pop(0)()
    return logging.getLogger(__name__)


_CONNECT_TIMEOUT = 3.0
#: How long a waiting acquire keeps trying to reach a lockd that went away.
_RECONNECT_FOR = 10.0
#: Why a lease whose proven end passed is lost, when no freeze explains it.
_EXPIRED = "no answer from lockd for a whole TTL; the server has let it go"
_UNREACHED = "could not reach lockd again before the lease ran out"


def _is_ssl_error(e: BaseException, *, want_read: bool = False) -> bool:
    """``e`` is one of ssl's errors (its SSLWantReadError with ``want_read``); without
    importing ssl, which a connection without TLS never needs."""
    import sys

    mod = sys.modules.get("ssl")
    if mod is None:
        return False
    return isinstance(e, mod.SSLWantReadError if want_read else mod.SSLError)


class _Slot:
    # A plain flag, not a threading.Event: whoever waits for an answer reads the socket
    # itself (see _wait), so nobody blocks on it, and an Event costs a Condition per request.
    __slots__ = ("answer", "done", "sent_at")

    def __init__(self) -> None:
        self.done = False
        self.answer: dict[str, Any] | None = None
        self.sent_at = 0.0

    def is_done(self) -> bool:
        return self.done


class _Gone(LockServerUnreachable):
    """The connection dropped under a request (the callers catch it and reconnect)."""

    def __init__(self) -> None:
        super().__init__("the connection to lockd dropped")


class LockdBackend:
    """A :class:`~heartline.lock._backend.LockBackend` talking to one lockd."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool = False,
        ca_file: str | None = None,
        auth: str | None = None,
        connect_timeout: float = _CONNECT_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.auth = auth
        self.connect_timeout = connect_timeout
        self._ssl: ssl.SSLContext | None = None
        if tls:
            import ssl  # only for TLS: it costs a cold `heartline lock` several milliseconds

            self._ssl = ssl.create_default_context(cafile=ca_file)
        self._mutex = threading.Lock()
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._session = ""
        self._ttl = 0.0
        self._client: ClientInfo | None = None
        self._next_id = 0
        self._slots: dict[int, _Slot] = {}
        self._leases: dict[int, Lease] = {}
        self._last_acked = 0.0  # monotonic send time of the newest request the server answered
        self._closed = False
        self._last_use = 0.0
        self._io = threading.Lock()  # held by whichever thread reads the socket
        self._turn = threading.Condition()  # wakes the lease thread (close, new deadlines)
        self._rbuf = b""
        self._next_ping = 0.0
        self._poller = select.poll()
        self._poll_sock: socket.socket | None = None
        self._ended = ""  # why the last connection ended

    # --- connection -----------------------------------------------------------------------
    def _where(self) -> str:
        scheme = "heartlines" if self._ssl else "heartline"
        return f"{scheme}://{self.host}:{self.port}"

    def _open(
        self, ttl: float, client: ClientInfo, session: str
    ) -> tuple[socket.socket, dict[str, Any], bytes, float]:
        """Connect and say hello; returns the socket, the server's answer, leftover bytes and
        the monotonic time the hello was sent."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as e:
            raise LockServerUnreachable(
                f"lockd at {self._where()} is unreachable ({e.strerror or e}); is `heartline "
                "lockd` running there, and is --server right?"
            ) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
            hello = {"op": "hello", "v": proto.VERSION, "ttl": ttl, "host": client.host,
                     "pid": client.pid, "label": _label(client.label)}  # fmt: skip
            if self.auth:
                hello["auth"] = self.auth
            if session:
                hello["session"] = session
            sent_at = time.monotonic()
            sock.sendall(proto.encode(hello))
            buf = b""
            while b"\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("lockd closed the connection during hello")
                buf += chunk
                if len(buf) > proto.MAX_FRAME:
                    raise OSError("lockd's answer to hello is too long")
            line, _, rest = buf.partition(b"\n")
            answer = _loads(line)
        except OSError as e:
            sock.close()
            if self._ssl is not None and _is_ssl_error(e):
                raise LockServerUnreachable(
                    f"TLS with {self._where()} failed: {getattr(e, 'reason', None) or e}; check "
                    "--ca-file and the server's certificate"
                ) from None
            raise LockServerUnreachable(f"lockd at {self._where()}: {e}") from None
        if "error" in answer:
            sock.close()
            if answer.get("code") == "auth":
                raise LockAuthError(f"lockd at {self._where()}: {answer['error']}")
            raise LockError(f"lockd at {self._where()}: {answer['error']}")
        sock.settimeout(None)
        return sock, answer, rest, sent_at

    def where(self) -> str:
        """The server as a URL, for messages."""
        return self._where()

    def dial(self, ttl: float, client: ClientInfo) -> tuple[socket.socket, dict[str, Any], bytes]:
        """A new connection with a new session of its own (for a client other than this
        one's lock requests, such as :class:`~._lockd_entries.LockdEntries`): the socket, the
        server's hello answer and the bytes that came after it."""
        sock, answer, rest, _sent_at = self._open(ttl, client, "")
        return sock, answer, rest

    def _ensure(self, ttl: float, client: ClientInfo) -> None:
        with self._mutex:
            if self._closed:
                raise LockError("this lock's backend was closed")
            if self._sock is not None:
                return
        sock, answer, rest, sent_at = self._open(ttl, client, "")
        with self._mutex:
            self._sock = sock
            self._session = str(answer.get("session", ""))
            self._ttl = ttl
            self._client = client
            self._last_acked = sent_at
            self._last_use = sent_at
        threading.Thread(
            target=self._reader, args=(sock, rest), name="heartline-lockd",
            daemon=True,
        ).start()  # fmt: skip

    def _send(self, msg: dict[str, Any], slot: _Slot | None) -> None:
        data = proto.encode(msg)
        with self._send_lock:
            sock = self._sock
            if sock is None:
                raise _Gone
            if slot is not None:
                slot.sent_at = time.monotonic()
            try:
                sock.sendall(data)
            except OSError:
                raise _Gone from None

    def _call(self, msg: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        slot = _Slot()
        self._last_use = time.monotonic()
        with self._mutex:
            self._next_id += 1
            rid = msg["id"] = self._next_id
            self._slots[rid] = slot
        try:
            self._send(msg, slot)
            if not self._wait(slot, timeout):
                raise LockServerUnreachable(f"lockd at {self._where()} did not answer within "
                                            f"{timeout:g}s")  # fmt: skip
        except BaseException:
            with self._mutex:
                self._slots.pop(rid, None)
            raise
        answer = slot.answer
        if answer is None or answer.get("gone"):
            raise _Gone
        return answer

    # --- the reader thread ----------------------------------------------------------------
    def _reader(self, sock: socket.socket, buf: bytes) -> None:
        try:
            self._lease_loop(sock, buf)
        except Exception:  # a bug here must not leave leases that look alive
            _log().exception("the lock lease thread failed")
            for lease in self._live_leases():
                lease.mark_lost("internal error in the lease thread (logged)")

    def _lease_loop(self, sock: socket.socket, buf: bytes) -> None:
        """Renews the lease: wakes for pings, lease deadlines, and pushes to a holder.

        Callers read their own answers (see _wait), so this thread stays off the path of every
        request and every pushed grant. While this backend holds a grant and nobody is asking
        anything, it watches the socket, so a push (an admin's break) is read at once.
        """
        self._rbuf = buf
        self._next_ping = time.monotonic() + self._ttl / 3
        watch = select.poll()
        watch.register(sock, select.POLLIN)
        while True:
            with self._turn:
                if self._closed:
                    return
                now = time.monotonic()
                live = self._live_leases()
                wake = min([self._next_ping, *_changes(live)])
                if wake > now and not live:
                    self._turn.wait(wake - now)
            if self._closed:
                return
            if live and wake > now:
                ready = watch.poll((wake - now) * 1000 + 1)
                # Before reading what the server pushed meanwhile: a lease that ran out while
                # this process was frozen is lost for that reason.
                woke = time.monotonic()
                self._expire_leases(woke, woke - wake)
                if ready:
                    self._take_push(sock)
            now = time.monotonic()
            self._expire_leases(now)
            if self._sock is sock and now >= self._next_ping:
                if not self._slots and not self._live_leases() and now - self._last_use > self._ttl:
                    self._hang_up(sock, "idle")  # nothing held, nothing asked for a while
                    return
                if self._io.acquire(blocking=False):  # else a caller reads, and pings too
                    try:
                        reason = self._pump(sock, stop=lambda: False, until=now + self._ttl / 3,
                                            ping_once=True)  # fmt: skip
                    finally:
                        self._io.release()
                    if reason is not None:
                        self._hang_up(sock, reason)
            if self._sock is not sock:
                # Only grants whose lease still runs can be resumed; the rest are lost already
                # (and say why), so there is nothing to announce.
                leases = self._live_leases()
                if self._closed or not leases:
                    return
                _log().warning("lost the connection to lockd at %s (%s); resuming the session "
                               "within the lease", self._where(), self._ended)  # fmt: skip
                resumed = self._resume(leases)
                if resumed is None:
                    return
                sock, self._rbuf = resumed
                self._next_ping = time.monotonic() + self._ttl / 3
                watch = select.poll()
                watch.register(sock, select.POLLIN)

    def _readable(self, sock: socket.socket) -> bool:
        if self._ssl is not None and sock.pending():  # type: ignore[attr-defined]
            return True
        p = select.poll()
        p.register(sock, select.POLLIN)
        return bool(p.poll(0))

    def _take_push(self, sock: socket.socket) -> None:
        """The socket is readable while a grant is held: read what is there, unless a caller
        is reading already (then wait for it to finish; it dispatches everything)."""
        if not self._io.acquire(blocking=False):
            with self._io:
                return
        try:
            if self._sock is not sock:
                return
            reason = self._pump(sock, stop=lambda: not self._readable(sock), until=None)
        finally:
            self._io.release()
        if reason is not None:
            self._hang_up(sock, reason)

    def _hang_up(self, sock: socket.socket, reason: str) -> None:
        """The connection ended (``reason``): fail every waiting request."""
        with self._mutex:
            if self._sock is sock:
                self._sock = None
                self._ended = reason
            slots = list(self._slots.values())
            self._slots.clear()
        with contextlib.suppress(OSError):
            sock.close()
        for slot in slots:
            slot.answer = {"gone": True, "reason": reason}
            slot.done = True
        with self._turn:
            self._turn.notify_all()

    def _wait(self, slot: _Slot, timeout: float | None) -> bool:
        """Wait for ``slot``'s answer, reading the socket in this very thread.

        Being woken by the kernel here, rather than by another thread that read the answer,
        saves a thread switch on every answer and every pushed grant (the handoff between
        holders).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not slot.done:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            # Another thread may hold _io only briefly (a ping) or while reading for itself,
            # in which case it dispatches our answer too.
            if not self._io.acquire(timeout=0.02 if left is None else min(left, 0.02)):
                continue
            try:
                sock = self._sock
                if sock is None:
                    return slot.done
                reason = self._pump(sock, stop=slot.is_done, until=deadline)
                if reason is not None:
                    self._hang_up(sock, reason)
            finally:
                self._io.release()
        return True

    def _pump(
        self,
        sock: socket.socket,
        *,
        stop: Callable[[], bool],
        until: float | None,
        ping_once: bool = False,
    ) -> str | None:
        """Read and dispatch until ``stop()`` or ``until``: None; or why the connection ended.
        Sends the pings and notices expired leases on the way. Called holding ``_io``."""
        if self._poll_sock is not sock:  # one poll object per connection, not per call
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN)
            self._poll_sock = sock
        poller = self._poller
        late = 0.0  # how much later than planned the last wait ended
        while True:
            if self._closed:
                return "closed"
            if stop():
                return None
            now = time.monotonic()
            if until is not None and now >= until:
                return None
            if now >= self._next_ping:
                try:
                    ping = self._ping()
                except _Gone:
                    return "cannot send"
                self._next_ping = now + self._ttl / 3
                if ping_once:
                    stop = ping.is_done
            deadline = self._next_ping
            if self._leases:
                self._expire_leases(now, late)
                deadline = min([deadline, *_changes(self._live_leases())])
            if until is not None:
                deadline = min(deadline, until)
            pending = sock.pending() if self._ssl is not None else 0  # type: ignore[attr-defined]
            # (close() shuts the socket down, which ends this poll too.)
            ready = pending or poller.poll(max(0.0, deadline - time.monotonic()) * 1000 + 1)
            late = time.monotonic() - deadline
            if not ready:
                continue
            try:
                chunk = sock.recv(65536)
            except OSError as e:
                if self._ssl is not None and _is_ssl_error(e, want_read=True):
                    continue
                return str(e)
            if not chunk:
                return "lockd closed the connection"
            buf = self._rbuf + chunk
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                try:
                    self._dispatch(_loads(line))
                except LockError as e:
                    self._rbuf = buf
                    return str(e)
            self._rbuf = buf
            if len(buf) > proto.MAX_FRAME:
                return "lockd sent an over-long frame"

    def _ping(self) -> _Slot:
        with self._mutex:
            self._next_id += 1
            rid = self._next_id
            slot = self._slots[rid] = _Slot()
        self._send({"op": "ping", "id": rid}, slot)
        return slot

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "lost" in msg:
            lease = self._leases.get(msg.get("token", 0))
            if lease is not None:
                lease.mark_lost(str(msg.get("reason", "lockd says so")))
            return
        rid = msg.get("id")
        if rid is None:
            raise LockError(f"lockd: {msg.get('error', 'unexpected message')}")
        with self._mutex:
            slot = self._slots.pop(rid, None)
            if slot is None:
                return
            self._last_acked = max(self._last_acked, slot.sent_at)
            leases = self._live_leases()
        # Any answer proves the server heard from us at slot.sent_at or later.
        for lease in leases:
            lease.renewed(slot.sent_at)
        slot.answer = msg
        slot.done = True

    def _live_leases(self) -> list[Lease]:
        return [le for le in self._all_leases() if not le.released and le.loss is None]

    def _all_leases(self) -> list[Lease]:
        # list() copies the values in one step under the GIL; a Python-level loop over the
        # dict could meet another thread adding or removing a lease ("changed size").
        return list(self._leases.values())

    def _expire_leases(self, now: float, late: float = 0.0) -> None:
        """Tell each lease what time did (SUSPECT, or lost once its deadline passed); ``late``
        is how much later than planned the calling thread's last wait ended (long enough, and
        the process was frozen)."""
        for lease in self._live_leases():
            lease.poll(now, late=late, expired=_EXPIRED)

    def _resume(self, leases: list[Lease]) -> tuple[socket.socket, bytes] | None:
        """Reconnect and resume the session before the leases run out; None if that failed."""
        from heartline._util import Retry

        assert self._client is not None
        # No renewal can come while disconnected: the first lease's end is fixed.
        retry = Retry(first=0.01, cap=0.5, deadline=min(le.valid_until for le in leases))
        while not self._closed and not retry.expired():
            try:
                sock, answer, rest, sent_at = self._open(self._ttl, self._client, self._session)
            except LockError as e:
                _log().debug("resume failed: %s", e)
                # Their listeners hear SUSPECT while we are still trying, not after.
                for lease in leases:
                    lease.poll(expired=_UNREACHED)
                soonest = min(_changes(leases), default=None)
                retry.pause(most=None if soonest is None else soonest - time.monotonic())
                continue
            back = {(n, t) for n, t in answer.get("resumed", [])}
            with self._mutex:
                self._sock = sock
                self._session = str(answer.get("session", ""))
                self._last_acked = sent_at
            for lease in leases:
                if (lease.name, lease.token) in back:
                    lease.renewed(sent_at)
                else:
                    lease.mark_lost("lockd no longer knew this grant when we reconnected")
            _log().info("session resumed with %d grant(s)", len(back))
            return sock, rest
        for lease in leases:
            lease.mark_lost(_UNREACHED)
        return None

    # --- the LockBackend protocol ----------------------------------------------------------
    def acquire(
        self, name: str, *, limit: int, ttl: float, wait: float | None, client: ClientInfo
    ) -> Lease:
        check_request(name, limit=limit, ttl=ttl, wait=wait)
        deadline = None if wait is None else time.monotonic() + wait
        give_up = time.monotonic() + _RECONNECT_FOR
        first = True
        while True:
            try:
                if not first:
                    self._ensure_retrying(ttl, client, give_up)
                else:
                    self._ensure(ttl, client)
                first = False
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if wait == 0:
                    left = 0.0
                return self._acquire_once(name, limit, left, wait)
            except _Gone:
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeout(f"lock {name!r} not granted within {wait:g}s (lockd went "
                                      "away meanwhile)", name=name) from None  # fmt: skip
                give_up = time.monotonic() + _RECONNECT_FOR
                first = False

    def _ensure_retrying(self, ttl: float, client: ClientInfo, give_up: float) -> None:
        from heartline._util import Retry

        retry = Retry(first=0.02, cap=1.0, deadline=give_up)
        while True:
            try:
                self._ensure(ttl, client)
                return
            except LockServerUnreachable:
                if not retry.fits():  # the next try would come after give_up
                    raise
                retry.pause()

    def _acquire_once(
        self, name: str, limit: int, wait: float | None, asked: float | None
    ) -> Lease:
        if wait is not None and not wait <= 1e9:  # "for ever", in the protocol's terms
            wait = None
        msg = {"op": "acquire", "name": name, "limit": limit, "wait": wait}
        answer = self._call(msg, None if wait is None else wait + max(5.0, self._ttl))
        if "token" in answer:
            token = int(answer["token"])
            lease = Lease(name, token, limit=limit, ttl=self._ttl,
                          valid_until=self._last_acked + self._ttl)  # fmt: skip
            with self._mutex:
                self._leases[token] = lease
            with self._turn:
                self._turn.notify_all()  # the lease thread now watches for pushes
            return lease
        if answer.get("timeout"):
            if wait == 0:
                raise LockTimeout(f"lock {name!r} is busy (--try)", name=name)
            raise LockTimeout(f"lock {name!r} not granted within {asked:g}s", name=name)
        if answer.get("code") == "limit":
            raise UsageError(f"lockd: {answer['error']}")
        raise LockError(f"lockd: {answer.get('error', answer)}", name=name)

    def release(self, lease: Lease) -> None:
        if lease.released:
            return
        lost = lease.loss is not None
        # A lease whose renewals are late (the server may be frozen or cut off) is not waited
        # for beyond its proven end: the server lets it go by then anyway.
        wait = 10.0 if lease.state is HELD else max(0.2, lease.valid_until - time.monotonic())
        lease.mark_released()
        with self._mutex:
            self._leases.pop(lease.token, None)
        if lost:
            return
        # If the connection is gone, the server has already let the grant go.
        with contextlib.suppress(_Gone, LockError):
            self._call({"op": "release", "name": lease.name, "token": lease.token}, wait)

    def session_connection(self) -> socket.socket | None:
        """The connection of this backend's session (see LockBackend.session_connection):
        lockd lets the session's grants go when the last copy of it closes."""
        return self._sock

    def cancel_waits(self, name: str) -> None:
        """Give up every waiting acquire of ``name`` (from another thread)."""
        with contextlib.suppress(_Gone, LockError):
            self._send({"op": "release", "id": 0, "name": name, "token": 0}, None)

    def _request(self, msg: dict[str, Any], label: str) -> dict[str, Any]:
        """One short request on a connection of our own (`heartline locks`, `--break`)."""
        self._ensure(self._ttl or 10.0, self._client or ClientInfo.here(label))
        try:
            return self._call(msg, 10.0)
        except _Gone:
            raise LockServerUnreachable(f"lockd at {self._where()} closed the connection") from None

    def locks(self) -> list[LockInfo]:
        answer = self._request({"op": "locks"}, "heartline locks")
        return [
            LockInfo(
                name=doc["name"],
                limit=doc["limit"],
                holders=tuple(_holder(h) for h in doc["holders"]),
                waiters=tuple(_holder(w) for w in doc["waiters"]),
            )
            for doc in answer.get("locks", [])
        ]

    def break_lock(self, name: str) -> int:
        answer = self._request({"op": "break", "name": name}, "heartline lock --break")
        if answer.get("code") == "auth":
            raise LockAuthError(f"lockd: {answer['error']}", name=name)
        if "error" in answer:
            raise LockError(f"lockd: {answer['error']}", name=name)
        return int(answer.get("broken", 0))

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            sock, self._sock = self._sock, None
            leases = list(self._leases.values())
            self._leases.clear()
            slots = list(self._slots.values())
            self._slots.clear()
        for lease in leases:
            lease.mark_released()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for slot in slots:
            slot.answer = {"gone": True}
            slot.done = True
        with self._turn:
            self._turn.notify_all()


def _changes(leases: list[Lease]) -> list[float]:
    """When each lease next changes state by time alone (see Lease.next_change)."""
    return [t for le in leases if (t := le.next_change()) is not None]


def _label(text: str) -> str:
    """``text`` made printable and cut to what the protocol takes (bytes, not characters: a
    command line in another script must not make the hello too long)."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text.encode()[: proto.MAX_TEXT].decode(errors="ignore")


def _loads(line: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(line)
    except ValueError:
        raise LockError("lockd sent something that is not JSON; is that a lockd?") from None
    if not isinstance(msg, dict):
        raise LockError("lockd sent something that is not a JSON object")
    return msg


def _holder(doc: dict[str, Any]) -> Holder:
    return Holder(
        host=str(doc.get("host", "")),
        pid=int(doc.get("pid", 0)),
        since=float(doc.get("since", 0.0)),
        token=int(doc.get("token", 0)),
        label=str(doc.get("label", "")),
        connected=bool(doc.get("connected", True)),
    )
