"""A small HTTP/1.1 server for the control API on a unix socket.

Only what the API needs: Content-Length bodies, keep-alive, chunked responses for streams.
Every limit is explicit, and anything malformed is answered with 400 and a closed connection:
nothing a client sends can raise out of here.

Every phase of a connection has a deadline, so that no client can hold a connection (a
descriptor, a task, buffers) longer than the limits below by sending or reading slowly: waiting
for a request to begin, each read and the whole of a request once it has begun, and each write
of the answer (the whole of a plain answer, each chunk of a stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import resource
import socket
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from heartline.errors import HeartlineError

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
MAX_HEADERS = 100
#: How long an open connection may wait for its next request to begin (keep-alive).
IDLE_TIMEOUT = 120.0
#: Once a request has begun, the longest the client may go without sending a byte ...
READ_TIMEOUT = 10.0
#: ... and the longest the whole request, head and body, may take from its first byte. A client
#: on the same machine sends MAX_BODY in milliseconds; this leaves room for slow scripts.
REQUEST_TIMEOUT = 30.0
#: The client must take each write within this: a whole plain answer, each chunk of a stream
#: (a `logs -f` that stops reading is disconnected after it), the rest of an answer at close.
WRITE_TIMEOUT = 30.0
#: Bytes asked of the socket per read while a request comes in.
READ_CHUNK = 64 * 1024
#: Out of descriptors (or kernel memory), accepting stops for this long, doubling while it
#: keeps failing up to ACCEPT_PAUSE_MAX; after ACCEPT_CALM seconds without a failure the next
#: pause starts short again.
ACCEPT_PAUSE_MIN = 0.1
ACCEPT_PAUSE_MAX = 5.0
ACCEPT_CALM = 10.0
#: Connections the kernel queues before accept(): room for a burst of clients (a status from
#: every shell of a big fleet at once) while the loop is busy.
ACCEPT_BACKLOG = 1024
#: Connections taken per wake-up of the listening socket, so that a burst cannot starve the
#: rest of the loop.
ACCEPT_BATCH = 64
_NO_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
            411: "Length Required",
            413: "Content Too Large", 415: "Unsupported Media Type",
            422: "Unprocessable Content", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 501: "Not Implemented",
            505: "HTTP Version Not Supported"}  # fmt: skip


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    peer_uid: int = -1
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    def json(self) -> Any:
        """The body parsed as JSON ({} when empty); ValueError with a one-line reason when it
        is not JSON or nests deeper than the parser can follow."""
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except RecursionError:
            raise ValueError("the body's JSON is nested too deeply") from None
        except ValueError:
            raise ValueError("the body is not valid JSON") from None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    stream: AsyncIterator[bytes] | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, data: object, status: int = 200) -> Response:
        return cls(status, json.dumps(data).encode() + b"\n")

    @classmethod
    def error(cls, status: int, code: str, message: str, **extra: object) -> Response:
        return cls.json({"error": {"code": code, "message": message, **extra}}, status)


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(HeartlineError):
    def __init__(self, status: int, message: str, *, code: str = "bad_request") -> None:
        self.status = status
        self.code = code
        super().__init__(message)


def peer_uid(writer: asyncio.StreamWriter) -> int:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return -1
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return -1
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class _Input:
    """What a connection has sent and the server has not consumed yet.

    Reading through this buffer (rather than StreamReader.readuntil/readexactly) lets every
    read carry its own deadline: those helpers would wait for a whole head or body without
    telling whether the client is still sending.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buf = bytearray()

    async def fill(self, timeout: float) -> bool:
        """Read what comes within ``timeout`` seconds; False at end of input."""
        async with asyncio.timeout(timeout):
            data = await self.reader.read(READ_CHUNK)
        self.buf += data
        return bool(data)

    async def more(self, deadline: float, where: str) -> bool:
        """Read more of a request that has begun; 408 when the client pauses longer than
        READ_TIMEOUT or the request outlasts its deadline."""
        left = deadline - asyncio.get_running_loop().time()
        try:
            if left <= 0:
                raise TimeoutError
            return await self.fill(min(READ_TIMEOUT, left))
        except TimeoutError:
            if left <= READ_TIMEOUT:
                message = f"the request was not complete within {REQUEST_TIMEOUT:g}s"
            else:
                message = f"nothing arrived for {READ_TIMEOUT:g}s inside the request {where}"
            raise BadRequest(408, message, code="timeout") from None

    def take(self, n: int) -> bytes:
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


async def _read_head(inp: _Input, deadline: float) -> bytes | None:
    searched = 0
    while True:
        end = inp.buf.find(b"\r\n\r\n", max(0, searched - 3))
        if end > MAX_HEAD or (end < 0 and len(inp.buf) > MAX_HEAD + 3):
            raise BadRequest(431, f"request head larger than {MAX_HEAD} bytes")
        if end >= 0:
            return inp.take(end + 4)
        searched = len(inp.buf)
        if not await inp.more(deadline, "head"):
            if inp.buf.strip():
                raise BadRequest(400, "connection closed inside the request head")
            return None


def parse_head(head: bytes) -> tuple[str, str, dict[str, list[str]], dict[str, str]]:
    """Parse a request line and headers; raise BadRequest on anything off-spec."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
        raise BadRequest(400, "undecodable head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(505, "only HTTP/1.1 is spoken here")
    if not (method.isascii() and method.isalpha() and method.isupper()):
        raise BadRequest(400, "malformed method")
    if not target.startswith("/") or any(ord(c) < 0x21 or ord(c) > 0x7E for c in target):
        raise BadRequest(400, "malformed request target")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        if len(headers) >= MAX_HEADERS:
            raise BadRequest(431, "too many headers")
        name, sep, value = line.partition(":")
        if (
            not sep
            or not name
            or name != name.strip()
            or not all(33 <= ord(c) <= 126 for c in name)
        ):
            raise BadRequest(400, "malformed header")
        key = name.lower()
        value = value.strip()
        if key in headers and key in ("content-length", "transfer-encoding", "host"):
            raise BadRequest(400, f"duplicate {name} header")
        headers[key] = value
    # The target is origin-form ("/path?query"): split it by hand, since a URL parser would
    # read "//host/..." as an authority.
    raw_path, _, raw_query = target.partition("#")[0].partition("?")
    try:
        query = parse_qs(raw_query, keep_blank_values=True, max_num_fields=100, errors="strict")
        path = unquote(raw_path, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(400, "malformed query string") from None
    return method, path, query, headers


async def _read_body(inp: _Input, headers: dict[str, str], deadline: float) -> bytes:
    if "transfer-encoding" in headers:
        raise BadRequest(411, "chunked request bodies are not accepted; send Content-Length")
    raw = headers.get("content-length", "0")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise BadRequest(400, "malformed Content-Length")
    length = int(raw)
    if length > MAX_BODY:
        raise BadRequest(413, f"body larger than {MAX_BODY} bytes")
    while len(inp.buf) < length:
        if not await inp.more(deadline, "body"):
            raise BadRequest(400, "connection closed inside the body")
    return inp.take(length)


async def _read_request(
    inp: _Input,
) -> tuple[str, str, dict[str, list[str]], dict[str, str], bytes] | None:
    """The next request on the connection, or None when the client closed (or stayed idle
    for IDLE_TIMEOUT) between requests."""
    if not inp.buf:
        try:
            if not await inp.fill(IDLE_TIMEOUT):
                return None
        except TimeoutError:
            return None
    deadline = asyncio.get_running_loop().time() + REQUEST_TIMEOUT
    head = await _read_head(inp, deadline)
    if head is None:
        return None
    method, path, query, headers = parse_head(head)
    body = await _read_body(inp, headers, deadline)
    return method, path, query, headers, body


def _head_bytes(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send(writer: asyncio.StreamWriter, *parts: bytes) -> None:
    """Write, then wait (at most WRITE_TIMEOUT) until the client has taken enough of it.

    A client that stops reading is cut off (abort drops what it did not take): close() alone
    would keep the connection open for as long as unsent data remains.
    """
    writer.writelines(parts)
    try:
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()
    except TimeoutError:
        writer.transport.abort()
        raise


async def _write_response(writer: asyncio.StreamWriter, resp: Response, keep: bool) -> None:
    headers = [("Content-Type", resp.content_type), *resp.headers]
    if resp.stream is None:
        headers.append(("Content-Length", str(len(resp.body))))
        headers.append(("Connection", "keep-alive" if keep else "close"))
        await _send(writer, _head_bytes(resp.status, headers), resp.body)
        return
    headers += [("Transfer-Encoding", "chunked"), ("Connection", "close")]
    stream = resp.stream
    try:
        await _send(writer, _head_bytes(resp.status, headers))
        async for chunk in stream:
            if chunk:
                await _send(writer, b"%x\r\n" % len(chunk), chunk, b"\r\n")
        await _send(writer, b"0\r\n\r\n")
    finally:
        # Close the stream now, not when it is collected: what it holds (a log follower and
        # its buffer) goes with the connection.
        if isinstance(stream, AsyncGenerator):
            await stream.aclose()


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close once the client has taken what is left, waiting at most WRITE_TIMEOUT."""
    writer.close()
    try:
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.wait_closed()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise
    except Exception:  # the client went away in whatever way: nothing more to give it
        writer.transport.abort()


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: Handler,
    allowed: Callable[[int], bool],
) -> None:
    """Serve requests on one connection until it closes; never raises."""
    uid = peer_uid(writer)
    inp = _Input(reader)
    try:
        if not allowed(uid):
            log.warning("refused a control connection from uid %d", uid)
            resp = Response.error(403, "permission_denied", "this socket is for its owner and root")
            await _write_response(writer, resp, keep=False)
            return
        while True:
            try:
                request = await _read_request(inp)
            except BadRequest as e:
                await _write_response(writer, Response.error(e.status, e.code, str(e)), keep=False)
                return
            if request is None:
                return
            method, path, query, headers, body = request
            req = Request(method, path, query, headers, body, peer_uid=uid)
            keep = headers.get("connection", "").lower() != "close"
            try:
                resp = await handler(req)
            except Exception:
                log.exception("internal error serving %s %s", method, path)
                resp = Response.error(500, "internal", "internal error; see the daemon's log")
            if resp.stream is not None:
                watch = asyncio.ensure_future(_watch_eof(reader, req.disconnected))
                try:
                    await _write_response(writer, resp, keep=False)
                finally:
                    watch.cancel()
                return
            await _write_response(writer, resp, keep)
            if not keep:
                return
    except OSError:  # the client went away, or did not take an answer in time (TimeoutError)
        return
    finally:
        await _close(writer)


async def _watch_eof(reader: asyncio.StreamReader, event: asyncio.Event) -> None:
    with contextlib.suppress(Exception):
        while await reader.read(4096):
            pass
    event.set()


# --- accepting ------------------------------------------------------------------------------
ConnectedCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class UnixServer(asyncio.AbstractServer):
    """A listening unix socket whose accept loop backs off when descriptors run out.

    asyncio's own loop, when accept() fails with EMFILE, logs the error with a traceback for
    every remaining attempt of its batch and schedules a retry per attempt: at the open file
    limit a daemon wrote thousands of tracebacks a second. Here accepting stops for a short
    interval that doubles while the failures go on (ACCEPT_PAUSE_MIN up to ACCEPT_PAUSE_MAX),
    with one log line per pause; clients meanwhile wait in the listen backlog.
    """

    def __init__(
        self, sock: socket.socket, callback: ConnectedCallback, *, limit: int = MAX_HEAD
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = sock
        self._callback = callback
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()
        self._resume: asyncio.TimerHandle | None = None
        self._pause_for = 0.0
        self._resumed_at = 0.0
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        sock = self._sock
        assert sock is not None
        for taken in range(ACCEPT_BATCH):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _NO_RESOURCES:
                    self._pause(e, progress=taken > 0)
                    return
                # ECONNABORTED and the like: that one client is gone, the next may be waiting.
                log.debug("accept on the control socket: %s", e)
                continue
            conn.setblocking(False)
            task = self._loop.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _pause(self, err: OSError, *, progress: bool) -> None:
        assert self._sock is not None
        now = self._loop.time()
        if progress:
            # Connections were taken before the limit was hit: their descriptors come back as
            # soon as their tasks run, so this is a burst (a backlog full of clients that
            # already hung up, say), not a daemon starved of descriptors. Come back after
            # the shortest pause, without growing it: growing it here made a backlog of a
            # thousand take minutes to drain.
            log.debug("%s in a burst: accepting again in %.1fs", err.strerror, ACCEPT_PAUSE_MIN)
            self._loop.remove_reader(self._sock.fileno())
            self._resume = self._loop.call_later(ACCEPT_PAUSE_MIN, self._unpause)
            return
        if self._pause_for and now - self._resumed_at < ACCEPT_CALM:
            self._pause_for = min(self._pause_for * 2, ACCEPT_PAUSE_MAX)
        else:
            self._pause_for = ACCEPT_PAUSE_MIN
        why = err.strerror or str(err)
        if err.errno == errno.EMFILE:
            why += f" (the open file limit is {resource.getrlimit(resource.RLIMIT_NOFILE)[0]})"
        log.warning("%s: not accepting control connections for %.1fs", why, self._pause_for)
        self._loop.remove_reader(self._sock.fileno())
        self._resume = self._loop.call_later(self._pause_for, self._unpause)

    def _unpause(self) -> None:
        self._resume = None
        if self._sock is not None:
            self._resumed_at = self._loop.time()
            self._loop.add_reader(self._sock.fileno(), self._accept)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=self._limit)
        except OSError as e:
            conn.close()
            log.debug("cannot set up a control connection: %s", e)
            return
        try:
            await self._callback(reader, writer)
        except Exception:
            log.exception("a control connection failed")
            writer.transport.abort()

    def close(self) -> None:
        """Stop listening; connections already accepted go on until they end."""
        if self._sock is None:
            return
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        else:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        self._closed.set_result(None)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._sock is not None

    async def start_serving(self) -> None:
        """Serving starts when the server is made."""

    async def serve_forever(self) -> None:
        """Return once the server is closed."""
        await asyncio.shield(self._closed)

    async def wait_closed(self) -> None:
        """Return once the server is closed (connections going on are not waited for)."""
        await asyncio.shield(self._closed)


async def start_unix_server(
    client_connected_cb: ConnectedCallback,
    *,
    path: str,
    limit: int = MAX_HEAD,
    backlog: int = ACCEPT_BACKLOG,
) -> UnixServer:
    """Listen on the unix socket ``path`` (created with the caller's umask) and call
    ``client_connected_cb(reader, writer)`` for each connection, like
    asyncio.start_unix_server, but backing off instead of spinning when accept() runs out of
    descriptors."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
        sock.setblocking(False)
        return UnixServer(sock, client_connected_cb, limit=limit)
    except BaseException:
        sock.close()
        raise
