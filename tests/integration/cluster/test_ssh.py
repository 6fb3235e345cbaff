"""Commands on a host over SSH: a real sshd on loopback, the real OpenSSH client.

The sshd (tests/integration/conftest.py) has host and user keys made for the test; an
``ssh_config`` names it "testhost", as the user's own config would.
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
from typing import Any

import pytest
from tests.helpers import wait_until

from heartline.cluster import Ssh
from heartline.errors import HostKeyRefused, SshFailed


@dataclass
class Sshd:
    config: str  # an ssh_config naming the server "testhost"
    dir: Path
    port: int


@pytest.fixture
def server(sshd: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Sshd]:
    """The loopback sshd, with shared connections' sockets in a short directory of this
    test's own (a unix socket's path is short), and every shared connection ended after."""
    runtime = tempfile.mkdtemp(prefix="hl-", dir="/tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    try:
        yield Sshd(sshd["ssh_config"], sshd["dir"], sshd["port"])
    finally:
        Ssh(config=sshd["ssh_config"]).close_shared("testhost")
        shutil.rmtree(runtime, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_command_runs_there_with_its_exit_code_and_output(server: Sshd, capfd) -> None:
    """The command's output comes back, its exit code is ours, argv survives quoting."""
    ssh = Ssh(config=server.config)
    assert ssh.run("testhost", ["sh", "-c", 'echo "$1"; exit 7', "x", "a b; $(c)"]) == 7
    assert capfd.readouterr().out == "a b; $(c)\n"
    assert ssh.run("testhost", ["true"]) == 0


def test_an_unknown_host_key_is_refused_with_the_fix(server: Sshd) -> None:
    """An empty known_hosts: HostKeyRefused naming the fix, and nothing ran."""
    (server.dir / "known_hosts").write_text("")
    marker = server.dir / "ran"
    with pytest.raises(HostKeyRefused, match="add its key to known_hosts"):
        Ssh(config=server.config, share=False).run("testhost", ["touch", str(marker)])
    assert not marker.exists()


def test_an_unreachable_host_is_an_ssh_failure(server: Sshd) -> None:
    """Nobody listens: SshFailed (exit 255) with ssh's own reason."""
    cfg = Path(server.config)
    cfg.write_text(cfg.read_text().replace(f"Port {server.port}", f"Port {_free_port()}"))
    with pytest.raises(SshFailed, match="Connection refused") as e:
        Ssh(config=server.config, share=False).run("testhost", ["true"])
    assert e.value.exit_code == 255


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("share", [True, False], ids=["shared", "own-connection"])
def test_the_remote_command_stops_when_the_caller_is_killed(
    server: Sshd, tmp_path: Path, share: bool
) -> None:
    """SIGKILL of the local caller ends the far command's whole session (the command and
    its children), through a shared connection or a connection of its own."""
    pidfile = tmp_path / "remote.pid"
    caller = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import sys
        from heartline.cluster import Ssh
        ssh = Ssh(config={server.config!r}, share={share})
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


def test_a_local_cancel_stops_the_remote_command(server: Sshd, tmp_path: Path) -> None:
    """Remote.stop() (Ctrl-C, a timeout, a lost lock) ends the far command; wait() returns."""
    pidfile = tmp_path / "remote.pid"
    remote = Ssh(config=server.config).start(
        "testhost", ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 300"]
    )
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 15, "remote start")
    pid = int(pidfile.read_text())
    remote.stop()
    rc = remote.wait(15)
    assert rc != 0 and not _alive(pid)
