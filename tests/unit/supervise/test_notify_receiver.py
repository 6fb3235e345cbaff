"""The notify receiver's reading paths: recvmmsg batches and the portable recvmsg fallback."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from heartline._util import BatchReader
from heartline.supervise import _heartbeat


def _pair(tag: str) -> tuple[socket.socket, bytes]:
    addr = f"\0heartline-test/{os.getpid()}/{tag}".encode()
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    rx.bind(addr)
    return rx, addr


def test_batch_reader_stamps_beats_and_returns_the_rest() -> None:
    """Bare beats from a known pid are stamped in place; others, unknown pids and oversized
    datagrams come back with the sender's pid and their flags."""
    rx, addr = _pair("batch")
    with rx, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as tx:
        reader = BatchReader.create(rx.fileno(), 4097, batch=8)
        assert reader is not None
        assert reader.read(b"WATCHDOG=1", lambda pid: True) == (0, [])  # nothing queued
        for msg in (b"WATCHDOG=1", b"WATCHDOG=1", b"READY=1", b"x" * 5000):
            tx.sendto(msg, addr)
        stamped: list[int] = []
        n, others = reader.read(b"WATCHDOG=1", lambda pid: stamped.append(pid) or True)
        assert n == 4 and stamped == [os.getpid(), os.getpid()]
        assert others[0] == (b"READY=1", os.getpid(), 0)
        data, pid, flags = others[1]
        assert len(data) == 4097 and pid == os.getpid() and flags & socket.MSG_TRUNC
        # A beat whose pid nobody claims is returned like any other datagram.
        tx.sendto(b"WATCHDOG=1", addr)
        assert reader.read(b"WATCHDOG=1", lambda pid: False) == (
            1,
            [(b"WATCHDOG=1", os.getpid(), 0)],
        )


class _Sink:
    def __init__(self) -> None:
        self.last_beat = 0.0
        self.messages: list[dict[str, str]] = []

    def on_notify(self, fields: dict[str, str]) -> None:
        self.messages.append(fields)


@pytest.mark.parametrize("batched", [True, False])
def test_receiver_routes_beats_and_messages(monkeypatch: pytest.MonkeyPatch, batched: bool) -> None:
    """With recvmmsg or with the recvmsg fallback, beats stamp the sender's sink and other
    messages reach it on the event loop; a pid nobody owns is dropped."""
    if not batched:
        monkeypatch.setattr(
            _heartbeat.BatchReader, "create", classmethod(lambda cls, *a, **k: None)
        )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sinks: dict[int, _Sink] = {}
        rx = _heartbeat.NotifyReceiver(loop, f"@heartline-test/{os.getpid()}/{batched}", sinks)
        try:
            target = b"\0" + rx.address_for("app")[1:].encode()
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as tx:
                tx.sendto(b"WATCHDOG=1", target)  # nobody owns this pid yet
                deadline = time.monotonic() + 10
                while rx.dropped < 1 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                assert rx.dropped == 1
                sink = sinks[os.getpid()] = _Sink()
                tx.sendto(b"WATCHDOG=1", target)
                tx.sendto(b"READY=1\nSTATUS=ok", target)
                while not sink.messages and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
            assert sink.last_beat > 0
            assert sink.messages == [{"READY": "1", "STATUS": "ok"}]
            assert rx.received == 2
        finally:
            rx.close()

    asyncio.run(main())
