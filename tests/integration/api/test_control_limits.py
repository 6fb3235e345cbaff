"""The control server under abuse, against a real daemon: stalled requests are timed out."""

from __future__ import annotations

import contextlib
import json
import socket
import time

from heartline.daemon._http import READ_TIMEOUT, REQUEST_TIMEOUT

SLEEPER = '[programs.web]\ncommand = ["/bin/sleep", "3600"]\n'


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)  # blocking: waits for room in the daemon's backlog (a timeout would not)
    s.settimeout(10)
    return s


def read_all(s: socket.socket, timeout: float) -> bytes:
    """Everything the daemon sends until it closes; fail if it keeps the connection open."""
    s.settimeout(timeout)
    out = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_requests_stalled_in_the_head_or_the_body_are_timed_out(make_daemon):
    """200 clients that start a request and stall (inside the head, or after the head inside
    the body) are each answered 408 and disconnected once READ_TIMEOUT passes without a byte;
    meanwhile and afterwards the daemon answers everyone else."""
    d = make_daemon(SLEEPER)
    stalled: list[socket.socket] = []
    try:
        for i in range(200):
            s = connect(d.socket)
            if i % 2:
                s.sendall(b'POST /v1/start HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"names": [')
            else:
                s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: heart")
            stalled.append(s)
        began = time.monotonic()
        assert d.status()["web"]["state"] == "running"
        for s in stalled:
            got = read_all(s, READ_TIMEOUT + 10)
            assert got.startswith(b"HTTP/1.1 408 "), got[:80]
            assert b'"code": "timeout"' in got
        assert time.monotonic() - began < READ_TIMEOUT + 10
        assert d.status()["web"]["state"] == "running"
    finally:
        for s in stalled:
            s.close()
    assert "Traceback" not in d.log.read_text()


def test_a_slow_client_that_keeps_sending_is_served(make_daemon):
    """A client sending its request a few bytes at a time, never pausing as long as
    READ_TIMEOUT, gets its answer."""
    d = make_daemon(SLEEPER)
    raw = b"GET /v1/status?name=web HTTP/1.1\r\nHost: heartline\r\nConnection: close\r\n\r\n"
    pause = 0.3
    assert pause < READ_TIMEOUT and pause * len(raw) / 8 < REQUEST_TIMEOUT
    with connect(d.socket) as s:
        for i in range(0, len(raw), 8):
            s.sendall(raw[i : i + 8])
            time.sleep(pause)  # the slowness under test, well inside the limits
        got = read_all(s, 10)
    assert got.startswith(b"HTTP/1.1 200 "), got[:80]
    assert json.loads(got.split(b"\r\n\r\n", 1)[1])["programs"][0]["name"] == "web"
