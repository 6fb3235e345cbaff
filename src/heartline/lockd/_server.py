"""lockd: the lock server. One asyncio loop, one connection per client session.

Each connection is a session with a lease: any frame from the client renews it, and a client
that goes silent for its TTL (host crash, partition, SIGSTOP) loses its grants and waiting
places. A connection that closes (the client process died) ends the session at once. Grants are
pushed to the next waiter the moment a place frees up; nobody polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from heartline.errors import UsageError
from heartline.lock import protocol as proto
from heartline.lock import read_token_text
from heartline.lockd._entries import EntryLimit, EntryTable
from heartline.lockd._store import Store
from heartline.lockd._table import Grant, LimitMismatch, Promoted, Table, Waiter, Who

log = logging.getLogger(__name__)

#: Past this much unsent output the client is not reading; drop it.
_MAX_BACKLOG = 1 << 20
#: Waiting requests one session may have at once.
_MAX_PENDING = 4096
#: Watches one session may have at once.
_MAX_WATCHES = 64


@dataclass
class Session:
    id: str
    who: Who
    ttl: float
    last_seen: float
    admin: bool
    conn: _Conn | None = None
    timer: asyncio.TimerHandle | None = None
    #: request id -> (lock name, wait-timeout timer) of acquires still waiting
    pending: dict[int, tuple[str, asyncio.TimerHandle | None]] = field(default_factory=dict)
    #: watch id -> key prefix
    watches: dict[int, str] = field(default_factory=dict)


def read_tokens(path: str) -> dict[str, bool]:
    """Token file: one token per line, ``TOKEN`` or ``TOKEN admin``; # starts a comment. Like
    an ssh private key, it must be private to this user or root (no group or other access)."""
    tokens: dict[str, bool] = {}
    text = read_token_text(path, where=f"--token-file {path}",
                           layout="write one token per line", unsafe=UsageError)  # fmt: skip
    for n, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2 or (len(words) == 2 and words[1] != "admin") or len(words[0]) < 16:
            raise UsageError(
                f"{path}:{n}: expected `TOKEN` or `TOKEN admin`, with a token of at least "
                "16 characters (e.g. from `openssl rand -hex 24`)"
            )
        tokens[words[0]] = len(words) == 2
    if not tokens:
        raise UsageError(f"--token-file {path}: no token in it; add one per line")
    return tokens


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LockServer:
    def __init__(
        self,
        store: Store | None,
        *,
        tokens: dict[str, bool] | None = None,
        max_ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.max_ttl = max_ttl
        self.clock = clock
        self.wall = wall
        self._seq = 0
        self.table = Table(store.next_token if store else self._memory_token)
        self.entries = EntryTable()
        self.sessions: dict[str, Session] = {}
        self.epoch = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[asyncio.Server] = []
        self.failed: BaseException | None = None
        self._stopping = False
        self._stopped: asyncio.Event | None = None

    def _memory_token(self) -> int:
        self._seq += 1
        return self._seq

    # --- start-up -------------------------------------------------------------------------
    def recover(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the store; restore the grants it lists as sessions waiting to be resumed."""
        self._loop = loop
        self._stopped = asyncio.Event()
        if self.store is None:
            return
        rec = self.store.open()
        self.epoch = rec.epoch
        now = self.clock()
        for grant, ttl in rec.grants:
            self.table.restore(grant)
            s = self.sessions.get(grant.who.session)
            if s is None:
                s = self.sessions[grant.who.session] = Session(
                    grant.who.session, grant.who, ttl, now, admin=False
                )
                self._arm(s)
            s.ttl = max(s.ttl, ttl)
        if rec.grants:
            log.info("restored %d grant(s); their holders have one lease to resume them",
                     len(rec.grants))  # fmt: skip
        if rec.rebooted and rec.max_ttl > 0:
            # See _store: the journal's tail may be gone with the page cache; grant nothing
            # new until every lease we may have forgotten has run out on its holder's side.
            self.table.frozen = True
            log.warning("the host rebooted since the last run: no new grants for %.1fs",
                        rec.max_ttl)  # fmt: skip
            loop.call_later(rec.max_ttl, self._thaw)

    def _thaw(self) -> None:
        self._deliver(self.table.thaw(self.wall()))
        log.info("grants resumed after the post-reboot hold")

    async def listen(self, host: str, port: int, ssl_ctx: ssl.SSLContext | None = None) -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Conn(self), host, port, ssl=ssl_ctx, reuse_address=True, backlog=1024
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def wait_stopped(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    def stop(self) -> None:
        # Sessions are not ended on the way down: their grants stay in the journal, so holders
        # resume them on the next start (a restart loses no lock, planned or not).
        self._stopping = True
        for server in self._servers:
            server.close()
        for s in list(self.sessions.values()):
            if s.conn is not None:
                s.conn.close()
        if self.store is not None:
            self.store.close()
        if self._stopped is not None:
            self._stopped.set()

    def _fail_stop(self, err: OSError) -> None:
        # A grant that is not in the journal could be granted again after a restart: stop
        # serving rather than grant unrecorded.
        log.critical("cannot write the journal (%s): stopping so no grant goes unrecorded", err)
        self.failed = err
        self.stop()

    # --- sessions -------------------------------------------------------------------------
    def hello(self, conn: _Conn, msg: dict[str, Any]) -> None:
        admin = self.tokens is None
        if self.tokens is not None:
            given = msg["auth"] or ""
            role = None
            for token, is_admin in self.tokens.items():
                if hmac.compare_digest(token.encode(), given.encode("utf-8", "replace")):
                    role = is_admin
            if role is None:
                conn.refuse("authentication failed: pass the token from lockd's --token-file "
                            "(--token-file or $HEARTLINE_LOCK_TOKEN_FILE)", "auth")  # fmt: skip
                return
            admin = role
        if msg["ttl"] > self.max_ttl:
            conn.refuse(f"ttl {msg['ttl']:g}s is above this server's maximum of "
                        f"{self.max_ttl:g}s", "ttl")  # fmt: skip
            return
        now = self.clock()
        resumed: list[list[Any]] = []
        old = self.sessions.get(msg["session"] or "")
        if old is not None and old.conn is None:
            session = old
            session.conn = conn
            session.ttl = msg["ttl"]
            session.last_seen = now
            session.admin = admin
            resumed = [[g.name, g.token] for g in self.table.grants_of(session.id)]
            log.info("session %s of %s:%d resumed %d grant(s)", session.id[:8], session.who.host,
                     session.who.pid, len(resumed))  # fmt: skip
        else:
            sid = secrets.token_hex(16)
            who = Who(sid, msg["host"], msg["pid"], msg["label"])
            session = self.sessions[sid] = Session(sid, who, msg["ttl"], now, admin, conn)
            self._arm(session)
        if self.store is not None:
            try:
                self.store.raise_max_ttl(session.ttl)
            except OSError as e:
                self._fail_stop(e)
                return
        conn.session = session
        conn.send({"ok": True, "session": session.id, "epoch": self.epoch, "resumed": resumed})

    def _arm(self, s: Session) -> None:
        assert self._loop is not None
        s.timer = self._loop.call_at(self._loop.time() + s.ttl, self._check_expiry, s)

    def _check_expiry(self, s: Session) -> None:
        if self.sessions.get(s.id) is not s:
            return
        left = s.last_seen + s.ttl - self.clock()
        if left > 0:
            assert self._loop is not None
            s.timer = self._loop.call_at(self._loop.time() + left, self._check_expiry, s)
            return
        log.info("session %s of %s:%d went silent for %.1fs: its lease ran out", s.id[:8],
                 s.who.host, s.who.pid, s.ttl)  # fmt: skip
        self.end_session(s, "the lease ran out (nothing heard from the holder for a TTL)")

    def end_session(self, s: Session, reason: str) -> None:
        if self.sessions.pop(s.id, None) is None:
            return
        if s.timer is not None:
            s.timer.cancel()
        for _name, timer in s.pending.values():
            if timer is not None:
                timer.cancel()
        s.pending.clear()
        s.watches.clear()
        released, granted = self.table.drop_session(s.id, self.wall())
        conn, s.conn = s.conn, None
        if conn is not None:
            for g in released:
                conn.send({"lost": g.name, "token": g.token, "reason": reason})
            conn.close()
        self._journal_released(released)
        self._deliver(granted)
        for key, rev in self.entries.drop_session(s.id):
            self._notify(key, {"rev": rev, "del": key})

    def disconnected(self, conn: _Conn) -> None:
        s = conn.session
        if s is not None and s.conn is conn and not self._stopping:
            s.conn = None
            self.end_session(s, "connection closed")

    # --- requests -------------------------------------------------------------------------
    def handle(self, conn: _Conn, msg: dict[str, Any]) -> None:
        s = conn.session
        assert s is not None
        s.last_seen = self.clock()
        op = msg["op"]
        rid = msg["id"]
        if op == "acquire":
            self._acquire(s, rid, msg["name"], msg["limit"], msg["wait"])
        elif op == "release":
            self._release(s, rid, msg["name"], msg["token"])
        elif op == "ping":
            conn.send_raw(b'{"id":%d,"ok":true}\n' % rid)
        elif op == "locks":
            conn.send({"id": rid, "locks": self.snapshot()})
        elif op == "break":
            if not s.admin:
                conn.send({"id": rid, "error": "breaking a lock needs an admin token (a line "
                           "`TOKEN admin` in lockd's --token-file)", "code": "auth"})  # fmt: skip
                return
            self._break(s, rid, msg["name"])
        elif op in ("put", "delete", "entries", "watch", "unwatch"):
            self._entry_op(s, rid, msg)
        else:  # pragma: no cover - decode() lets no other op through
            conn.refuse(f"unknown op {op!r}", "protocol")

    def _acquire(self, s: Session, rid: int, name: str, limit: int, wait: float | None) -> None:
        conn = s.conn
        assert conn is not None and self._loop is not None
        if rid in s.pending or len(s.pending) >= _MAX_PENDING:
            conn.refuse(f"request id {rid} is already waiting, or too many waiting requests",
                        "protocol")  # fmt: skip
            return
        now = self.wall()
        waiter = Waiter(name, rid, s.who, now)
        try:
            grant = self.table.acquire(name, limit, waiter, try_only=wait == 0, now=now)
        except LimitMismatch as e:
            conn.send({"id": rid, "error": str(e), "code": "limit"})
            return
        if grant is not None:
            if self._journal_granted([grant], s):
                conn.send_raw(b'{"id":%d,"token":%d}\n' % (rid, grant.token))
            return
        if wait == 0:
            conn.send({"id": rid, "timeout": True})
            return
        timer = None
        if wait is not None:
            timer = self._loop.call_later(wait, self._wait_expired, s, rid, name)
        s.pending[rid] = (name, timer)

    def _wait_expired(self, s: Session, rid: int, name: str) -> None:
        if s.pending.pop(rid, None) is None:
            return
        self.table.cancel(name, s.id, rid)
        if s.conn is not None:
            s.conn.send({"id": rid, "timeout": True})

    def _release(self, s: Session, rid: int, name: str, token: int) -> None:
        conn = s.conn
        assert conn is not None
        if token == 0:
            # Give up waiting for ``name``: answer the waiting requests, then this one.
            for w in self.table.cancel(name, s.id):
                _n, timer = s.pending.pop(w.req_id, (name, None))
                if timer is not None:
                    timer.cancel()
                conn.send({"id": w.req_id, "timeout": True})
            conn.send({"id": rid, "ok": True})
            return
        mine = [g for g in self.table.holders(name) if g.token == token]
        if not mine or mine[0].who.session != s.id:
            conn.send({"id": rid, "ok": True, "held": False})
            return
        dropped, granted = self.table.release(name, token, self.wall())
        self._journal_released([dropped] if dropped else [])
        # The next holder first, then the one that let go: it shortens the handoff.
        self._deliver(granted)
        conn.send_raw(b'{"id":%d,"ok":true}\n' % rid)

    def _break(self, s: Session, rid: int, name: str) -> None:
        holders = self.table.holders(name)
        granted: list[Promoted] = []
        for g in holders:
            _dropped, more = self.table.release(name, g.token, self.wall())
            granted.extend(more)
            owner = self.sessions.get(g.who.session)
            if owner is not None and owner.conn is not None:
                owner.conn.send({"lost": name, "token": g.token, "reason": "broken by an admin"})
        self._journal_released(holders)
        log.warning("lock %r broken by %s:%d (%d holder(s) dropped)", name, s.who.host,
                    s.who.pid, len(holders))  # fmt: skip
        assert s.conn is not None
        s.conn.send({"id": rid, "broken": len(holders)})
        self._deliver(granted)

    # --- entries ----------------------------------------------------------------------------
    def _entry_op(self, s: Session, rid: int, msg: dict[str, Any]) -> None:
        conn = s.conn
        assert conn is not None
        op = msg["op"]
        if op == "put":
            key = msg["key"]
            try:
                rev = self.entries.put(key, msg["value"], s.id, self.clock(), keep=msg["keep"])
            except EntryLimit as e:
                conn.send({"id": rid, "error": str(e), "code": "limit"})
                return
            conn.send({"id": rid, "ok": True, "rev": rev})
            self._notify(key, {"rev": rev, "put": [key, msg["value"], rev, 0.0]})
        elif op == "delete":
            key = msg["key"]
            gone = self.entries.delete(key, s.id)
            conn.send({"id": rid, "ok": True, "deleted": gone is not None})
            if gone is not None:
                self._notify(key, {"rev": gone, "del": key})
        elif op == "entries":
            conn.send({"id": rid, "rev": self.entries.revision,
                       "entries": self.entries.read(msg["prefix"], self.clock())})  # fmt: skip
        elif op == "watch":
            if rid in s.watches or len(s.watches) >= _MAX_WATCHES:
                conn.send({"id": rid, "error": f"watch {rid} exists, or more than "
                           f"{_MAX_WATCHES} watches on one session", "code": "limit"})  # fmt: skip
                return
            s.watches[rid] = msg["prefix"]
            conn.send({"id": rid, "rev": self.entries.revision,
                       "entries": self.entries.read(msg["prefix"], self.clock())})  # fmt: skip
        else:
            conn.send({"id": rid, "ok": s.watches.pop(msg["watch"], None) is not None})

    def _notify(self, key: str, event: dict[str, Any]) -> None:
        """Push ``event`` on ``key`` to every watch whose prefix covers it."""
        for session in self.sessions.values():
            if not session.watches or session.conn is None:
                continue
            for wid, prefix in session.watches.items():
                if key.startswith(prefix):
                    session.conn.send({"w": wid, **event})

    def _deliver(self, granted: list[Promoted]) -> None:
        """Journal, then push, the grants made to waiters."""
        for waiter, grant in granted:
            s = self.sessions.get(grant.who.session)
            if s is None or not self._journal_granted([grant], s):
                continue
            _name, timer = s.pending.pop(waiter.req_id, (None, None))
            if timer is not None:
                timer.cancel()
            if s.conn is not None:
                s.conn.send_raw(b'{"id":%d,"token":%d}\n' % (waiter.req_id, grant.token))

    def _journal_granted(self, grants: list[Grant], s: Session) -> bool:
        if self.store is None:
            return True
        try:
            for g in grants:
                self.store.granted(g, s.ttl)
        except OSError as e:
            self._fail_stop(e)
            return False
        self._maybe_compact()
        return True

    def _journal_released(self, grants: list[Grant]) -> None:
        if self.store is None:
            return
        try:
            for g in grants:
                self.store.released(g)
        except OSError as e:
            self._fail_stop(e)

    def _maybe_compact(self) -> None:
        assert self.store is not None
        if not self.store.needs_compaction():
            return
        live = [g for e in self.table.entries.values() for g in e.holders.values()]
        ttls = {g.token: self.sessions[g.who.session].ttl for g in live}
        try:
            self.store.compact(live, ttls)
        except OSError as e:
            self._fail_stop(e)

    def snapshot(self) -> list[dict[str, Any]]:
        def who(w: Who, since: float, token: int = 0) -> dict[str, Any]:
            s = self.sessions.get(w.session)
            return {"host": w.host, "pid": w.pid, "label": w.label, "since": since,
                    "token": token, "connected": s is not None and s.conn is not None}  # fmt: skip

        out = []
        for name, entry in sorted(self.table.entries.items()):
            out.append(
                {
                    "name": name,
                    "limit": entry.limit,
                    "holders": [who(g.who, g.since, g.token) for g in entry.holders.values()],
                    "waiters": [who(w.who, w.since) for w in entry.waiters],
                }
            )
        return out


class _Conn(asyncio.Protocol):
    """One client connection: splits lines, checks them, hands them to the server."""

    def __init__(self, server: LockServer) -> None:
        self.server = server
        self.session: Session | None = None
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (Not an isinstance check: uvloop's transports do not derive from asyncio's.)
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.buf += data
        start = 0
        while not self.closed:
            end = self.buf.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self.buf[start:end])
            start = end + 1
            self._frame(line)
        del self.buf[:start]
        if len(self.buf) > proto.MAX_FRAME and not self.closed:
            self.refuse(f"frame longer than {proto.MAX_FRAME} bytes", "protocol")

    def _frame(self, line: bytes) -> None:
        try:
            msg = proto.decode(line)
        except proto.ProtocolViolation as e:
            self.refuse(str(e), "protocol")
            return
        except Exception:  # a gap in decode() must cost one connection, never the server
            log.exception("could not decode a frame; closing that connection")
            self.refuse("unreadable frame", "protocol")
            return
        if (msg["op"] == "hello") == (self.session is not None):
            self.refuse("hello must come first, and only once", "protocol")
            return
        try:
            if msg["op"] == "hello":
                self.server.hello(self, msg)
            else:
                self.server.handle(self, msg)
        except Exception:  # a bug must cost one connection, never the server
            log.exception("internal error on a %s request; closing that connection", msg["op"])
            self.refuse("internal error (logged by lockd)", "internal")

    def send(self, msg: dict[str, Any]) -> None:
        self.send_raw(proto.encode(msg))

    def send_raw(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > _MAX_BACKLOG:
            log.warning("a client stopped reading its answers; closing its connection")
            self.close()

    def refuse(self, message: str, code: str) -> None:
        self.send({"error": message, "code": code})
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.disconnected(self)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise UsageError(f"--listen {text!r}: write HOST:PORT, e.g. 127.0.0.1:7717 or [::1]:7717")
    return host, int(port)


def serve(
    listen: str,
    data_dir: str | None,
    *,
    token_file: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    max_ttl: float = 3600.0,
    ready: Callable[[int], None] | None = None,
) -> int:
    """Run lockd until SIGTERM/SIGINT; returns the exit code."""
    import signal

    host, port = parse_listen(listen)
    tokens = read_tokens(token_file) if token_file else None
    if tokens is None and not is_loopback(host):
        raise UsageError(
            f"--listen {listen}: beyond loopback lockd needs --token-file (clients must "
            "authenticate); add one, or listen on 127.0.0.1"
        )
    ssl_ctx = None
    if tls_cert or tls_key:
        if not (tls_cert and tls_key):
            raise UsageError("--tls-cert and --tls-key go together; give both")
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_ctx.load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as e:
            raise UsageError(f"--tls-cert/--tls-key: cannot load them ({e})") from None
    store = Store(data_dir) if data_dir else None
    server = LockServer(store, tokens=tokens, max_ttl=max_ttl)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        server.recover(loop)
        try:
            bound = await server.listen(host, port, ssl_ctx)
        except OSError as e:
            server.stop()
            raise UsageError(f"--listen {listen}: {e.strerror or e}") from None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop)
        log.info("listening on %s:%d%s (data: %s)", host, bound, " with TLS" if ssl_ctx
                 else "", data_dir or "none, grants are not kept across restarts")  # fmt: skip
        if ready is not None:
            ready(bound)
        await server.wait_stopped()
        return 1 if server.failed else 0

    return asyncio.run(main())
