"""A real single-member etcd on loopback, for heartline's tests and for your own.

The server runs in its own process group with its own data directory and free ports on
127.0.0.1; ``stop``/``kill`` end that whole group and wait for it, ``restart`` brings it back on
the same ports with the same data (leases and keys survive, as in production).

It is tuned to start and elect itself quickly (20 ms heartbeats, 200 ms election timeout),
which also lets it grant leases as short as one second.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import time
from pathlib import Path

from heartline.testing._process import ServerProcess

ETCD_BINARY = "/usr/bin/etcd"
_START_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EtcdServer(ServerProcess):
    """One etcd process on 127.0.0.1, started with :meth:`start` (or ``with EtcdServer(...)``).

    ``data_dir`` is created when missing; etcd's own log goes to ``log_path`` (next to it, with
    a ``.log`` suffix).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        client_port: int | None = None,
        peer_port: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        self.client_port = client_port or _free_port()
        self.peer_port = peer_port or _free_port()
        while self.peer_port == self.client_port:
            self.peer_port = _free_port()
        self.binary = ETCD_BINARY
        self._proc: subprocess.Popen[bytes] | None = None

    # --- addresses --------------------------------------------------------------------------
    @property
    def endpoint(self) -> tuple[str, int]:
        """``("127.0.0.1", client_port)``."""
        return ("127.0.0.1", self.client_port)

    @property
    def url(self) -> str:
        """The lock URL heartline takes: ``etcd://127.0.0.1:PORT``."""
        return f"etcd://127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        """etcd's own client URL (``http://127.0.0.1:PORT``), e.g. for ``etcdctl``."""
        return f"http://127.0.0.1:{self.client_port}"

    # --- life -------------------------------------------------------------------------------
    def argv(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            self.binary,
            "--name=default",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--initial-cluster-state=new",
            "--initial-cluster-token=heartline-test",
            "--heartbeat-interval=20",
            "--election-timeout=200",
            "--logger=zap",
            "--log-outputs=stderr",
        ]

    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Spawn etcd and wait until it serves requests; raises RuntimeError if it does not."""
        if self.running:
            return
        if not os.path.exists(self.binary):
            raise RuntimeError(
                f"{self.binary} is missing: install etcd (apt-get install etcd-server)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._serving():
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"etcd exited with {code} at start:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"etcd did not answer on {self.client_url} within {timeout:g}s:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(0.02)

    def _serving(self) -> bool:
        """etcd answers a (linearizable) range: it has a leader and applies requests."""
        conn = http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=1.0)
        try:
            conn.request(
                "POST",
                "/v3/kv/range",
                body=b'{"key": "AA=="}',
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<EtcdServer {self.client_url} {state}>"
