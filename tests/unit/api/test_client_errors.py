"""How the CLI reports what the daemon (or its absence) says: one line, a distinct exit code.

A small unix-socket server stands in for the daemon's answers here; the real daemon giving
these answers is covered by the integration tests (403 to another uid, 404 for a name).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
from collections.abc import Iterator

import pytest

from heartline.api import Client
from heartline.cli import main
from heartline.errors import DaemonNotRunning, PermissionDenied, ProtocolError, UnknownProgram


@contextlib.contextmanager
def answering(reply: bytes) -> Iterator[str]:
    """A unix socket that answers every connection with ``reply`` and closes."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s")
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path)
        srv.listen()

        def serve() -> None:
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(65536)
                    conn.sendall(reply)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            yield path
        finally:
            srv.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            srv.close()
            t.join(5)


def _json(status: int, doc: object) -> bytes:
    body = json.dumps(doc).encode()
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


def test_403_is_permission_denied_exit_5(capsys: pytest.CaptureFixture[str]) -> None:
    """A refused peer: PermissionDenied; the CLI prints one line and exits 5."""
    reply = _json(403, {"error": {"code": "permission_denied", "message": "for its owner"}})
    with answering(reply) as path:
        with pytest.raises(PermissionDenied):
            Client(path).get("/v1/status")
        with pytest.raises(SystemExit) as exc:
            main(["-s", path, "status"])
    assert exc.value.code == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "for its owner" in err


def test_unknown_program_exit_4(capsys: pytest.CaptureFixture[str]) -> None:
    """404 unknown_program: UnknownProgram naming the program; exit 4."""
    reply = _json(404, {"error": {"code": "unknown_program", "message": "x", "name": "web"}})
    with answering(reply) as path:
        with pytest.raises(UnknownProgram) as e:
            Client(path).get("/v1/status")
        assert e.value.name == "web"
        with pytest.raises(SystemExit) as exc:
            main(["-s", path, "status", "web"])
    assert exc.value.code == 4


def test_garbage_answer_is_a_protocol_error_exit_7(capsys: pytest.CaptureFixture[str]) -> None:
    """An answer that is not HTTP: ProtocolError, exit 7, no traceback."""
    with answering(b"SSH-2.0-OpenSSH\r\n\r\n") as path:
        with pytest.raises(ProtocolError):
            Client(path).get("/v1/status")
        with pytest.raises(SystemExit) as exc:
            main(["-s", path, "status"])
    assert exc.value.code == 7
    assert "Traceback" not in capsys.readouterr().err


def test_no_socket_is_daemon_not_running_exit_3(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing at the socket path: DaemonNotRunning, exit 3, a hint to run `heartline up`."""
    path = str(tmp_path / "nothing.sock")
    with pytest.raises(DaemonNotRunning):
        Client(path).get("/v1/status")
    with pytest.raises(SystemExit) as exc:
        main(["-s", path, "status"])
    assert exc.value.code == 3
    assert "heartline up" in capsys.readouterr().err


def test_usage_errors_exit_2_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown commands and options: one line on stderr, exit 2."""
    for argv in (["bogus"], ["status", "--bogus"], ["logs"], ["logs", "x", "-n", "-1"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("heartline: "), (argv, err)


def _fill_backlog(path: str) -> list[socket.socket]:
    """Connect to ``path`` until the kernel refuses more (its listen backlog is full)."""
    fillers: list[socket.socket] = []
    for _ in range(64):
        s = socket.socket(socket.AF_UNIX)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            return fillers
        fillers.append(s)
    raise AssertionError("the listen backlog never filled")


def test_a_full_listen_backlog_is_waited_out_not_reported_as_no_daemon() -> None:
    """A burst of clients fills the daemon's listen backlog: the next client waits for room
    (as a blocking connect would) instead of failing with 'Resource temporarily unavailable'."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s")
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path)
        srv.listen(1)
        fillers = _fill_backlog(path)
        freed = threading.Event()

        def drain_later() -> None:
            freed.wait(0.2)  # the client is refused at first, then room appears
            for _ in fillers:
                srv.accept()[0].close()

        t = threading.Thread(target=drain_later, daemon=True)
        t.start()
        try:
            c = Client(path, timeout=5)
            c._connect()
            assert c._sock is not None
        finally:
            c.close()
            for s in fillers:
                s.close()
            t.join(5)
            srv.close()


def test_a_backlog_that_stays_full_fails_after_the_timeout() -> None:
    """If no room appears within the client's timeout, the error names the socket."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s")
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path)
        srv.listen(1)
        fillers = _fill_backlog(path)
        try:
            with pytest.raises(DaemonNotRunning, match=r"cannot connect to .*s: Resource"):
                Client(path, timeout=0.3)._connect()
        finally:
            for s in fillers:
                s.close()
            srv.close()
