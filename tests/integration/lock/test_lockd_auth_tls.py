"""lockd's token authentication, its refusal to listen beyond loopback without tokens, and
TLS with a self-signed certificate, each against a real lockd through ``heartline.Lock``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import wait_until
from tests.integration.lock.lockd_helpers import (
    HEARTLINE,
    Lockd,
    lock_round_trip,
    openssl_self_signed,
)

from heartline import Lock
from heartline.errors import LockAuthError, LockServerUnreachable
from heartline.lock._lockd import LockdBackend

PLAIN = "plain-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[Lockd, Path]]:
    """A lockd with a token file holding one plain and one admin token."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# lockd tokens\n{PLAIN}\n{ADMIN} admin\n")
    tokens.chmod(0o600)
    server = Lockd(tmp_path / "data", "--token-file", str(tokens))
    try:
        server.start()
        yield server, tmp_path
    finally:
        server.stop()


def token_file(directory: Path, token: str) -> str:
    path = directory / f"client-{abs(hash(token))}"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return str(path)


def test_client_without_token_gets_auth_error(secured: tuple[Lockd, Path]) -> None:
    """A client that sends no token is refused with LockAuthError."""
    server, _ = secured
    lock = Lock("secret", url=server.url, wait=2)
    try:
        with pytest.raises(LockAuthError, match="authentication failed"):
            lock.acquire()
    finally:
        lock.close()


def test_client_with_wrong_token_gets_auth_error(secured: tuple[Lockd, Path]) -> None:
    """A client with a token that is not in lockd's file (even a prefix of one) is refused
    with LockAuthError."""
    server, tmp = secured
    for wrong in ("wrong-token-0123456789abcdef", PLAIN[:-1], PLAIN + "x"):
        lock = Lock("secret", url=server.url, wait=2, token_file=token_file(tmp, wrong))
        try:
            with pytest.raises(LockAuthError):
                lock.acquire()
        finally:
            lock.close()


def test_plain_token_locks_but_cannot_break(secured: tuple[Lockd, Path]) -> None:
    """A plain token acquires and releases; breaking a lock with it is refused with
    LockAuthError and the holder keeps its grant."""
    server, tmp = secured
    lock = Lock("job", url=server.url, wait=2, token_file=token_file(tmp, PLAIN))
    other = Lock("job", url=server.url, wait=2, token_file=token_file(tmp, PLAIN))
    try:
        with lock:
            assert lock.token > 0
            with pytest.raises(LockAuthError, match="admin"):
                other.backend.break_lock("job")
            assert lock.held
            [info] = other.backend.locks()
            assert [h.token for h in info.holders] == [lock.token]
    finally:
        lock.close()
        other.close()


def test_admin_token_can_break(secured: tuple[Lockd, Path]) -> None:
    """An admin token breaks a lock held by a plain-token client: it reports one holder
    dropped, the holder learns it lost the lock, and the lock is free again."""
    server, tmp = secured
    lost: list[BaseException] = []
    # A short TTL: the client reads an unasked-for push (the break) at its next ping (TTL/3).
    holder = Lock("job", url=server.url, wait=2, ttl=1.5, token_file=token_file(tmp, PLAIN),
                  on_lost=lost.append)  # fmt: skip
    admin = Lock("job", url=server.url, wait=2, token_file=token_file(tmp, ADMIN))
    try:
        holder.acquire()
        assert admin.backend.break_lock("job") == 1
        wait_until(lambda: holder.lost, 5, "the holder to learn of the break")
        assert lost and "broken" in str(lost[0])
        assert admin.backend.locks() == []
        admin.acquire(wait=0)
        assert admin.token > holder.token
    finally:
        holder.close()
        admin.close()


def test_non_loopback_listen_without_token_file_is_refused(tmp_path: Path) -> None:
    """``--listen 0.0.0.0:PORT`` without --token-file exits 2 with one line on stderr, before
    binding (the port stays free) and without printing the ready line."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run(
        [*HEARTLINE, "lockd", "--listen", f"0.0.0.0:{port}", "--data", str(tmp_path / "d")],
        capture_output=True, timeout=30, start_new_session=True,
    )  # fmt: skip
    assert result.returncode == 2, result
    assert result.stdout == b""
    err = result.stderr.decode()
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "--token-file" in err and "0.0.0.0" in err
    # Nothing was bound: the port can be taken at once.
    with socket.socket() as s:
        s.bind(("0.0.0.0", port))


def test_lockd_refuses_a_token_file_others_can_read(tmp_path: Path) -> None:
    """A lockd token file readable by group or others is refused at start as ssh refuses a
    loose private key: exit 2, one line naming the file, its mode and `chmod 600 FILE`,
    before binding and without the ready line."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{PLAIN}\n{ADMIN} admin\n")
    tokens.chmod(0o644)
    result = subprocess.run(
        [*HEARTLINE, "lockd", "--listen", "127.0.0.1:0", "--no-data", "--token-file",
         str(tokens)], capture_output=True, timeout=30, start_new_session=True,
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == b"", result
    err = result.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("heartline: --token-file "), err
    assert str(tokens) in err and "mode 0644" in err and f"chmod 600 {tokens}" in err
    assert PLAIN not in err and ADMIN not in err


def test_clients_refuse_a_token_file_others_can_read(secured: tuple[Lockd, Path]) -> None:
    """A client token file open to group or others, given by --token-file or by
    $HEARTLINE_LOCK_TOKEN_FILE, stops `heartline lock` (the command never runs), `heartline
    locks` and `--break` with exit 78 and one line naming the file, its mode and the fix;
    the token itself is never printed."""
    server, tmp = secured
    loose = Path(token_file(tmp, PLAIN))
    loose.chmod(0o640)
    ran = tmp / "ran"
    env = {k: v for k, v in os.environ.items() if k != "HEARTLINE_LOCK_TOKEN_FILE"}
    runs = [
        (["lock", "job", "--server", server.url, "--token-file", str(loose), "--",
          "touch", str(ran)], env),
        (["lock", "job", "--server", server.url, "--", "touch", str(ran)],
         {**env, "HEARTLINE_LOCK_TOKEN_FILE": str(loose)}),
        (["locks", "--server", server.url, "--token-file", str(loose)], env),
        (["lock", "--break", "job", "--server", server.url, "--token-file", str(loose)], env),
    ]  # fmt: skip
    for args, run_env in runs:
        r = subprocess.run([*HEARTLINE, *args], capture_output=True, text=True, timeout=30,
                           env=run_env)  # fmt: skip
        assert r.returncode == 78, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("heartline: token file "), r
        assert "mode 0640" in r.stderr and f"chmod 600 {loose}" in r.stderr
        assert PLAIN not in r.stderr
    assert not ran.exists()
    loose.chmod(0o600)
    r = subprocess.run([*HEARTLINE, "lock", "job", "--server", server.url, "--token-file",
                        str(loose), "--", "touch", str(ran)], capture_output=True, text=True,
                       timeout=30, env=env)  # fmt: skip
    assert r.returncode == 0 and ran.exists(), r.stderr


def test_break_from_the_cli_needs_an_admin_token_when_lockd_has_tokens(
    secured: tuple[Lockd, Path], tmp_path: Path
) -> None:
    """`heartline lock --break` with a plain token exits 77 with one line; with the admin
    token it breaks. A lockd without a token file (loopback only) treats every local client as
    an admin: there the break works without a token, as the README says."""
    server, tmp = secured
    env = {k: v for k, v in os.environ.items() if k != "HEARTLINE_LOCK_TOKEN_FILE"}

    def brk(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*HEARTLINE, "lock", "--break", "job", "--server", url, *extra],
                              capture_output=True, text=True, timeout=30, env=env)  # fmt: skip

    plain = brk(server.url, "--token-file", token_file(tmp, PLAIN))
    assert plain.returncode == 77 and plain.stderr.count("\n") == 1, plain
    assert "admin token" in plain.stderr
    assert brk(server.url, "--token-file", token_file(tmp, ADMIN)).returncode == 0
    open_server = Lockd(tmp_path / "open-data")
    try:
        open_server.start()
        assert brk(open_server.url).returncode == 0
    finally:
        open_server.stop()


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture
def tls_lockd(tmp_path: Path) -> Iterator[tuple[Lockd, Path]]:
    """A lockd serving TLS with a fresh self-signed certificate for localhost/127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed (and `cryptography` is not either)")
    cert, key = openssl_self_signed(tmp_path)
    server = Lockd(tmp_path / "data", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        server.start()
        yield server, cert
    finally:
        server.stop()


def test_tls_lock_with_the_ca_file(tls_lockd: tuple[Lockd, Path]) -> None:
    """``heartlines://localhost:PORT`` with the server's certificate as CA acquires, lists and
    releases a lock over TLS."""
    server, cert = tls_lockd
    lock_round_trip(Lock("tls-job", url=f"heartlines://localhost:{server.port}",
                         ca_file=str(cert), wait=5))  # fmt: skip


def test_tls_client_without_the_ca_is_refused(tls_lockd: tuple[Lockd, Path]) -> None:
    """A TLS client that does not trust the self-signed certificate fails with
    LockServerUnreachable naming TLS."""
    server, _ = tls_lockd
    lock = Lock("tls-job", url=f"heartlines://localhost:{server.port}", wait=2)
    try:
        with pytest.raises(LockServerUnreachable, match="TLS"):
            lock.acquire()
    finally:
        lock.close()


def test_plain_client_against_tls_lockd_fails_cleanly(tls_lockd: tuple[Lockd, Path]) -> None:
    """A plain-TCP client talking to a TLS lockd gets LockServerUnreachable, not a hang."""
    server, _ = tls_lockd
    backend = LockdBackend("127.0.0.1", server.port, connect_timeout=3)
    lock = Lock("tls-job", wait=2, backend=backend)
    try:
        with pytest.raises(LockServerUnreachable):
            lock.acquire()
    finally:
        lock.close()
