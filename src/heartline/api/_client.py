"""A small synchronous HTTP/1.1 client for the control socket.

Standard library only and import-light: a cold `heartline status` pays for nothing it does not use.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from heartline.errors import (
    ControlError,
    DaemonNotRunning,
    PermissionDenied,
    ProtocolError,
    UnknownProgram,
)

if TYPE_CHECKING:
    from heartline.api._messages import ProgramStatus, StatusReply, StopResult

MAX_RESPONSE = 64 * 1024 * 1024


def default_socket_path(run_dir: str) -> str:
    return os.path.join(run_dir, "heartline.sock")


class ApiError(ControlError):
    """The daemon refused a request; ``code`` is the API's error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(message)
        if status == 422:
            self.exit_code = 2


class Client:
    """One connection to the daemon's control socket (opened lazily, kept alive)."""

    def __init__(self, socket_path: str, *, timeout: float | None = 120.0) -> None:
        self.path = socket_path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            s.settimeout(self.timeout)
            try:
                self._connect_waiting(s)
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                raise DaemonNotRunning(
                    f"no heartline daemon answers on {self.path} (start one with `heartline up`)"
                ) from None
            except PermissionError:
                s.close()
                raise PermissionDenied(
                    f"permission denied on {self.path}: the socket belongs to another user"
                ) from None
            except OSError as e:
                s.close()
                raise DaemonNotRunning(f"cannot connect to {self.path}: {e.strerror}") from None
            self._sock = s
            self._buf = b""
        return self._sock

    def _connect_waiting(self, s: socket.socket) -> None:
        """Connect, waiting while the daemon's listen backlog is full. A unix socket with a
        timeout is non-blocking underneath, and Linux answers EAGAIN rather than queueing the
        caller when the backlog is full (a burst of clients, a daemon busy for a moment); a
        blocking client would have waited, so this one waits too, up to its own timeout."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        pause = 0.001
        while True:
            try:
                s.connect(self.path)
                return
            except BlockingIOError:
                if deadline is not None and time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.05)

    # --- requests -------------------------------------------------------------------------
    def request(self, method: str, path: str, body: object = None) -> Any:
        """Send one request; return the decoded JSON, or raise the matching error."""
        status, headers, data = self._exchange(method, path, body)
        return self._decode(status, headers, data)

    def stream(self, path: str) -> Iterator[bytes]:
        """GET a chunked stream (``logs --follow``), yielding chunks as they come."""
        sock = self._connect()
        sock.sendall(self._head("GET", path, b""))
        status, headers = self._read_head()
        if headers.get("transfer-encoding") != "chunked":
            data = self._read_body(headers)
            self.close()
            if status != 200:
                self._decode(status, headers, data)
            yield data
            return
        sock.settimeout(None)
        while True:
            try:
                size = int(self._read_line().split(b";")[0], 16)
                chunk = self._read_exact(size + 2)[:-2] if size else b""
            except (ConnectionError, ValueError):
                self.close()
                raise ControlError(
                    "the daemon ended the stream (it stopped, or this reader fell too far behind)"
                ) from None
            if size == 0:
                self.close()
                return
            yield chunk

    # --- typed calls (the messages are in api/_messages) --------------------------------
    def status(self, names: Iterable[str] = (), *, resources: bool = False) -> StatusReply:
        """The daemon and its programs (``names``: only these)."""
        query: dict[str, Any] = {"name": list(names)} if names else {}
        if resources:
            query["resources"] = "true"
        reply: StatusReply = self.get("/v1/status", **query)
        return reply

    def start(self, names: Iterable[str]) -> list[ProgramStatus]:
        progs: list[ProgramStatus] = self.post("/v1/start", {"names": list(names)})["programs"]
        return progs

    def stop(self, names: Iterable[str]) -> list[StopResult]:
        results: list[StopResult] = self.post("/v1/stop", {"names": list(names)})["results"]
        return results

    def restart(self, names: Iterable[str]) -> list[ProgramStatus]:
        progs: list[ProgramStatus] = self.post("/v1/restart", {"names": list(names)})["programs"]
        return progs

    def shutdown(self) -> None:
        """Ask the daemon to stop every program and exit (it answers first)."""
        self.post("/v1/shutdown", {})

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", self.url(path, **query))

    def post(self, path: str, body: object) -> Any:
        return self.request("POST", path, body)

    @staticmethod
    def url(path: str, **query: Any) -> str:
        pairs = [
            (k, v)
            for k, vals in query.items()
            for v in (vals if isinstance(vals, list) else [vals])
        ]
        return quote(path) + ("?" + urlencode(pairs) if pairs else "")

    # --- wire -----------------------------------------------------------------------------
    def _head(self, method: str, path: str, payload: bytes) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", "Host: heartline"]
        if payload or method == "POST":
            lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload

    def _exchange(self, method: str, path: str, body: object) -> tuple[int, dict[str, str], bytes]:
        payload = json.dumps(body).encode() if body is not None else b""
        for attempt in (0, 1):
            fresh = self._sock is None
            sock = self._connect()
            try:
                sock.sendall(self._head(method, path, payload))
                status, headers = self._read_head()
                data = self._read_body(headers)
            except (ConnectionError, ProtocolError) as e:
                self.close()
                # A kept-alive connection may have been closed by the daemon in between: retry
                # once on a fresh one. A fresh connection failing is a real error.
                if fresh or attempt:
                    if isinstance(e, ProtocolError):
                        raise
                    raise DaemonNotRunning(
                        f"the daemon closed the connection on {self.path}"
                    ) from None
                continue
            except TimeoutError:
                self.close()
                raise ControlError(f"the daemon did not answer within {self.timeout:g}s") from None
            if headers.get("connection", "").lower() == "close":
                self.close()
            return status, headers, data
        raise AssertionError("unreachable")  # pragma: no cover

    def _fill(self) -> None:
        assert self._sock is not None
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("closed")
        self._buf += chunk

    def _read_line(self) -> bytes:
        while b"\r\n" not in self._buf:
            if len(self._buf) > 64 * 1024:
                raise ProtocolError("the daemon sent an over-long line")
            self._fill()
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _read_head(self) -> tuple[int, dict[str, str]]:
        status_line = self._read_line()
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError("the daemon sent a malformed status line")
        headers: dict[str, str] = {}
        while True:
            line = self._read_line()
            if not line:
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        return int(parts[1]), headers

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding") == "chunked":
            out: list[bytes] = []
            while True:
                size = int(self._read_line().split(b";")[0], 16)
                if size == 0:
                    self._read_line()
                    return b"".join(out)
                out.append(self._read_exact(size + 2)[:-2])
        length = int(headers.get("content-length", "0"))
        if length > MAX_RESPONSE:
            raise ProtocolError("the daemon's answer is too large")
        return self._read_exact(length)

    @staticmethod
    def _decode(status: int, headers: dict[str, str], data: bytes) -> Any:
        if not headers.get("content-type", "").startswith("application/json"):
            if status == 200:
                return data
            raise ApiError(
                status, "http", data.decode(errors="replace").strip() or f"HTTP {status}"
            )
        try:
            doc = json.loads(data) if data else None
        except ValueError:
            raise ProtocolError("the daemon sent invalid JSON") from None
        if status == 200:
            return doc
        err = (doc or {}).get("error", {}) if isinstance(doc, dict) else {}
        code, message = str(err.get("code", "http")), str(err.get("message", f"HTTP {status}"))
        if code == "unknown_program":
            raise UnknownProgram(str(err.get("name", "?")))
        if code == "move_refused":
            from heartline.errors import MoveRefused

            raise MoveRefused(message)
        if status == 403:
            raise PermissionDenied(message)
        raise ApiError(status, code, message)
