"""Running a single-member etcd of one's own (the lab's backend, the tests' server): its
command line, whether it serves, and the TLS files for etcd's client-certificate
authentication, made with the ``openssl`` command.

The TLS files are a CA made for this one etcd, a server certificate for the addresses it
listens on, and a client certificate; the CA's key is deleted once both are signed, so nothing
else can ever be signed by it. The server certificate is good for client authentication too:
etcd's JSON gateway reaches the member's own gRPC port with it (with ``--client-cert-auth`` the
member asks the gateway for a certificate as it asks anyone).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import ssl

ETCD_BINARY = "/usr/bin/etcd"

#: The openssl configuration the certificates are made with (never the machine's own, whose
#: defaults differ between systems): one section of extensions per kind of certificate.
_OPENSSL_CONF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = heartline
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = {san}
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
"""
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


class TlsFiles(NamedTuple):
    """Paths of the CA certificate, the server's certificate and key, the client's certificate
    and key (keys mode 0600)."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    @classmethod
    def in_dir(cls, directory: str) -> TlsFiles:
        """The files :func:`make_tls_files` writes into ``directory``."""
        names = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
        return cls(*(os.path.join(directory, name) for name in names))

    def client_context(self) -> ssl.SSLContext:
        """A TLS client context that trusts the CA and shows the client certificate."""
        import ssl

        context = ssl.create_default_context(cafile=self.ca)
        context.load_cert_chain(self.client_cert, self.client_key)
        return context


def make_tls_files(
    directory: str, *, ips: Sequence[str], names: Sequence[str] = (), days: int = 365,
    client: str = "heartline",
) -> TlsFiles:  # fmt: skip
    """A CA, a server certificate for ``ips`` and ``names`` and a client certificate (common
    name ``client``), written into ``directory``. Raises OSError when openssl is missing or
    fails (its message in the error)."""
    files = TlsFiles.in_dir(directory)
    ca_key, conf = os.path.join(directory, "ca.key"), os.path.join(directory, "openssl.cnf")
    san = ", ".join([f"IP:{ip}" for ip in ips] + [f"DNS:{name}" for name in names])
    try:
        with open(conf, "w") as f:
            f.write(_OPENSSL_CONF.format(san=san))
        _openssl("req", "-x509", "-config", conf, "-extensions", "ca", *_EC, "-days", str(days),
                 "-subj", "/CN=heartline etcd CA", "-keyout", ca_key, "-out", files.ca)  # fmt: skip
        for kind, cert, key, subject in (
            ("server", files.server_cert, files.server_key, "/CN=etcd"),
            ("client", files.client_cert, files.client_key, f"/CN={client}"),
        ):
            csr = cert + ".csr"
            _openssl("req", "-new", "-config", conf, *_EC, "-subj", subject, "-keyout", key,
                     "-out", csr)  # fmt: skip
            os.chmod(key, 0o600)
            _openssl("x509", "-req", "-in", csr, "-CA", files.ca, "-CAkey", ca_key,
                     "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
                     "-days", str(days), "-extfile", conf, "-extensions", kind,
                     "-out", cert)  # fmt: skip
            os.unlink(csr)
    finally:
        for path in (ca_key, conf):
            if os.path.exists(path):
                os.unlink(path)
    return files


def _openssl(*args: str) -> None:
    try:
        done = subprocess.run(
            ["openssl", *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
            check=False,
        )  # fmt: skip
    except FileNotFoundError:
        raise OSError("the openssl command is missing: install openssl") from None
    except subprocess.TimeoutExpired:
        raise OSError(f"openssl {args[0]} did not finish within 60s") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise OSError(f"openssl {args[0]} failed: {lines[-1] if lines else done.returncode}")


def etcd_argv(
    *, data_dir: str, client_url: str, peer_url: str, tls: TlsFiles | None = None,
    cluster: str = "heartline", binary: str = ETCD_BINARY,
) -> list[str]:  # fmt: skip
    """The command line of a single-member etcd on ``client_url`` and ``peer_url`` (its only
    listeners), tuned to elect itself at once (20 ms heartbeats, 200 ms election timeout, so
    it also grants leases as short as a second). With ``tls`` (``client_url`` https://) it
    asks every client for a certificate its CA signed (``--client-cert-auth``), and so it
    does on the peer port when ``peer_url`` is https:// too."""
    argv = [
        binary,
        "--name=default",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=default={peer_url}",
        "--initial-cluster-state=new",
        f"--initial-cluster-token={cluster}",
        "--heartbeat-interval=20",
        "--election-timeout=200",
        "--logger=zap",
        "--log-outputs=stderr",
    ]
    if tls is not None:
        argv += [
            "--client-cert-auth",
            f"--trusted-ca-file={tls.ca}",
            f"--cert-file={tls.server_cert}",
            f"--key-file={tls.server_key}",
        ]
        if peer_url.startswith("https://"):
            argv += [
                "--peer-client-cert-auth",
                f"--peer-trusted-ca-file={tls.ca}",
                f"--peer-cert-file={tls.server_cert}",
                f"--peer-key-file={tls.server_key}",
            ]
    return argv


def etcd_serves(host: str, port: int, context: ssl.SSLContext | None = None) -> bool:
    """Whether the etcd at ``host:port`` is healthy (``GET /health``: it has a leader and
    answers a read); over TLS with ``context``. False when it does not answer (yet)."""
    import http.client
    import json

    conn = (
        http.client.HTTPSConnection(host, port, timeout=1.0, context=context)
        if context is not None
        else http.client.HTTPConnection(host, port, timeout=1.0)
    )
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        body = resp.read()
        return resp.status == 200 and json.loads(body).get("health") == "true"
    except (OSError, http.client.HTTPException, ValueError, AttributeError):
        return False
    finally:
        conn.close()
