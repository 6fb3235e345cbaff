"""What the test servers share: a process group to stop, kill and start again."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from types import TracebackType
from typing import TypeVar

S = TypeVar("S", bound="ServerProcess")


class ServerProcess:
    """A server run in its own process group; subclasses say how to ``start()`` it."""

    _proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Send ``sig`` to the server's process group and wait (SIGKILL after ``timeout``)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would."""
        self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server with ``sig`` and start it again, same address, same data."""
        self.stop(sig)
        self.start()

    def __enter__(self: S) -> S:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
