"""GET /v1/logs/NAME?follow=true end to end on a real unix socket, with a real log file: a
follower is let go as soon as its client leaves or stops reading, and never holds more than
its buffer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from heartline.config import LogSpec
from heartline.daemon import _http
from heartline.daemon._api import Api
from heartline.daemon._http import serve_connection, start_unix_server
from heartline.supervise import LogFile
from heartline.supervise._logs import FOLLOW_BUFFER, FollowBuffer

DEADLINE = 10.0
REQUEST = b"GET /v1/logs/web?follow=true&lines=1 HTTP/1.1\r\nHost: heartline\r\n\r\n"


@contextlib.asynccontextmanager
async def serving(tmp: Path) -> AsyncIterator[tuple[str, LogFile]]:
    """The API's routes for one program "web" whose stdout log already holds one line."""
    out = LogFile(str(tmp / "web.out.log"), LogSpec(max_size=1 << 20, backups=1))
    out.write(b"hello\n")
    daemon = SimpleNamespace(
        supervisor=SimpleNamespace(programs={"web": SimpleNamespace(out=out, err=None)}),
        config_path="/nonexistent",
    )
    api = Api(cast(Any, daemon))
    path = str(tmp / "s.sock")
    server = await start_unix_server(
        lambda r, w: serve_connection(r, w, api, lambda uid: True), path=path
    )
    try:
        yield path, out
    finally:
        server.close()
        out.close()


async def wait_for(check: Any, what: str) -> None:
    async with asyncio.timeout(DEADLINE):
        while not check():
            await asyncio.sleep(0.01)  # polling a condition under a deadline, in the test only
    assert check(), what


async def first_line(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    got = b""
    while b"hello\n" not in got:
        chunk = await loop.sock_recv(sock, 4096)
        assert chunk, got
        got += chunk


def client(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    s.connect(path)
    s.setblocking(False)
    return s


def test_follower_is_removed_as_soon_as_its_client_leaves(tmp_path: Path) -> None:
    """While a follower's client is connected its buffer is registered with the log file;
    when the client closes, it is removed."""

    async def main() -> None:
        async with serving(tmp_path) as (path, out), asyncio.timeout(DEADLINE):
            sock = client(path)
            try:
                await asyncio.get_running_loop().sock_sendall(sock, REQUEST)
                await first_line(sock)
                assert len(out.followers) == 1
            finally:
                sock.close()
            await wait_for(lambda: not out.followers, "the follower to be removed")

    asyncio.run(main())


def test_follower_that_stops_reading_is_bounded_then_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower whose client stops reading while the program writes on holds at most
    FOLLOW_BUFFER bytes, and once a chunk waits longer than WRITE_TIMEOUT it is cut off and
    removed, while the log file goes on being written."""
    monkeypatch.setattr(_http, "WRITE_TIMEOUT", 0.3, raising=False)

    async def main() -> None:
        async with serving(tmp_path) as (path, out), asyncio.timeout(DEADLINE):
            sock = client(path)
            try:
                await asyncio.get_running_loop().sock_sendall(sock, REQUEST)
                await first_line(sock)
                written = 0
                while out.followers:
                    out.write(b"z" * 65535 + b"\n")
                    written += 65536
                    for follower in out.followers:
                        assert isinstance(follower, FollowBuffer)
                        assert follower.size <= FOLLOW_BUFFER
                    await asyncio.sleep(0.005)  # a program writing steadily
            finally:
                sock.close()
            assert written > 4 * FOLLOW_BUFFER
            assert Path(out.path).stat().st_size > 0

    asyncio.run(main())
