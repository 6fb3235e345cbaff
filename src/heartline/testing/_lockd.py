"""A real lockd on loopback, for tests (heartline's and yours)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LockdServer:
    """``heartline lockd`` in its own process group on 127.0.0.1, with its data in ``data_dir``.

    ``kill()`` and ``restart()`` keep the port and the data, as an operator's restart would.
    """

    def __init__(
        self, data_dir: str | Path | None, *, port: int | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.port = port or free_port()
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"heartline://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def argv(self) -> list[str]:
        data = ["--no-data"] if self.data_dir is None else ["--data", str(self.data_dir)]
        listen = ["--listen", f"127.0.0.1:{self.port}"]
        return [sys.executable, "-m", "heartline", "lockd", *listen, *data, *self.args]

    def start(self, timeout: float = 15.0) -> None:
        self.proc = subprocess.Popen(
            self.argv(), stdout=subprocess.PIPE, stderr=None, start_new_session=True
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while b"\n" not in line:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
            if not ready:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"lockd did not start within {timeout}s")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                code = self.proc.wait()
                raise RuntimeError(f"lockd exited with code {code} before it was ready")
            line += chunk

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGKILL) -> None:
        self.stop(sig)
        self.start()

    def __enter__(self) -> LockdServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<LockdServer {self.url} pid={self.pid}>"
