"""Fixtures that run a real heartline daemon with real programs, and clean up after it.

Every process a test starts carries a unique tag in its environment; teardown ends exactly the
processes with that tag (the daemon, its fd holder, programs and their children), whatever the
test did to them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.helpers import tagged_pids, wait_until

from heartline.api import Client

T = TypeVar("T")
HEARTLINE = [sys.executable, "-m", "heartline"]
PY = sys.executable


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


class Daemon:
    """A heartline daemon run by a test, with helpers to drive it through its CLI and API."""

    def __init__(self, root: Path, config_text: str, tag: str, run_dir: Path | None = None) -> None:
        self.root = root
        self.run_dir = run_dir or root / "run"
        self.tag = tag
        self.config = root / "heartline.toml"
        self.config.write_text(config_text)
        self.env = {**os.environ, "HEARTLINE_TEST_TAG": tag, "PYTHONUNBUFFERED": "1"}
        self.env.pop("NOTIFY_SOCKET", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "daemon.log"

    @property
    def socket(self) -> str:
        return str(self.run_dir / "heartline.sock")

    def start(
        self, extra_env: dict[str, str] | None = None, *, wrapper: Sequence[str] = ()
    ) -> None:
        """Start ``heartline up`` (run through ``wrapper``, such as prlimit, when given)."""
        r, w = os.pipe()
        env = {**self.env, "HEARTLINE_READY_FD": str(w), **(extra_env or {})}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*wrapper, *HEARTLINE, "up", "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                pass_fds=(w,),
                start_new_session=True,
            )
        os.close(w)
        with os.fdopen(r, "rb") as rf:
            got = rf.read()
        if not got.startswith(b"ready"):
            self.proc.wait(10)
            raise AssertionError(f"daemon did not start:\n{self.log.read_text()}")

    def cli(
        self, *args: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [*HEARTLINE, "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"heartline {' '.join(args)} -> {res.returncode}\n{res.stderr}")
        return res

    def client(self) -> Client:
        return Client(self.socket)

    def status(self) -> dict[str, dict[str, Any]]:
        with self.client() as c:
            return {p["name"]: p for p in c.get("/v1/status")["programs"]}

    def program(self, name: str) -> dict[str, Any]:
        return self.status()[name]

    def wait_state(
        self, name: str, state: str, timeout: float = 10.0, **match: Any
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            p = self.program(name)
            if p["state"] == state and all(p.get(k) == v for k, v in match.items()):
                return p
            return None

        return wait_until(check, timeout, f"{name} to be {state} {match or ''}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def shutdown(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            with self.client() as c:
                c.post("/v1/shutdown", {})
        except Exception:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def cleanup(self) -> list[int]:
        """Shut down and end every tagged process; return the pids that were still alive."""
        self.shutdown()
        left = tagged_pids(self.tag)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not tagged_pids(self.tag), 10, "tagged processes to exit")
        return left

    def state_file(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "state.json").read_text())


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Factory: ``make_daemon(programs_toml, start=True)`` -> a running Daemon."""
    made: list[Daemon] = []

    def make(
        programs: str, *, start: bool = True, daemon_extra: str = "", run_dir: Path | None = None
    ) -> Daemon:
        tag = uuid.uuid4().hex
        root = tmp_path / f"d{len(made)}"
        root.mkdir()
        run = run_dir or root / "run"
        text = f'[daemon]\nrun_dir = "{run}"\nlog_dir = "logs"\n{daemon_extra}\n'
        d = Daemon(root, text + textwrap.dedent(programs), tag, run)
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in made:
        d.cleanup()


def py(code: str) -> str:
    """A TOML argv list running ``code`` with this interpreter."""
    return json.dumps([PY, "-c", textwrap.dedent(code)])


@pytest.fixture
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real OpenSSH server on loopback with its own config, host key and client key."""
    import shutil
    import socket as socketlib

    binary = "/usr/sbin/sshd"
    if not os.path.exists(binary) or not shutil.which("ssh"):
        pytest.skip("openssh-server is not installed (./dev test installs it)")
    root = tmp_path_factory.mktemp("sshd")
    host_key, client_key = root / "host_ed25519", root / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (root / "authorized_keys").write_text((root / "client_ed25519.pub").read_text())
    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (root / "sshd_config").write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile none
AuthorizedKeysFile {root / "authorized_keys"}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding local
"""
    )
    # A client configuration naming the server "testhost", with its real host key known (for
    # the cluster's SSH transport, which never accepts an unknown key).
    kind, blob = (root / "host_ed25519.pub").read_text().split()[:2]
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {kind} {blob}\n")
    (root / "ssh_config").write_text(
        f"""Host testhost
    HostName 127.0.0.1
    Port {port}
    User root
    IdentityFile {client_key}
    IdentitiesOnly yes
    UserKnownHostsFile {root / "known_hosts"}
    GlobalKnownHostsFile /dev/null
"""
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = root / "sshd.log"
    argv = [binary, "-D", "-e", "-f", str(root / "sshd_config")]
    if os.geteuid() == 0 and shutil.which("unshare"):
        # Root logs in with /bin/sh here (a copy of /etc/passwd bound over it in sshd's own
        # mount namespace): the machine's root ~/.bashrc may do slow, locking work (a version
        # manager's rehash) on every session.
        passwd = root / "passwd"
        from heartline.cluster._labinit import root_with_sh

        passwd.write_text(root_with_sh(Path("/etc/passwd").read_text()))
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /etc/passwd && exec "$@"', str(passwd), *argv]  # fmt: skip
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=logf,
            start_new_session=True,
        )

    def listening() -> bool:
        with socketlib.socket() as c:
            return c.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, 10, "sshd to listen")
        yield {
            "port": port,
            "key": str(client_key),
            "user": os.environ.get("USER") or "root",
            "ssh_options": [
                "-i",
                str(client_key),
                "-p",
                str(port),
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ExitOnForwardFailure=yes",
            ],
            "log": log,
            "dir": root,
            "ssh_config": str(root / "ssh_config"),
        }
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture(params=["lockd", "etcd"])
def lock_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A started lock backend of each kind on loopback (a real lockd without a journal, a real
    etcd), killed afterwards: tests that take it run once per backend."""
    from heartline.testing import EtcdServer, LockdServer

    server: Any = LockdServer(None) if request.param == "lockd" else EtcdServer(tmp_path / "etcd")
    server.start()
    try:
        yield server
    finally:
        server.kill()
