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

_READY = "lockd ready on port "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LockdServer(ServerProcess):
    """``heartline lockd`` in its own process group on 127.0.0.1, with its data in ``data_dir``.

    ``kill()`` and ``restart()`` keep the port and the data, as an operator's restart would.
    """

    def __init__(
        self,
        data_dir: str | Path | None,
        *,
        port: int | None = None,
        args: tuple[str, ...] = (),
        stderr_path: str | Path | None = None,
    ) -> None:
        """``port`` None picks a free one now (kept across restarts); 0 lets lockd pick."""
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.port = free_port() if port is None else port
        self._asked_port = self.port
        self.args = args
        self.stderr_path = None if stderr_path is None else Path(stderr_path)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"heartline://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        data = ["--no-data"] if self.data_dir is None else ["--data", str(self.data_dir)]
        listen = ["--listen", f"127.0.0.1:{self._asked_port}"]
        return [sys.executable, "-m", "heartline", "lockd", *listen, *data, *self.args]

    def start(self, timeout: float = 15.0) -> None:
        err = None
        if self.stderr_path is not None:
            self.stderr_path.parent.mkdir(parents=True, exist_ok=True)
            err = open(self.stderr_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self._proc = subprocess.Popen(
                self.argv(), stdout=subprocess.PIPE, stderr=err, start_new_session=True
            )
        finally:
            if err is not None:
                err.close()
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        out = b""
        while b"\n" not in out:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._proc.stdout], [], [], max(0.0, left))
            if not ready:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"lockd did not start within {timeout}s: {self.stderr()}")
            chunk = os.read(self._proc.stdout.fileno(), 4096)
            if not chunk:
                code = self._proc.wait()
                raise RuntimeError(f"lockd exited with code {code} before it was ready: "
                                   f"{self.stderr()}")  # fmt: skip
            out += chunk
        line = out.split(b"\n", 1)[0].decode()
        if line.startswith(_READY):
            self.port = int(line[len(_READY) :])

    def stderr(self) -> str:
        """What lockd wrote to ``stderr_path`` (empty when its stderr is not kept)."""
        if self.stderr_path is None:
            return ""
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"<LockdServer {self.url} pid={self.pid}>"
