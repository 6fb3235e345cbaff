"""serve_connection end to end on a real unix socket: answers, limits, errors, refusals.

Each test runs its own event loop (asyncio.run) and its own server in a short temporary
directory; every connection and the server are closed before the loop ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heartline.daemon import _http
from heartline.daemon._http import MAX_BODY, MAX_HEAD, Request, Response, serve_connection

DEADLINE = 10.0


@dataclass
class Server:
    path: str
    seen: list[Request] = field(default_factory=list)
    #: Exceptions that escaped serve_connection (it promises there are none).
    escaped: list[BaseException] = field(default_factory=list)
    #: Set each time serve_connection returns (the connection is over on the server's side).
    finished: asyncio.Event = field(default_factory=asyncio.Event)


async def echo(req: Request) -> Response:
    return Response.json(
        {
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "body": req.body.decode("latin-1"),
            "uid": req.peer_uid,
        }
    )


@contextlib.contextmanager
def short_dir() -> Iterator[str]:
    """A temporary directory with a path short enough for a unix socket."""
    d = tempfile.mkdtemp(prefix="hl-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.asynccontextmanager
async def serving(
    directory: str,
    handler: Callable[[Request], Awaitable[Response]] = echo,
    allowed: Callable[[int], bool] = lambda uid: True,
) -> AsyncIterator[Server]:
    server = Server(os.path.join(directory, "s.sock"))

    async def handle(req: Request) -> Response:
        server.seen.append(req)
        return await handler(req)

    async def connection(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await serve_connection(r, w, handle, allowed)
        except BaseException as e:
            server.escaped.append(e)
            w.close()
        finally:
            server.finished.set()

    srv = await asyncio.start_unix_server(connection, path=server.path, limit=MAX_HEAD)
    try:
        yield server
    finally:
        srv.close()
        await srv.wait_closed()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


async def read_reply(reader: asyncio.StreamReader) -> Reply | None:
    """One response, or None if the server closed the connection instead."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionResetError) as e:
        if isinstance(e, asyncio.IncompleteReadError):
            assert e.partial == b"", e.partial
        return None
    lines = head.decode("latin-1").split("\r\n")
    version, status, _reason = lines[0].split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.readexactly(int(headers["content-length"]))
    return Reply(int(status), headers, body)


async def is_closed(reader: asyncio.StreamReader) -> bool:
    """True when the server has closed: EOF (or a reset for unread input) comes next."""
    try:
        return await reader.read(1) == b""
    except ConnectionResetError:
        return True


async def exchange(path: str, raw: bytes, *, eof: bool = False) -> tuple[Reply | None, bool]:
    """Send ``raw`` on a new connection; return the reply and whether the server then closed."""
    async with asyncio.timeout(DEADLINE):
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write(raw)
            await writer.drain()
            if eof:
                writer.write_eof()
            reply = await read_reply(reader)
            closed = await is_closed(reader) if reply is not None else True
            return reply, closed
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


GET = b"GET /v1/status?name=web HTTP/1.1\r\nHost: heartline\r\nConnection: close\r\n\r\n"


def test_valid_request_is_answered() -> None:
    """A valid request reaches the handler, with the peer's uid, and gets its 200 answer."""

    async def main() -> None:
        with short_dir() as d:
            async with serving(d) as srv:
                reply, closed = await exchange(srv.path, GET)
                assert reply is not None
                assert reply.status == 200
                assert reply.headers["content-type"] == "application/json"
                assert reply.json() == {
                    "method": "GET",
                    "path": "/v1/status",
                    "query": {"name": ["web"]},
                    "body": "",
                    "uid": os.geteuid(),
                }
                assert closed
                assert srv.escaped == []

    run(main())


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    """Without Connection: close the connection stays open for the next request."""

    async def main() -> None:
        with short_dir() as d:
            async with serving(d) as srv, asyncio.timeout(DEADLINE):
                reader, writer = await asyncio.open_unix_connection(srv.path)
                try:
                    for i in range(3):
                        writer.write(b"GET /n/%d HTTP/1.1\r\n\r\n" % i)
                        reply = await read_reply(reader)
                        assert reply is not None
                        assert reply.headers["connection"] == "keep-alive"
                        assert reply.json()["path"] == f"/n/{i}"  # type: ignore[index]
                    writer.write_eof()
                    assert await is_closed(reader)
                finally:
                    writer.close()
                    await writer.wait_closed()
                assert len(srv.seen) == 3

    run(main())


def test_post_body_reaches_the_handler() -> None:
    """A Content-Length body is read whole and handed to the handler."""

    async def main() -> None:
        with short_dir() as d:
            async with serving(d) as srv:
                body = b'{"names": ["all"]}'
                raw = b"POST /v1/stop HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                reply, _closed = await exchange(srv.path, raw, eof=True)
                assert reply is not None
                assert reply.json()["body"] == body.decode()  # type: ignore[index]
                assert srv.seen[0].json() == {"names": ["all"]}

    run(main())


@pytest.mark.parametrize(
    ("raw", "eof", "status"),
    [
        (b"hello\r\n\r\n", False, 400),
        (b"\x00\x01\x02 garbage", True, 400),
        (b"GET / HTTP/1.1\r\nHost: x", True, 400),
        (b"GET / HTTP/3\r\n\r\n", False, 505),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", False, 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", True, 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", False, 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", False, 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 9999999999999\r\n\r\n", False, 400),
        (b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), False, 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", False, 411),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD + 1024) + b"\r\n\r\n", False, 431),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD + 1024), True, 431),
    ],
    ids=[
        "garbage", "garbage-then-eof", "head-cut-by-eof", "bad-version", "bad-header",
        "body-cut-by-eof", "negative-length", "float-length", "long-length", "body-too-large",
        "chunked-body", "head-too-large", "head-too-large-then-eof",
    ],
)  # fmt: skip
def test_bad_requests_get_an_error_and_a_closed_connection(
    raw: bytes, eof: bool, status: int
) -> None:
    """Malformed or over-limit requests get the matching 4xx/5xx JSON error, the connection
    is closed, the handler never runs, and the server still answers the next client."""

    async def main() -> None:
        with short_dir() as d:
            async with serving(d) as srv:
                reply, closed = await exchange(srv.path, raw, eof=eof)
                assert reply is not None
                assert reply.status == status
                assert reply.headers["connection"] == "close"
                error = reply.json()["error"]  # type: ignore[index]
                assert error["code"] == "bad_request"
                assert error["message"]
                assert closed
                assert srv.seen == []
                again, _ = await exchange(srv.path, GET)
                assert again is not None
                assert again.status == 200
                assert srv.escaped == []

    run(main())


def test_client_closing_without_sending_is_quiet() -> None:
    """A client that connects and closes at once gets no answer and breaks nothing."""

    async def main() -> None:
        with short_dir() as d:
            async with serving(d) as srv:
                reply, closed = await exchange(srv.path, b"", eof=True)
                assert reply is None
                assert closed
                reply, _ = await exchange(srv.path, b"\r\n\r\n \r\n", eof=True)
                assert reply is not None  # whitespace before EOF ends inside a head: 400
                assert srv.escaped == []

    run(main())


def test_handler_error_is_a_500_and_the_server_keeps_serving() -> None:
    """An exception in the handler becomes a 500 JSON error; the next connection is served."""

    async def flaky(req: Request) -> Response:
        if req.path == "/boom":
            raise RuntimeError("boom")
        return await echo(req)

    async def main() -> None:
        with short_dir() as d:
            async with serving(d, flaky) as srv:
                reply, _ = await exchange(srv.path, b"GET /boom HTTP/1.1\r\n\r\n", eof=True)
                assert reply is not None
                assert reply.status == 500
                assert reply.json()["error"]["code"] == "internal"  # type: ignore[index]
                again, _ = await exchange(srv.path, GET)
                assert again is not None
                assert again.status == 200
                assert srv.escaped == []

    run(main())


def test_refused_peer_gets_403_and_the_handler_never_runs() -> None:
    """When allowed(uid) is False the peer gets 403 and the connection is closed."""
    asked: list[int] = []

    def deny(uid: int) -> bool:
        asked.append(uid)
        return False

    async def main() -> None:
        with short_dir() as d:
            async with serving(d, allowed=deny) as srv:
                reply, closed = await exchange(srv.path, GET)
                assert reply is not None
                assert reply.status == 403
                assert reply.json()["error"]["code"] == "permission_denied"  # type: ignore[index]
                assert closed
                assert srv.seen == []
                assert asked == [os.geteuid()]

    run(main())


def test_streamed_response_is_chunked_and_closes() -> None:
    """A streaming Response goes out chunked, skips empty chunks, then closes."""

    async def stream() -> AsyncIterator[bytes]:
        for part in (b"one\n", b"", b"two\n"):
            yield part

    async def handler(req: Request) -> Response:
        return Response(200, content_type="text/plain", stream=stream())

    async def main() -> None:
        with short_dir() as d:
            async with serving(d, handler) as srv:
                reply, closed = await exchange(srv.path, b"GET /logs HTTP/1.1\r\n\r\n")
                assert reply is not None
                assert reply.headers["transfer-encoding"] == "chunked"
                assert reply.body == b"one\ntwo\n"
                assert closed

    run(main())


def test_stream_learns_that_the_client_went_away() -> None:
    """While streaming, the request's disconnected event is set when the client closes."""
    gone = asyncio.Event()

    async def main() -> None:
        async def stream(req: Request) -> AsyncIterator[bytes]:
            yield b"first\n"
            await req.disconnected.wait()
            gone.set()

        async def handler(req: Request) -> Response:
            return Response(200, content_type="text/plain", stream=stream(req))

        with short_dir() as d:
            async with serving(d, handler) as srv, asyncio.timeout(DEADLINE):
                reader, writer = await asyncio.open_unix_connection(srv.path)
                writer.write(b"GET /follow HTTP/1.1\r\n\r\n")
                await reader.readuntil(b"first\n")
                writer.close()
                await writer.wait_closed()
                await gone.wait()

    run(main())


def test_idle_connection_is_closed_after_the_idle_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that sends nothing is closed once IDLE_TIMEOUT passes, without an answer."""
    monkeypatch.setattr(_http, "IDLE_TIMEOUT", 0.05)

    async def main() -> None:
        with short_dir() as d:
            async with serving(d) as srv, asyncio.timeout(DEADLINE):
                reader, writer = await asyncio.open_unix_connection(srv.path)
                try:
                    assert await reader.read() == b""
                finally:
                    writer.close()
                    await writer.wait_closed()
                assert srv.escaped == []

    run(main())


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nHost: heart",
        b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
    ],
    ids=["in-the-request-line", "in-a-header", "before-the-body", "inside-the-body"],
)
def test_request_that_stalls_is_answered_408_and_closed(
    monkeypatch: pytest.MonkeyPatch, raw: bytes
) -> None:
    """A request that stops arriving (in its head or its body) for READ_TIMEOUT gets a 408
    timeout error and a closed connection, long before the idle timeout; the handler never
    runs."""
    monkeypatch.setattr(_http, "READ_TIMEOUT", 0.2, raising=False)

    async def main() -> None:
        with short_dir() as d:
            async with serving(d) as srv:
                began = time.monotonic()
                reply, closed = await exchange(srv.path, raw)
                assert reply is not None
                assert reply.status == 408
                error = reply.json()["error"]  # type: ignore[index]
                assert error["code"] == "timeout"
                assert "0.2s" in error["message"]
                assert closed
                assert time.monotonic() - began < 5
                assert srv.seen == []
                assert srv.escaped == []

    run(main())


def test_slow_client_that_keeps_sending_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that sends its request a few bytes at a time, each pause shorter than
    READ_TIMEOUT and the whole within REQUEST_TIMEOUT, gets its answer."""
    monkeypatch.setattr(_http, "READ_TIMEOUT", 0.5, raising=False)
    monkeypatch.setattr(_http, "REQUEST_TIMEOUT", 10.0, raising=False)
    body = b'{"names": ["all"]}'
    raw = b"POST /v1/stop HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    async def main() -> None:
        with short_dir() as d:
            async with serving(d) as srv, asyncio.timeout(DEADLINE):
                reader, writer = await asyncio.open_unix_connection(srv.path)
                try:
                    for i in range(0, len(raw), 6):
                        writer.write(raw[i : i + 6])
                        await writer.drain()
                        await asyncio.sleep(0.05)  # the slowness under test
                    reply = await read_reply(reader)
                finally:
                    writer.close()
                    await writer.wait_closed()
                assert reply is not None
                assert reply.status == 200
                assert reply.json()["body"] == body.decode()  # type: ignore[index]

    run(main())


def test_request_that_trickles_past_the_request_timeout_is_answered_408(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that keeps sending a byte now and then, never pausing for READ_TIMEOUT, still
    cannot take longer than REQUEST_TIMEOUT over one request."""
    monkeypatch.setattr(_http, "READ_TIMEOUT", 1.0, raising=False)
    monkeypatch.setattr(_http, "REQUEST_TIMEOUT", 0.5, raising=False)

    async def main() -> None:
        with short_dir() as d:
            async with serving(d) as srv, asyncio.timeout(DEADLINE):
                reader, writer = await asyncio.open_unix_connection(srv.path)
                try:
                    writer.write(b"GET / HTTP/1.1\r\n")

                    async def trickle() -> None:
                        with contextlib.suppress(ConnectionError):
                            while True:
                                writer.write(b"X-A: b\r\n")
                                await writer.drain()
                                await asyncio.sleep(0.05)

                    sending = asyncio.ensure_future(trickle())
                    try:
                        reply = await read_reply(reader)
                    finally:
                        sending.cancel()
                finally:
                    writer.close()
                    with contextlib.suppress(ConnectionError):
                        await writer.wait_closed()
                assert reply is not None
                assert reply.status == 408
                assert "within 0.5s" in reply.json()["error"]["message"]  # type: ignore[index]
                assert srv.seen == []

    run(main())


def unread_connection(path: str) -> socket.socket:
    """A blocking client socket with the smallest receive buffer, which the test never reads."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    s.connect(path)
    return s


def test_client_that_does_not_read_its_answer_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that asks for a large answer and never reads it is disconnected once
    WRITE_TIMEOUT passes without it taking the answer; nothing escapes the server."""
    monkeypatch.setattr(_http, "WRITE_TIMEOUT", 0.2, raising=False)

    async def big(req: Request) -> Response:
        return Response(200, b"x" * (8 * 1024 * 1024), "text/plain")

    async def main() -> None:
        with short_dir() as d:
            async with serving(d, big) as srv, asyncio.timeout(DEADLINE):
                client = unread_connection(srv.path)
                try:
                    client.sendall(b"GET /big HTTP/1.1\r\n\r\n")
                    await srv.finished.wait()
                finally:
                    client.close()
                assert srv.escaped == []

    run(main())


def test_stream_to_a_client_that_does_not_read_is_cut_off_and_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream whose client stops reading ends once a chunk is not taken within
    WRITE_TIMEOUT: the connection is over and the stream itself is closed at once (what it
    holds is let go), not left for the garbage collector."""
    monkeypatch.setattr(_http, "WRITE_TIMEOUT", 0.2, raising=False)
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"y" * 65536
                await asyncio.sleep(0)
        finally:
            closed.set()

    async def handler(req: Request) -> Response:
        return Response(200, content_type="text/plain", stream=endless())

    async def main() -> None:
        with short_dir() as d:
            async with serving(d, handler) as srv, asyncio.timeout(DEADLINE):
                client = unread_connection(srv.path)
                try:
                    client.sendall(b"GET /follow HTTP/1.1\r\n\r\n")
                    await srv.finished.wait()
                    assert closed.is_set()
                finally:
                    client.close()
                assert srv.escaped == []

    run(main())


def test_unicode_digit_content_length_is_a_400() -> None:
    """Content-Length: <superscript two> is answered 400, and nothing escapes the server."""

    async def main() -> None:
        with short_dir() as d:
            async with serving(d) as srv:
                raw = b"POST / HTTP/1.1\r\nContent-Length: \xb2\r\n\r\nab"
                reply, _ = await exchange(srv.path, raw, eof=True)
                assert srv.escaped == []
                assert reply is not None
                assert reply.status == 400

    run(main())


def test_odd_target_is_answered() -> None:
    """GET //[ is answered (as a path the handler sees), and nothing escapes the server."""

    async def main() -> None:
        with short_dir() as d:
            async with serving(d) as srv:
                reply, _ = await exchange(srv.path, b"GET //[ HTTP/1.1\r\n\r\n", eof=True)
                assert srv.escaped == []
                assert reply is not None
                assert reply.status == 200
                assert b'"path": "//["' in reply.body

    run(main())


# --- fuzz: whatever arrives, the server answers with a status line or closes ----------------

request_ish = st.lists(
    st.one_of(
        st.sampled_from(
            [b"GET / HTTP/1.1", b"POST /v1/stop HTTP/1.1", b"Content-Length: 3", b"Host: x",
             b"Transfer-Encoding: chunked", b"Connection: close", b"", b"X: y", b"GET"]
        ),
        st.binary(max_size=40),
    ),
    max_size=8,
).map(b"\r\n".join)  # fmt: skip


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(st.one_of(st.binary(max_size=200), request_ish))
def test_random_bytes_get_a_status_line_or_a_close_and_the_server_survives(raw: bytes) -> None:
    """Any bytes get an HTTP/1.1 status line (or a plain close), nothing escapes
    serve_connection, and a valid request on a new connection is still answered."""

    async def main() -> None:
        with short_dir() as d:
            async with serving(d) as srv, asyncio.timeout(DEADLINE):
                reader, writer = await asyncio.open_unix_connection(srv.path)
                try:
                    writer.write(raw)
                    await writer.drain()
                    writer.write_eof()
                    try:
                        got = await reader.read()
                    except ConnectionResetError:
                        got = b""
                finally:
                    writer.close()
                    with contextlib.suppress(ConnectionError):
                        await writer.wait_closed()
                assert got == b"" or got.startswith(b"HTTP/1.1 "), got[:80]
                if got:
                    status = int(got.split(b" ", 2)[1])
                    assert 200 <= status <= 599
                reply, _ = await exchange(srv.path, GET)
                assert reply is not None
                assert reply.status == 200
                assert srv.escaped == []

    run(main())
