"""`heartline run --check` in place of autossh: an SSH tunnel kept alive end to end.

A real sshd on loopback, a real ssh -L forward to a small HTTP server, and heartline checking
the forward by fetching a page through it: the check fails when ssh dies and also when ssh is
alive but frozen (its port still accepts connections, nothing answers), and heartline brings
the tunnel back both times.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.integration.conftest import HEARTLINE, alive, wait_until
from tests.integration.liveness.test_checks import free_port


def _fetch(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello.txt", timeout=0.5) as r:
            return r.read().decode()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_ssh_tunnel_is_restored_when_ssh_dies_or_freezes(sshd, tmp_path):
    """Kill ssh, then freeze it: each time heartline restarts it and the page comes through."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "hello.txt").write_text("through the tunnel")
    http_port, local_port = free_port(), free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(http_port)],
        cwd=site,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ssh = [
        "ssh", "-N", *sshd["ssh_options"],
        "-L", f"127.0.0.1:{local_port}:127.0.0.1:{http_port}", f"{sshd['user']}@127.0.0.1",
    ]  # fmt: skip
    run = subprocess.Popen(
        [
            *HEARTLINE,
            "run",
            "--restart",
            "always",
            "--max-restarts",
            "forever",
            "--backoff",
            "0s",
            "--stop-timeout",
            "1s",
            "--check",
            f"http://127.0.0.1:{local_port}/hello.txt",
            "--check-grace",
            "1s",
            "--check-interval",
            "200ms",
            "--check-timeout",
            "500ms",
            "--check-failures",
            "2",
            "--",
            *ssh,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    try:
        wait_until(lambda: _fetch(local_port) == "through the tunnel", 20, "the tunnel")
        first = wait_until(lambda: _children(run.pid), 10, "the ssh process")[0]

        os.kill(first, signal.SIGKILL)  # ssh dies
        second = wait_until(lambda: [c for c in _children(run.pid) if c != first], 10, "a new ssh")[
            0
        ]
        wait_until(lambda: _fetch(local_port) == "through the tunnel", 20, "the tunnel again")

        os.kill(second, signal.SIGSTOP)  # ssh hangs: the port accepts, nothing answers
        third = wait_until(
            lambda: [c for c in _children(run.pid) if c not in (first, second)], 20, "ssh replaced"
        )[0]
        assert not alive(second)
        wait_until(lambda: _fetch(local_port) == "through the tunnel", 20, "the tunnel restored")
        assert alive(third)
    finally:
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(15)
        finally:
            err = run.stderr.read() if run.stderr else ""
            if run.stderr:
                run.stderr.close()
            os.killpg(web.pid, signal.SIGKILL)
            web.wait(10)
    assert "check: 2 failed checks" in err, err
