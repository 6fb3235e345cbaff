"""A small HTTP/1.1 server for the control API on a unix socket.

Only what the API needs: Content-Length bodies, keep-alive, chunked responses for streams.
Every limit is explicit, and anything malformed is answered with 400 and a closed connection:
nothing a client sends can raise out of here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
MAX_HEADERS = 100
IDLE_TIMEOUT = 120.0
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
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
        if not self.body:
            return {}
        return json.loads(self.body)


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


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
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


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise BadRequest(400, "connection closed inside the request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest(431, f"request head larger than {MAX_HEAD} bytes") from None
    return head


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


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "transfer-encoding" in headers:
        raise BadRequest(411, "chunked request bodies are not accepted; send Content-Length")
    raw = headers.get("content-length", "0")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise BadRequest(400, "malformed Content-Length")
    length = int(raw)
    if length > MAX_BODY:
        raise BadRequest(413, f"body larger than {MAX_BODY} bytes")
    if not length:
        return b""
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise BadRequest(400, "connection closed inside the body") from None


def _head_bytes(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _write_response(writer: asyncio.StreamWriter, resp: Response, keep: bool) -> None:
    headers = [("Content-Type", resp.content_type), *resp.headers]
    if resp.stream is None:
        headers.append(("Content-Length", str(len(resp.body))))
        headers.append(("Connection", "keep-alive" if keep else "close"))
        writer.write(_head_bytes(resp.status, headers) + resp.body)
        await writer.drain()
        return
    headers += [("Transfer-Encoding", "chunked"), ("Connection", "close")]
    writer.write(_head_bytes(resp.status, headers))
    async for chunk in resp.stream:
        if chunk:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: Handler,
    allowed: Callable[[int], bool],
) -> None:
    """Serve requests on one connection until it closes; never raises."""
    uid = peer_uid(writer)
    try:
        if not allowed(uid):
            log.warning("refused a control connection from uid %d", uid)
            resp = Response.error(403, "permission_denied", "this socket is for its owner and root")
            await _write_response(writer, resp, keep=False)
            return
        while True:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    head = await _read_head(reader)
                if head is None:
                    return
                method, path, query, headers = parse_head(head)
                body = await _read_body(reader, headers)
            except BadRequest as e:
                await _write_response(
                    writer, Response.error(e.status, "bad_request", str(e)), keep=False
                )
                return
            except TimeoutError:
                return
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
    except (ConnectionError, OSError):
        return
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _watch_eof(reader: asyncio.StreamReader, event: asyncio.Event) -> None:
    with contextlib.suppress(Exception):
        while await reader.read(4096):
            pass
    event.set()
