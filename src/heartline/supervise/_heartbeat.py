"""The daemon's side of systemd's notify protocol: one datagram socket for every program.

Programs get ``NOTIFY_SOCKET`` in their environment and send ``READY=1``, ``WATCHDOG=1``,
``STATUS=...`` and friends, exactly as they would to systemd, so sd_notify(3), the sdnotify
package and systemd-notify work unchanged.

Why an abstract socket: programs may run as other users, who could not reach a socket inside
the daemon's owner-only run directory. Anyone on the machine can send to an abstract address,
so every datagram is attributed by the kernel's peer credentials (SO_PASSCRED): it counts only
when the sending pid is a program's main process or a member of its process group. Everything
else, and anything malformed or oversized, is dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import select
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Protocol

from heartline._util import BatchReader, read_stat

log = logging.getLogger(__name__)

#: Largest datagram accepted (systemd itself accepts up to its page-sized buffer).
MAX_DATAGRAM = 4096
_CREDS = struct.Struct("3i")


def notify_address() -> str:
    """A fresh abstract address prefix that nobody can guess.

    Abstract names are a namespace anyone on the machine may bind in. A name derived from the
    run directory could be bound by another user while the daemon is down, and the heartbeats
    of the programs it adopts would then go to that process. A random name is carried in the
    state file instead, so that a daemon started again binds the same one.
    """
    return f"@heartline/notify/{secrets.token_hex(16)}"


#: Heartbeats are spread over this many sockets (see NotifyReceiver).
SHARDS = 32
#: Pause between two drains of busy sockets (see NotifyReceiver).
COALESCE = 0.02


def parse_message(data: bytes) -> dict[str, str] | None:
    """``KEY=VALUE`` lines into a dict; None for anything that is not such a message."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key or not key.replace("_", "").isalnum() or not key.isascii():
            return None
        fields[key] = value
    return fields or None


def process_group(pid: int) -> int | None:
    info = read_stat(pid)
    return info.pgrp if info is not None else None


class Sink(Protocol):
    """Where a program's datagrams go (a Program)."""

    #: The receiver's clock (the loop's time) at the last WATCHDOG=1, stored by its thread.
    last_beat: float

    def on_notify(self, fields: dict[str, str]) -> None:
        """Any other message; called on the event loop."""


class NotifyReceiver:
    """Receives notify datagrams on one thread of its own and hands them to programs.

    The cost is per datagram, and 500 programs beating ten times a second send 5000 a second,
    so the design is about making each one cheap:

    - A thread of its own, not the event loop: a bare WATCHDOG=1 (almost all the traffic)
      only stores a time, without waking the loop; everything else (READY=1, STATUS=...) is
      handed to the loop with call_soon_threadsafe.
    - Batches: a sender blocks once ten datagrams wait on a socket (the kernel's default
      net.unix.max_dgram_qlen), which rules out waiting long on one socket. So programs are
      spread over SHARDS sockets, and after each drain the thread pauses COALESCE before
      polling again; each drain reads all that queued with one recvmmsg per socket.
    - The bare heartbeat's handling is inline in the drain loop.

    Idle, the thread sleeps in poll(): no wake-ups at all.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: str,
        sinks: Mapping[int, Sink],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loop = loop
        #: What a heartbeat is stamped with: the event loop's clock (its ``time``), which
        #: this thread may read; deadlines are judged on the loop against the same clock.
        self.clock = clock
        #: Programs by main pid; read (never written) on the receiver thread.
        self.sinks = sinks
        self.received = 0
        self.dropped = 0
        self.address = address
        try:
            self.socks = self._bind_all(address)
        except OSError:
            # Someone else holds the addresses the previous daemon used. Programs adopted from
            # it still send there: the supervisor sees that their NOTIFY_SOCKET is not ours
            # and does not judge their heartbeats (see Program.adopt).
            self.address = notify_address()
            log.error(
                "notify address %s is held by another process; using %s (adopted programs "
                "cannot be heard until they are restarted)",
                address,
                self.address,
            )
            self.socks = self._bind_all(self.address)
        self.readers = [BatchReader.create(s.fileno(), MAX_DATAGRAM + 1) for s in self.socks]
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="heartline-notify", daemon=True)
        self._thread.start()

    @staticmethod
    def _bind_all(prefix: str) -> list[socket.socket]:
        socks: list[socket.socket] = []
        try:
            for shard in range(SHARDS):
                sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
                sock.bind(f"\0{prefix[1:]}/{shard}".encode())
        except OSError:
            for sock in socks:
                sock.close()
            raise
        return socks

    def address_for(self, name: str) -> str:
        """The address a program gets in NOTIFY_SOCKET (stable across daemon restarts)."""
        return f"{self.address}/{zlib.crc32(name.encode()) % SHARDS}"

    def owns(self, address: str) -> bool:
        """Whether datagrams sent to ``address`` reach this receiver."""
        prefix, _, shard = address.rpartition("/")
        return prefix == self.address and shard.isdigit() and int(shard) < SHARDS

    def drain(self) -> None:
        """Read, on the calling thread, every datagram queued right now.

        After the daemon was stopped or starved, heartbeats sent meanwhile wait in the socket
        queues; the receiver thread may not have run yet when a deadline is judged. Datagram
        sockets hand each datagram to exactly one reader, so this and the thread never see the
        same one.
        """
        for sock in self.socks:
            for data, pid, flags in self._read_some(sock, limit=4096):
                self._handle(data, pid, flags)

    def close(self) -> None:
        self._closing = True
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the poll
        self._thread.join(5)
        for s in self.socks:
            s.close()

    def _run(self) -> None:
        poller = select.poll()
        by_fd = {}
        for sock, reader in zip(self.socks, self.readers, strict=True):
            poller.register(sock.fileno(), select.POLLIN)
            by_fd[sock.fileno()] = (sock, reader)
        get = self.sinks.get
        clock = self.clock

        def stamp(pid: int) -> bool:
            sink = get(pid)
            if sink is None:
                return False
            sink.last_beat = clock()
            return True

        while not self._closing:
            try:
                events = poller.poll()
            except InterruptedError:
                continue
            if self._closing:
                return
            for fd, _mask in events:
                sock, reader = by_fd[fd]
                while True:
                    if reader is not None:
                        n, others = reader.read(b"WATCHDOG=1", stamp)
                        self.received += n - len(others)
                    else:
                        others = self._read_some(sock)
                        n = len(others)
                    for data, pid, flags in others:
                        self._handle(data, pid, flags)
                    if n < 32:
                        break
            time.sleep(COALESCE)

    def _read_some(self, sock: socket.socket, limit: int = 32) -> list[tuple[bytes, int, int]]:
        """The portable path: recvmsg until the socket is empty (at most ``limit``)."""
        out: list[tuple[bytes, int, int]] = []
        space = socket.CMSG_SPACE(_CREDS.size)
        while len(out) < limit:
            try:
                data, anc, flags, _addr = sock.recvmsg(MAX_DATAGRAM + 1, space)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            pid = 0
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CREDS.unpack_from(payload)[0]
            out.append((data, pid, flags))
        return out

    def _handle(self, data: bytes, pid: int, flags: int) -> None:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > MAX_DATAGRAM or pid <= 0:
            self.dropped += 1
            return
        sink = self._sink(pid)
        if sink is None:
            # A program may speak before the loop has recorded its pid (spawning returns to
            # the loop only after the exec): look again on the loop, after that bookkeeping.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._deliver_late, pid, data)
            return
        self._deliver(sink, data)

    def _sink(self, pid: int) -> Sink | None:
        sink = self.sinks.get(pid)
        if sink is None:
            group = process_group(pid)
            sink = self.sinks.get(group) if group else None
        return sink

    def _deliver_late(self, pid: int, data: bytes) -> None:
        sink = self._sink(pid)
        if sink is None:
            self.dropped += 1
            return
        self._deliver(sink, data)

    def _deliver(self, sink: Sink, data: bytes) -> None:
        if data == b"WATCHDOG=1":
            self.received += 1
            sink.last_beat = self.clock()
            return
        fields = parse_message(data)
        if fields is None:
            self.dropped += 1
            return
        self.received += 1
        if fields.get("WATCHDOG") == "1":
            sink.last_beat = self.clock()
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self.loop.call_soon_threadsafe(sink.on_notify, fields)
