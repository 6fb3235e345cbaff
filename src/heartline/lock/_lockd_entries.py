"""Session-scoped entries on lockd: a connection of their own, kept open by one thread.

A session apart from the lock client's (:class:`~heartline.lock._lockd.LockdBackend`): its
lifetime is the entries', not a lock's. One thread reads the connection, sends the pings
that renew the session (every TTL/3), feeds the mirrors of the watches, and, when the
connection drops (a lockd restart), reconnects and writes this session's entries and watches
again. Callers write their request and wait for its answer on an event.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from heartline.errors import LockError, LockServerUnreachable
from heartline.lock import _protocol as proto
from heartline.lock._entries import Entry, Mirror

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

    from heartline.lock._backend import ClientInfo
    from heartline.lock._lockd import LockdBackend

#: The longest answer read (a read of many entries is one frame).
_MAX_ANSWER = 16 << 20
_CALL_TIMEOUT = 10.0


class _Slot:
    __slots__ = ("answer", "done", "then")

    def __init__(self, then: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.done = threading.Event()
        self.answer: dict[str, Any] | None = None
        #: Run with the answer in the reader thread, for a request nobody waits on.
        self.then = then


def _entry(row: Any) -> Entry:
    key, value, rev, age = row
    return Entry(str(key), str(value), int(rev), float(age))


class LockdEntries:
    """:class:`~heartline.lock._entries.Entries` on one lockd, under a session of its own.

    ``dialer`` knows the server, its TLS and token (a lock client's settings); ``ttl`` is how
    long lockd keeps the session when nothing is heard from it.
    """

    def __init__(self, dialer: LockdBackend, *, ttl: float, client: ClientInfo) -> None:
        self._dialer = dialer
        self._ttl = ttl
        self._client = client
        self._mutex = threading.Lock()
        self._back = threading.Condition(self._mutex)  # notified when reconnected
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._next_id = 0
        self._slots: dict[int, _Slot] = {}
        self._owned: dict[str, str] = {}
        self._mirrors: dict[int, Mirror] = {}  # watch id on the current connection -> mirror
        self._thread: threading.Thread | None = None
        self._closed = False
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    # --- the connection ---------------------------------------------------------------------
    def _where(self) -> str:
        return self._dialer.where()

    def _connect(self) -> tuple[socket.socket, bytes]:
        sock, _answer, rest = self._dialer.dial(self._ttl, self._client)
        return sock, rest

    def _ensure(self) -> None:
        """Connect now (the first time), so that an unreachable server or a refused token is
        the caller's error; later drops are the thread's to mend."""
        with self._mutex:
            if self._closed:
                raise LockError("these entries' backend was closed")
            if self._thread is not None:
                return
        sock, rest = self._connect()
        with self._mutex:
            self._sock = sock
            self._thread = threading.Thread(
                target=self._run, args=(sock, rest), name="heartline-entries", daemon=True
            )
            self._thread.start()

    def _send(
        self, msg: dict[str, Any], slot: _Slot | None, *, mirror: Mirror | None = None
    ) -> int:
        with self._mutex:
            self._next_id += 1
            rid = msg["id"] = self._next_id
            if slot is not None:
                self._slots[rid] = slot
            if mirror is not None:
                self._mirrors[rid] = mirror  # before any push to this watch can arrive
            if self._thread is not threading.current_thread():
                # Reconnecting: a caller waits for it (a lockd restart takes a moment).
                self._back.wait_for(lambda: self._sock is not None or self._closed,
                                    _CALL_TIMEOUT)  # fmt: skip
            sock = self._sock
        data = proto.encode(msg)
        with self._send_lock:
            if sock is None:
                raise LockServerUnreachable(f"lockd at {self._where()}: reconnecting")
            try:
                sock.sendall(data)
            except OSError as e:
                raise LockServerUnreachable(f"lockd at {self._where()}: {e}") from None
        return rid

    def _call(self, msg: dict[str, Any]) -> dict[str, Any]:
        self._ensure()
        slot = _Slot()
        try:
            rid = self._send(msg, slot)
        except LockServerUnreachable:
            self._drop_slot(slot)
            raise
        if not slot.done.wait(_CALL_TIMEOUT):
            with self._mutex:
                self._slots.pop(rid, None)
            raise LockServerUnreachable(
                f"lockd at {self._where()} did not answer within {_CALL_TIMEOUT:g}s"
            )
        answer = slot.answer
        if answer is None:
            raise LockServerUnreachable(f"lockd at {self._where()} closed the connection")
        if "error" in answer:
            raise LockError(f"lockd at {self._where()}: {answer['error']}")
        return answer

    def _drop_slot(self, slot: _Slot) -> None:
        with self._mutex:
            for rid, s in list(self._slots.items()):
                if s is slot:
                    del self._slots[rid]

    # --- the thread -------------------------------------------------------------------------
    def _run(self, sock: socket.socket, rest: bytes) -> None:
        from heartline._util import Retry

        retry = Retry(first=0.05, cap=1.0)
        while True:
            why = self._serve(sock, rest)
            self._hang_up(sock)
            if self._closed:
                return
            _log().warning("entries: lost the connection to lockd at %s (%s); reconnecting",
                           self._where(), why)  # fmt: skip
            while not self._closed:
                try:
                    sock, rest = self._connect()
                except LockError as e:
                    _log().debug("entries: reconnect failed: %s", e)
                    retry.pause()
                    continue
                retry.restart()
                break
            else:
                return
            with self._mutex:
                if self._closed:
                    sock.close()
                    return
                self._sock = sock
                self._back.notify_all()
            self._restore()

    def _restore(self) -> None:
        """After a reconnect: this session's entries and watches, again."""
        with self._mutex:
            owned = list(self._owned.items())
            mirrors = list(self._mirrors.values())
            self._mirrors.clear()
        with contextlib.suppress(LockServerUnreachable):
            for key, value in owned:
                self._send({"op": "put", "key": key, "value": value}, None)
            for mirror in mirrors:
                self._start_watch(mirror, wait=False)
        _log().info("entries: reconnected to lockd at %s; %d entries written again",
                    self._where(), len(owned))  # fmt: skip

    def _serve(self, sock: socket.socket, buf: bytes) -> str:
        """Read and dispatch until the connection ends; why it ended."""
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        period = self._ttl / 3
        next_ping = time.monotonic() + period
        heard = time.monotonic()
        while not self._closed:
            now = time.monotonic()
            if now - heard > self._ttl:
                return f"nothing heard for {self._ttl:g}s"
            if now >= next_ping:
                try:
                    self._send({"op": "ping"}, None)
                except LockServerUnreachable as e:
                    return str(e)
                next_ping = now + period
            events = poller.poll(max(0.0, next_ping - time.monotonic()) * 1000 + 1)
            if any(fd == self._wake_r for fd, _ in events):
                return "closed"
            if not events:
                continue
            try:
                chunk = sock.recv(1 << 16)
            except OSError as e:
                return str(e)
            if not chunk:
                return "lockd closed the connection"
            heard = time.monotonic()
            buf += chunk
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                try:
                    msg = json.loads(line)
                except ValueError:
                    return "lockd sent something that is not JSON"
                if isinstance(msg, dict):
                    self._dispatch(msg)
            if len(buf) > _MAX_ANSWER:
                return "lockd sent an over-long frame"
        return "closed"

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "w" in msg:
            with self._mutex:
                mirror = self._mirrors.get(msg["w"])
            if mirror is None:
                return
            if "put" in msg:
                e = _entry(msg["put"])
                mirror.changed(e.key, e)
            elif "del" in msg:
                mirror.changed(str(msg["del"]), None)
            return
        rid = msg.get("id")
        with self._mutex:
            slot = self._slots.pop(rid, None) if rid is not None else None
        if slot is not None:
            slot.answer = msg
            slot.done.set()
            if slot.then is not None:
                slot.then(msg)
        elif "error" in msg:
            _log().warning("entries: lockd at %s: %s", self._where(), msg["error"])

    def _hang_up(self, sock: socket.socket) -> None:
        with self._mutex:
            if self._sock is sock:
                self._sock = None
            slots = list(self._slots.values())
            self._slots.clear()
        with contextlib.suppress(OSError):
            sock.close()
        for slot in slots:
            slot.done.set()  # answer None: the connection is gone

    # --- the Entries protocol ---------------------------------------------------------------
    def put(self, key: str, value: str, *, keep: bool = False) -> None:
        if keep:
            self._call({"op": "put", "key": key, "value": value, "keep": True})
            return
        with self._mutex:
            self._owned[key] = value
        self._call({"op": "put", "key": key, "value": value})

    def delete(self, key: str) -> None:
        with self._mutex:
            self._owned.pop(key, None)
        self._call({"op": "delete", "key": key})

    def entries(self, prefix: str) -> list[Entry]:
        answer = self._call({"op": "entries", "prefix": prefix})
        return [_entry(row) for row in answer.get("entries", ())]

    def watch(self, prefix: str) -> Mirror:
        self._ensure()
        mirror = Mirror(prefix)
        self._start_watch(mirror, wait=True)
        mirror.on_close.append(lambda: self._unwatch(mirror))
        return mirror

    def _start_watch(self, mirror: Mirror, *, wait: bool) -> None:
        """Watch ``mirror``'s prefix; ``wait`` for the answer, or (from the reader thread,
        which cannot wait for its own reading) apply it when it arrives."""

        def answered(answer: dict[str, Any]) -> None:
            if "entries" in answer:
                mirror.reset([_entry(row) for row in answer["entries"]])

        slot = _Slot(None if wait else answered)
        self._send({"op": "watch", "prefix": mirror.prefix}, slot, mirror=mirror)
        if not wait:
            return
        if not slot.done.wait(_CALL_TIMEOUT) or slot.answer is None:
            raise LockServerUnreachable(f"lockd at {self._where()} did not answer a watch")
        if "error" in slot.answer:
            raise LockError(f"lockd at {self._where()}: {slot.answer['error']}")
        answered(slot.answer)

    def _unwatch(self, mirror: Mirror) -> None:
        with self._mutex:
            ids = [rid for rid, m in self._mirrors.items() if m is mirror]
            for rid in ids:
                del self._mirrors[rid]
        for rid in ids:
            with contextlib.suppress(LockError):
                self._send({"op": "unwatch", "watch": rid}, None)

    def close(self) -> None:
        """End the session: lockd drops its entries the moment the connection closes."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            sock, self._sock = self._sock, None
            mirrors = list(self._mirrors.values())
            self._mirrors.clear()
            thread = self._thread
            self._back.notify_all()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for mirror in mirrors:
            mirror.on_close.clear()
            mirror.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _log() -> logging.Logger:
    import logging

    return logging.getLogger(__name__)
