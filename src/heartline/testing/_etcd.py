"""A real single-member etcd on loopback, for heartline's tests and for your own.

The server runs in its own process group with its own data directory and free ports on
127.0.0.1; ``stop``/``kill`` end that whole group and wait for it, ``restart`` brings it back on
the same ports with the same data (leases and keys survive, as in production).

It is tuned to start and elect itself quickly (20 ms heartbeats, 200 ms election timeout),
which also lets it grant leases as short as one second.

With ``tls=True`` it serves HTTPS only and asks every client for a certificate
(``--client-cert-auth``), as a production etcd does: a CA, its server certificate and a
client certificate are made next to the data directory with the ``openssl`` command
(:attr:`EtcdServer.tls`), and :attr:`EtcdServer.credentials` hands them to heartline.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from heartline._util import ETCD_BINARY, TlsFiles, etcd_argv, etcd_serves, make_tls_files
from heartline.testing._process import ServerProcess

_START_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EtcdServer(ServerProcess):
    """One etcd process on 127.0.0.1, started with :meth:`start` (or ``with EtcdServer(...)``).

    ``data_dir`` is created when missing; etcd's own log goes to ``log_path`` (next to it, with
    a ``.log`` suffix), and with ``tls`` its certificates to a ``.tls`` directory next to it.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        client_port: int | None = None,
        peer_port: int | None = None,
        tls: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        self.tls_dir = self.data_dir.with_name(self.data_dir.name + ".tls")
        self.client_port = client_port or _free_port()
        self.peer_port = peer_port or _free_port()
        while self.peer_port == self.client_port:
            self.peer_port = _free_port()
        self.binary = ETCD_BINARY
        self.use_tls = tls
        #: The TLS files (made at the first start), with ``tls=True``.
        self.tls: TlsFiles | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # --- addresses --------------------------------------------------------------------------
    @property
    def endpoint(self) -> tuple[str, int]:
        """``("127.0.0.1", client_port)``."""
        return ("127.0.0.1", self.client_port)

    @property
    def url(self) -> str:
        """The lock URL heartline takes: ``etcd://127.0.0.1:PORT`` (``etcds://`` with TLS)."""
        return f"{'etcds' if self.use_tls else 'etcd'}://127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        """etcd's own client URL (``http://127.0.0.1:PORT``, https with TLS), e.g. for
        ``etcdctl``."""
        return f"{'https' if self.use_tls else 'http'}://127.0.0.1:{self.client_port}"

    @property
    def credentials(self) -> dict[str, str]:
        """With TLS: ``ca_file``, ``cert_file`` and ``key_file`` for ``Lock``, ``open_backend``
        or ``open_entries`` (``**server.credentials``); empty without."""
        if self.tls is None:
            return {}
        return {"ca_file": self.tls.ca, "cert_file": self.tls.client_cert,
                "key_file": self.tls.client_key}  # fmt: skip

    # --- life -------------------------------------------------------------------------------
    def argv(self) -> list[str]:
        return etcd_argv(
            data_dir=str(self.data_dir), client_url=self.client_url,
            peer_url=f"http://127.0.0.1:{self.peer_port}", tls=self.tls,
            cluster="heartline-test", binary=self.binary,
        )  # fmt: skip

    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Spawn etcd and wait until it serves requests; raises RuntimeError if it does not."""
        if self.running:
            return
        if not os.path.exists(self.binary):
            raise RuntimeError(
                f"{self.binary} is missing: install etcd (apt-get install etcd-server)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.use_tls and self.tls is None:
            self.tls_dir.mkdir(mode=0o700, exist_ok=True)
            self.tls = make_tls_files(str(self.tls_dir), ips=["127.0.0.1"], names=["localhost"],
                                      days=2)  # fmt: skip
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
        context = self.tls.client_context() if self.tls is not None else None
        while not etcd_serves("127.0.0.1", self.client_port, context):
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

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<EtcdServer {self.client_url} {state}>"
