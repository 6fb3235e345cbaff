"""The etcd backend against a real etcd on loopback that serves TLS only and asks every client
for a certificate (``--client-cert-auth``, as production etcd clusters run): locks, entries,
the CLI and a cluster's [cluster] work with the right client certificate; a missing, foreign
or badly kept one is one line and its exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from tests.integration.lock.lockd_helpers import HEARTLINE, lock_round_trip

from heartline import Lock
from heartline._util import make_tls_files
from heartline.errors import LockAuthError, UnsafeTokenFile, UsageError
from heartline.lock import ClientInfo, open_backend, open_entries
from heartline.testing import EtcdServer

_ENV = ("HEARTLINE_LOCK_CERT_FILE", "HEARTLINE_LOCK_KEY_FILE", "HEARTLINE_LOCK_URL",
        "HEARTLINE_CONFIG")  # fmt: skip


@pytest.fixture(autouse=True)
def _no_cert_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in _ENV}, **extra}


def test_a_lock_and_entries_with_the_client_certificate(etcd_tls: EtcdServer) -> None:
    """With the CA and a client certificate its CA signed, a lock is granted, listed and
    released, and session entries are written and read back."""
    assert etcd_tls.url.startswith("etcds://127.0.0.1:")
    lock_round_trip(Lock("tls-job", url=etcd_tls.url, wait=5, **etcd_tls.credentials))
    entries = open_entries(etcd_tls.url, ttl=5, client=ClientInfo.here("tls-test"),
                           **etcd_tls.credentials)  # fmt: skip
    try:
        entries.put("tls/one", "1")
        assert [(e.key, e.value) for e in entries.entries("tls/")] == [("tls/one", "1")]
        entries.delete("tls/one")
        assert entries.entries("tls/") == []
    finally:
        entries.close()


def test_a_client_without_a_certificate_is_refused(etcd_tls: EtcdServer) -> None:
    """Trusting etcd's CA is not enough: etcd turns a client with no certificate away, and
    the client says so in one line (LockAuthError, exit 77), naming the options that fix it."""
    assert etcd_tls.tls is not None
    lock = Lock("tls-job", url=etcd_tls.url, wait=2, ca_file=etcd_tls.tls.ca)
    try:
        with pytest.raises(LockAuthError) as e:
            lock.acquire()
    finally:
        lock.close()
    text = str(e.value)
    assert "\n" not in text and "refused this client's certificate" in text
    assert "--cert-file" in text and e.value.exit_code == 77


def test_a_certificate_from_another_ca_is_refused(etcd_tls: EtcdServer, tmp_path: Path) -> None:
    """A well-made client certificate that etcd's CA did not sign is refused as well."""
    assert etcd_tls.tls is not None
    other = make_tls_files(str(tmp_path), ips=["127.0.0.1"], days=1)
    backend = open_backend(etcd_tls.url, ca_file=etcd_tls.tls.ca, cert_file=other.client_cert,
                           key_file=other.client_key)  # fmt: skip
    try:
        with pytest.raises(LockAuthError, match="refused this client's certificate"):
            backend.locks()
    finally:
        backend.close()


def _bad_files(tls_dir: Path, tmp: Path) -> list[tuple[dict[str, str], type[Exception], str]]:
    """(credentials, error, what the one line says) for each way the files can be wrong."""
    cert, key, ca = str(tls_dir / "client.pem"), str(tls_dir / "client.key"), tls_dir / "ca.pem"
    loose = tmp / "loose.key"
    loose.write_bytes((tls_dir / "client.key").read_bytes())
    loose.chmod(0o644)
    (tmp / "other").mkdir()
    other = make_tls_files(str(tmp / "other"), ips=["127.0.0.1"], days=1)
    return [
        ({"cert_file": str(tmp / "none.pem"), "key_file": key}, UsageError,
         f"client certificate {tmp / 'none.pem'}: No such file or directory; name the client's"),
        ({"cert_file": cert, "key_file": str(tmp / "none.key")}, UsageError,
         f"client key {tmp / 'none.key'}: No such file or directory"),
        ({"cert_file": cert, "key_file": str(loose)}, UnsafeTokenFile,
         f"client key {loose}: mode 0644 lets other users read it; make it private: "
         f"`chmod 600 {loose}`"),
        ({"cert_file": cert, "key_file": other.client_key}, UsageError,
         "the key is not the certificate's"),
        ({"cert_file": str(ca), "key_file": str(tls_dir / "ca.pem")}, UsageError,
         "not a PEM private key"),
        ({"cert_file": key, "key_file": key}, UsageError, "not a PEM certificate"),
        ({"cert_file": cert}, UsageError, "holds no private key; give its key with --key-file"),
        ({"key_file": key}, UsageError, "no client certificate goes with it"),
    ]  # fmt: skip


def test_bad_certificate_files_are_one_line_errors(etcd_tls: EtcdServer, tmp_path: Path) -> None:
    """A missing, unreadable, mismatched or non-PEM certificate or key, a key that others can
    read: each is refused before anything is sent, in one line naming the file and the fix."""
    assert etcd_tls.tls is not None
    for creds, error, says in _bad_files(etcd_tls.tls_dir, tmp_path):
        with pytest.raises(error) as e:
            open_backend(etcd_tls.url, ca_file=etcd_tls.tls.ca, **creds)
        assert "\n" not in str(e.value) and says in str(e.value), (creds, str(e.value))


def test_a_certificate_for_a_url_that_takes_none_is_refused(etcd_tls: EtcdServer) -> None:
    """lockd checks tokens, and plain etcd:// has no TLS: a client certificate given for
    either is refused in one line that says what to do instead."""
    assert etcd_tls.tls is not None
    creds = {"cert_file": etcd_tls.tls.client_cert, "key_file": etcd_tls.tls.client_key}
    with pytest.raises(UsageError, match=r"heartline:// \(lockd\) checks a token instead"):
        open_backend("heartline://127.0.0.1:9", **creds)
    with pytest.raises(UsageError, match="needs TLS: write the etcd URL as etcds://"):
        open_backend(f"etcd://127.0.0.1:{etcd_tls.client_port}", **creds)


def test_the_cli_with_a_client_certificate(etcd_tls: EtcdServer, tmp_path: Path) -> None:
    """`heartline lock` and `locks` with --cert-file/--key-file (or the variables) work; with
    none, exit 77; a missing file exits 64 (`lock`) or 2 (`locks`), a loose key 78; each
    failure is one line on stderr and the command never runs."""
    tls = etcd_tls.tls
    assert tls is not None
    ca = ["--server", etcd_tls.url, "--ca-file", tls.ca]
    given = [*ca, "--cert-file", tls.client_cert, "--key-file", tls.client_key]
    ran = tmp_path / "ran"
    loose = tmp_path / "loose.key"
    loose.write_bytes(Path(tls.client_key).read_bytes())
    loose.chmod(0o640)
    by_env = clean_env(HEARTLINE_LOCK_CERT_FILE=tls.client_cert,
                       HEARTLINE_LOCK_KEY_FILE=tls.client_key)  # fmt: skip

    def hl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*HEARTLINE, *args], capture_output=True, text=True, timeout=30,
                              env=env or clean_env())  # fmt: skip

    ok = hl("lock", "cli-job", *given, "--", "touch", str(ran))
    assert ok.returncode == 0 and ran.exists(), ok.stderr
    assert hl("locks", *given).returncode == 0
    assert hl("locks", *ca, env=by_env).returncode == 0
    ran.unlink()
    fails = [
        (("lock", "cli-job", *ca, "--", "touch", str(ran)), None, 77, "heartline: etcd at "),
        (("locks", *ca), None, 77, "heartline: etcd at "),
        (("lock", "cli-job", *ca, "--cert-file", str(tmp_path / "no.pem"), "--",
          "touch", str(ran)), None, 64, f"heartline: client certificate {tmp_path}/no.pem: "),
        (("locks", *ca, "--cert-file", str(tmp_path / "no.pem")), None, 2,
         f"heartline: client certificate {tmp_path}/no.pem: "),
        (("lock", "cli-job", *ca, "--cert-file", tls.client_cert, "--key-file", str(loose),
          "--", "touch", str(ran)), None, 78, f"heartline: client key {loose}: mode 0640"),
        (("locks", *ca), clean_env(HEARTLINE_LOCK_CERT_FILE=tls.client_cert,
                                   HEARTLINE_LOCK_KEY_FILE=str(loose)), 78,
         f"heartline: client key {loose} (from $HEARTLINE_LOCK_KEY_FILE): mode 0640"),
    ]  # fmt: skip
    for args, env, code, starts in fails:
        r = hl(*args, env=env)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(starts), (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert not ran.exists()


def test_a_cluster_config_with_a_client_certificate(etcd_tls: EtcdServer, tmp_path: Path) -> None:
    """[cluster] cert_file and key_file reach the backend: `heartline hosts` lists the (empty)
    cluster; with the key left out it fails in one line naming the key's absence."""
    tls = etcd_tls.tls
    assert tls is not None
    base = f'[cluster]\nbackend = "{etcd_tls.url}"\nca_file = "{tls.ca}"\n'
    good, half = tmp_path / "good.toml", tmp_path / "half.toml"
    good.write_text(base + f'cert_file = "{tls.client_cert}"\nkey_file = "{tls.client_key}"\n')
    half.write_text(base + f'cert_file = "{tls.client_cert}"\n')
    env = clean_env()
    r = subprocess.run([*HEARTLINE, "-c", str(good), "hosts", "--json"], capture_output=True,
                       text=True, timeout=30, env=env)  # fmt: skip
    assert r.returncode == 0 and '"hosts": []' in r.stdout, r.stderr
    r = subprocess.run([*HEARTLINE, "-c", str(half), "hosts"], capture_output=True, text=True,
                       timeout=30, env=env)  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"client certificate {tls.client_cert}: holds no private key" in r.stderr
