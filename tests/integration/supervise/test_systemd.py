"""Under systemd the daemon speaks sd_notify: READY=1, STATUS=, WATCHDOG=1."""

from __future__ import annotations

import socket
import time
from pathlib import Path


def test_daemon_notifies_ready_status_and_watchdog(make_daemon, tmp_path):
    """With NOTIFY_SOCKET and WATCHDOG_USEC set, the daemon sends READY=1, a STATUS and pings."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    try:
        d = make_daemon('[programs.a]\ncommand = ["/bin/sleep", "3600"]\n', start=False)
        d.start(extra_env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
        got: list[str] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum("WATCHDOG=1" in m for m in got) < 2:
            got.append(sock.recv(4096).decode())
        joined = "\n".join(got)
        assert "READY=1" in joined
        assert "STATUS=1 of 1 programs running" in joined
        assert sum("WATCHDOG=1" in m for m in got) >= 2
        # Programs get heartline's notify socket, not the one systemd gave the daemon.
        env = Path(f"/proc/{d.program('a')['pid']}/environ").read_bytes().split(b"\0")
        assert f"NOTIFY_SOCKET={path}".encode() not in env
        assert any(e.startswith(b"NOTIFY_SOCKET=@heartline/notify/") for e in env)
        assert not any(e.startswith(b"WATCHDOG_USEC=") for e in env)
        d.shutdown()
        rest = []
        sock.settimeout(2)
        try:
            while True:
                rest.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        assert any("STOPPING=1" in m for m in rest)
    finally:
        sock.close()
