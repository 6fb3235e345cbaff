"""A real lockd on loopback, for tests (heartline's and yours)."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from heartline.testing._process import ServerProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LockdServer(ServerProcess):
    """``heartline lockd`` in its own process group on 127.0.0.1, with its data in ``data_dir``.

    ``kill()`` and ``restart()`` keep the port and the data, as an operator's restart would.
    """

    def __init__(
        self, data_dir: str | Path | None, *, port: int | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.port = port or free_port()
        self.args = args
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"heartline://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        data = ["--no-data"] if self.data_dir is None else ["--data", str(self.data_dir)]
        listen = ["--listen", f"127.0.0.1:{self.port}"]
        return [sys.executable, "-m", "heartline", "lockd", *listen, *data, *self.args]

    def start(self, timeout: float = 15.0) -> None:
        self._proc = subprocess.Popen(
            self.argv(), stdout=subprocess.PIPE, stderr=None, start_new_session=True
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while b"\n" not in line:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._proc.stdout], [], [], max(0.0, left))
            if not ready:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"lockd did not start within {timeout}s")
            chunk = os.read(self._proc.stdout.fileno(), 4096)
            if not chunk:
                code = self._proc.wait()
                raise RuntimeError(f"lockd exited with code {code} before it was ready")
            line += chunk

    def __repr__(self) -> str:
        return f"<LockdServer {self.url} pid={self.pid}>"
