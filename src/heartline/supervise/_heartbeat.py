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
from collections.abc import Callable

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


class NotifyReceiver:
    """Receives notify datagrams on the event loop and hands them to ``route``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: str,
        route: Callable[[int], Callable[[dict[str, str]], None] | None],
    ) -> None:
        self.loop = loop
        self.route = route
        self.received = 0
        self.dropped = 0
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
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
        loop.add_reader(sock.fileno(), self._on_readable)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _on_readable(self) -> None:
        # Drain what is queued, but yield to the loop after a bounded batch.
        for _ in range(256):
            try:
                data, anc, flags, _addr = self.sock.recvmsg(
                    MAX_DATAGRAM + 1, socket.CMSG_SPACE(_CREDS.size)
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("notify socket: %s", e)
                return
            self._handle(data, anc, flags)

    def _handle(self, data: bytes, anc: list[tuple[int, int, bytes]], flags: int) -> None:
        pid = 0
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = _CREDS.unpack(payload[: _CREDS.size])[0]
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > MAX_DATAGRAM or pid <= 0:
            self.dropped += 1
            return
        deliver = self.route(pid)
        if deliver is None:
            group = process_group(pid)
            deliver = self.route(group) if group else None
        fields = parse_message(data) if deliver is not None else None
        if deliver is None or fields is None:
            self.dropped += 1
            return
        self.received += 1
        deliver(fields)
