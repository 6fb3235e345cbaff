"""Active health checks, the autossh way: probe the service end to end, on a deadline.

Every attempt runs on the event loop with its own timeout, so a check that hangs (a black-holed
address, a stuck exec) fails at its timeout and never blocks the daemon or other programs. An
exec check runs in its own process group and is killed with it at the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
from urllib.parse import urlsplit

from heartline._util import signal_group
from heartline.config import CheckSpec
from heartline.supervise._process import SpawnFailed, reap, spawn

MAX_BODY = 64 * 1024


async def run_check(spec: CheckSpec, env: dict[str, str]) -> tuple[bool, str]:
    """One attempt: (passed, what happened)."""
    try:
        async with asyncio.timeout(spec.timeout):
            if spec.exec is not None:
                return await _exec(spec.exec, env)
            assert spec.url is not None
            parts = urlsplit(spec.url)
            if parts.scheme == "tcp":
                _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return True, "connected"
            return await _http(spec)
    except TimeoutError:
        return False, f"no answer within {spec.timeout:g}s"
    except OSError as e:
        # asyncio words a refused connect as "Connect call failed (...)": name the errno.
        return False, os.strerror(e.errno) if e.errno else str(e)


async def _http(spec: CheckSpec) -> tuple[bool, str]:
    assert spec.url is not None
    parts = urlsplit(spec.url)
    https = parts.scheme == "https"
    ctx: ssl.SSLContext | None = None
    if https:
        ctx = ssl.create_default_context()
        if spec.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    port = parts.port or (443 if https else 80)
    reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=ctx)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: heartline-check\r\n"
            "Connection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        status_line = await reader.readline()
        fields = status_line.split(b" ", 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
            return False, "not an HTTP answer"
        status = int(fields[1])
        lo, hi = spec.status
        if not lo <= status <= hi:
            return False, f"HTTP {status}"
        if spec.body is not None:
            data = await reader.read(MAX_BODY)
            while len(data) < MAX_BODY and (more := await reader.read(MAX_BODY - len(data))):
                data += more
            head, _, body = data.partition(b"\r\n\r\n")
            if _chunked(head):
                body = _dechunk(body)
            if spec.body.encode() not in body:
                return False, f"HTTP {status}, body lacks {spec.body!r}"
        return True, f"HTTP {status}"
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def _chunked(head: bytes) -> bool:
    """Whether the response headers say the body is in chunks (Transfer-Encoding: chunked)."""
    for line in head.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"transfer-encoding":
            return b"chunked" in value.lower()
    return False


def _dechunk(raw: bytes) -> bytes:
    """The payload of a chunked body, as much as arrived (a match may span chunks)."""
    out: list[bytes] = []
    while raw:
        size_line, sep, rest = raw.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip() or b"x", 16)
        except ValueError:
            break
        if not sep or size == 0:
            break
        out.append(rest[:size])
        raw = rest[size + 2 :]
    return b"".join(out)


async def _exec(argv: tuple[str, ...], env: dict[str, str]) -> tuple[bool, str]:
    try:
        sp = spawn(list(argv), env=env, capture=False, discard=True)
    except SpawnFailed as e:
        return False, str(e)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.add_reader(sp.pidfd, lambda: None if done.done() else done.set_result(None))
    try:
        await done
    except BaseException:  # timed out or cancelled: end the whole check group, then reap
        loop.remove_reader(sp.pidfd)
        signal_group(sp.pid, signal.SIGKILL)
        os.waitid(os.P_PIDFD, sp.pidfd, os.WEXITED)
        os.close(sp.pidfd)
        raise
    loop.remove_reader(sp.pidfd)
    info = reap(sp.pidfd, lambda: signal_group(sp.pid, signal.SIGKILL))
    os.close(sp.pidfd)
    if info is not None and info.reason == "exit" and info.code == 0:
        return True, "exit 0"
    return False, info.describe() if info else "no exit status"
