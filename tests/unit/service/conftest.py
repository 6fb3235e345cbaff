"""Fixtures for heartline.service: a supervisor's notify socket, and a clean notify state."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import TypeVar

import pytest

from heartline.service import _notify

T = TypeVar("T")


def pinger_running() -> bool:
    return any(t.name == "heartline-notify-pinger" for t in threading.enumerate())


class Supervisor:
    """The receiving end of NOTIFY_SOCKET, as systemd or the heartline daemon holds it."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def recv(self, timeout: float = 5.0) -> bytes:
        """The next datagram; fails when none comes within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"no datagram within {timeout}s") from None

    def quiet_for(self, seconds: float) -> list[bytes]:
        """Every datagram that arrives within ``seconds`` (to show that none does)."""
        got = []
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(65536))
            except TimeoutError:
                break
        return got


@pytest.fixture
def clean_notify(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No supervisor in the environment, and notify's state forgotten before and after."""
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    _notify._reset()
    yield
    _notify._reset()


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch, clean_notify: None) -> Iterator[Supervisor]:
    """A datagram socket bound in a short temporary directory, named by NOTIFY_SOCKET."""
    # A short directory: unix socket paths are limited to 107 bytes, and tmp_path can be longer.
    directory = tempfile.mkdtemp(prefix="hl-svc-")
    path = os.path.join(directory, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        yield Supervisor(sock, path)
    finally:
        _notify._reset()
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)
