"""Commands on a host over SSH: a real sshd on loopback, the real OpenSSH client.

The sshd is started here with host and user keys made for the test; an ``ssh_config`` names
it, as the user's own config would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.helpers import wait_until

from heartline.cluster import Ssh
from heartline.errors import HostKeyRefused, SshFailed

SSHD = "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(
    not os.path.exists(SSHD) or os.geteuid() != 0, reason="needs root and openssh-server"
)


@dataclass
class Sshd:
    config: str  # an ssh_config naming the server "testhost"
    dir: Path
    port: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sshd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sshd]:
    d = tmp_path / "ssh"
    d.mkdir(mode=0o700)
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True)  # fmt: skip
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    port = _free_port()
    (d / "sshd_config").write_text(textwrap.dedent(f"""\
        ListenAddress 127.0.0.1:{port}
        HostKey {d}/host_key
        AuthorizedKeysFile {d}/authorized_keys
        PidFile {d}/sshd.pid
        PermitRootLogin prohibit-password
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        UsePAM no
        StrictModes no
        """))  # fmt: skip
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (d / "ssh_config").write_text(textwrap.dedent(f"""\
        Host testhost
            HostName 127.0.0.1
            Port {port}
            User root
            IdentityFile {d}/user_key
            IdentitiesOnly yes
            UserKnownHostsFile {d}/known_hosts
            GlobalKnownHostsFile /dev/null
        """))  # fmt: skip
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                            stderr=subprocess.DEVNULL)  # fmt: skip
    # Shared connections' sockets go to a directory of this test (short: a socket path).
    runtime = tempfile.mkdtemp(prefix="hl-", dir="/tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    try:

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, 10, "sshd to listen")
        yield Sshd(str(d / "ssh_config"), d, port)
    finally:
        Ssh(config=str(d / "ssh_config")).close_shared("testhost")
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(runtime, ignore_errors=True)


def test_a_command_runs_there_with_its_exit_code_and_output(sshd: Sshd, capfd) -> None:
    """The command's output comes back, its exit code is ours, argv survives quoting."""
    ssh = Ssh(config=sshd.config)
    assert ssh.run("testhost", ["sh", "-c", 'echo "$1"; exit 7', "x", "a b; $(c)"]) == 7
    assert capfd.readouterr().out == "a b; $(c)\n"
    assert ssh.run("testhost", ["true"]) == 0


def test_an_unknown_host_key_is_refused_with_the_fix(sshd: Sshd) -> None:
    """An empty known_hosts: HostKeyRefused naming the fix, and nothing ran."""
    (sshd.dir / "known_hosts").write_text("")
    marker = sshd.dir / "ran"
    with pytest.raises(HostKeyRefused, match="add its key to known_hosts"):
        Ssh(config=sshd.config, share=False).run("testhost", ["touch", str(marker)])
    assert not marker.exists()


def test_an_unreachable_host_is_an_ssh_failure(sshd: Sshd) -> None:
    """Nobody listens: SshFailed (exit 255) with ssh's own reason."""
    cfg = Path(sshd.config)
    cfg.write_text(cfg.read_text().replace(f"Port {sshd.port}", f"Port {_free_port()}"))
    with pytest.raises(SshFailed, match="Connection refused") as e:
        Ssh(config=sshd.config, share=False).run("testhost", ["true"])
    assert e.value.exit_code == 255


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("share", [True, False], ids=["shared", "own-connection"])
def test_the_remote_command_stops_when_the_caller_is_killed(
    sshd: Sshd, tmp_path: Path, share: bool
) -> None:
    """SIGKILL of the local caller ends the far command's whole session (the command and
    its children), through a shared connection or a connection of its own."""
    pidfile = tmp_path / "remote.pid"
    caller = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import sys
        from heartline.cluster import Ssh
        ssh = Ssh(config={sshd.config!r}, share={share})
        sys.exit(ssh.run("testhost", ["sh", "-c", "sleep 300 & echo $$ $! > {pidfile}; wait"]))
        """)])  # fmt: skip
    try:
        wait_until(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2, 15,
                   "the remote command to start")  # fmt: skip
        pids = [int(p) for p in pidfile.read_text().split()]
        assert all(_alive(p) for p in pids)
        caller.send_signal(signal.SIGKILL)
        caller.wait(10)
        wait_until(lambda: not any(_alive(p) for p in pids), 15, "the remote command to stop")
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()


def test_a_local_cancel_stops_the_remote_command(sshd: Sshd, tmp_path: Path) -> None:
    """Remote.stop() (Ctrl-C, a timeout, a lost lock) ends the far command; wait() returns."""
    pidfile = tmp_path / "remote.pid"
    remote = Ssh(config=sshd.config).start(
        "testhost", ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 300"]
    )
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 15, "remote start")
    pid = int(pidfile.read_text())
    remote.stop()
    rc = remote.wait(15)
    assert rc != 0 and not _alive(pid)
