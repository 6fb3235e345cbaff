"""A real ``heartline lockd`` for the lockd fuzz, auth and TLS tests, and a raw protocol client.

The server runs in its own process group; ``stop()`` kills the whole group and is safe to call
twice, so fixtures call it in ``finally`` whatever the test did.
"""

from __future__ import annotations

import contextlib
import json
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from heartline import Lock
from heartline.testing import LockdServer

HEARTLINE = [sys.executable, "-m", "heartline"]
HELLO = {"op": "hello", "v": 1, "ttl": 5, "host": "t", "pid": 1}


class Lockd(LockdServer):
    """``heartline lockd --listen 127.0.0.1:0`` (lockd picks the port, read from its ready
    line), its stderr kept next to its data directory."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        super().__init__(data_dir, port=0, args=args,
                         stderr_path=data_dir.parent / f"{data_dir.name}.stderr")  # fmt: skip

    def start(self, timeout: float = 15.0) -> Lockd:  # type: ignore[override]
        super().start(timeout)
        return self

    def alive(self) -> bool:
        return self.running

    def stop(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        super().stop(sig, timeout)


class Raw:
    """A raw protocol client over one TCP connection, reading line by line."""

    def __init__(self, port: int, *, hello: bool = True, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.eof = False
        self.next_id = 0
        if hello:
            self.send(HELLO)
            answer = self.read(timeout)
            assert answer is not None and answer.get("ok") is True, answer

    def send(self, frame: dict[str, Any]) -> None:
        self.sendraw(json.dumps(frame).encode() + b"\n")

    def sendraw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, frame: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send ``frame`` with a fresh id and return the answer with that id (pushes and other
        answers read meanwhile are returned by ``drain`` later)."""
        self.next_id += 1
        frame = dict(frame, id=self.next_id)
        self.send(frame)
        return self.wait_id(self.next_id, timeout)

    def wait_id(self, rid: int, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.read(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise AssertionError(f"no answer to request {rid} (eof={self.eof})")
            self.seen.append(msg)
            if msg.get("id") == rid:
                return msg

    @property
    def seen(self) -> list[dict[str, Any]]:
        if not hasattr(self, "_seen"):
            self._seen: list[dict[str, Any]] = []
        return self._seen

    def read(self, timeout: float) -> dict[str, Any] | None:
        """The next line as JSON, or None at EOF or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                return None
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        msg = json.loads(line)
        assert isinstance(msg, dict)
        return msg

    def drain(self) -> list[dict[str, Any]]:
        """Everything already sent to us, without waiting."""
        out = []
        while (msg := self.read(0.0 if b"\n" in self.buf else 0.001)) is not None:
            out.append(msg)
        self.seen.extend(out)
        return out

    def read_all_until_eof(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Every line up to EOF; fails if the server does not close within ``timeout``."""
        deadline = time.monotonic() + timeout
        out = []
        while True:
            msg = self.read(max(0.0, deadline - time.monotonic()))
            if msg is None:
                if not self.eof:
                    raise AssertionError(f"lockd did not close the connection; got {out}")
                return out
            out.append(msg)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def openssl_self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 made with the openssl CLI."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def lock_round_trip(lock: Lock) -> None:
    """``lock`` (waiting up to its own ``wait``) is granted, listed as the one lock, released
    and gone from the list; closed afterwards whatever happened."""
    try:
        with lock:
            assert lock.token > 0
            assert [i.name for i in lock.backend.locks()] == [lock.name]
        assert lock.backend.locks() == []
    finally:
        lock.close()
