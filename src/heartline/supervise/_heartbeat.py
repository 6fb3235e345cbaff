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
import hashlib
import logging
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Mapping
from typing import Protocol

log = logging.getLogger(__name__)

#: Largest datagram accepted (systemd itself accepts up to its page-sized buffer).
MAX_DATAGRAM = 4096
_CREDS = struct.Struct("3i")


def notify_address(run_dir: str | None) -> str:
    """A stable abstract address for a run directory (so adopted programs keep theirs)."""
    if run_dir is None:
        return f"@heartline/notify/{os.getpid()}-{secrets.token_hex(6)}"
    digest = hashlib.sha256(os.path.abspath(run_dir).encode()).hexdigest()[:20]
    return f"@heartline/notify/{digest}"


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
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rfind(b")") + 2 :].split()[2])
    except (OSError, ValueError, IndexError):
        return None


class Sink(Protocol):
    """Where a program's datagrams go (a Program)."""

    #: time.monotonic() of the last WATCHDOG=1, stored by the receiver thread (the event
    #: loop's clock is time.monotonic(), so the loop compares it with its deadlines).
    last_beat: float

    def on_notify(self, fields: dict[str, str]) -> None:
        """Any other message; called on the event loop."""


class NotifyReceiver:
    """Receives notify datagrams on one thread of its own and hands them to programs.

    Why a thread: a heartbeat must be read promptly (a sender blocks once ten datagrams wait,
    the kernel's default queue length), and 500 programs beating ten times a second mean 5000
    wake-ups a second. Through the event loop each cost about 24 us, 12 % of a core; a blocking
    read on a thread of its own costs a fraction of that, and a WATCHDOG=1 (almost all the
    traffic) only stores a time, without waking the loop. Everything else (READY=1, STATUS=...)
    is handed to the loop with call_soon_threadsafe. One thread, whatever the number of
    programs; idle, it sleeps in recvmsg.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: str,
        sinks: Mapping[int, Sink],
    ) -> None:
        self.loop = loop
        #: Programs by main pid; read (never written) on the receiver thread.
        self.sinks = sinks
        self.received = 0
        self.dropped = 0
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        try:
            sock.bind(b"\0" + address[1:].encode())
        except OSError:
            # Someone holds the stable address (another user squatting it): fall back to a
            # fresh one. Programs adopted from a previous daemon then lose their heartbeats.
            address = notify_address(None)
            log.error("notify address in use; using %s instead", address)
            sock.bind(b"\0" + address[1:].encode())
        self.address = address
        self.sock = sock
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="heartline-notify", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked recvmsg
        self._thread.join(5)
        self.sock.close()

    def _run(self) -> None:
        space = socket.CMSG_SPACE(_CREDS.size)
        recv = self.sock.recvmsg
        get = self.sinks.get
        unpack = _CREDS.unpack_from
        clock = time.monotonic
        while not self._closing:
            try:
                data, anc, flags, _addr = recv(MAX_DATAGRAM + 1, space)
            except InterruptedError:
                continue
            except OSError as e:
                if not self._closing:
                    log.error("notify socket failed: %s", e)
                return
            if self._closing:
                return
            # The fast path, nearly all the traffic: a bare heartbeat from a main process.
            # Kept inline: at 5000 datagrams a second every Python call here costs a
            # percent of a core.
            if data == b"WATCHDOG=1" and not flags and len(anc) == 1:
                sink = get(unpack(anc[0][2])[0])
                if sink is not None:
                    sink.last_beat = clock()
                    self.received += 1
                    continue
            self._handle(data, anc, flags)

    def _handle(self, data: bytes, anc: list[tuple[int, int, bytes]], flags: int) -> None:
        pid = 0
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = _CREDS.unpack_from(payload)[0]
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
            sink.last_beat = time.monotonic()
            return
        fields = parse_message(data)
        if fields is None:
            self.dropped += 1
            return
        self.received += 1
        if fields.get("WATCHDOG") == "1":
            sink.last_beat = time.monotonic()
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self.loop.call_soon_threadsafe(sink.on_notify, fields)
