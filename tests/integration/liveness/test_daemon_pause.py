"""The daemon's own pause (SIGSTOP, a VM pause, a frozen cgroup) is not held against programs."""

from __future__ import annotations

import os
import signal
import time

from tests.integration.conftest import py, wait_until

# Beats every 100 ms for as long as it runs, with the stdlib only.
BEATER = py("""
import os, socket, time
addr = os.environ["NOTIFY_SOCKET"]
addr = "\\0" + addr[1:] if addr.startswith("@") else addr
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", addr)
while True:
    s.sendto(b"WATCHDOG=1", addr)
    time.sleep(0.1)
""")

# Beats while a file exists, then hangs.
HANGER = py("""
import os, socket, sys, time
addr = os.environ["NOTIFY_SOCKET"]
addr = "\\0" + addr[1:] if addr.startswith("@") else addr
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
while os.path.exists(sys.argv[1]):
    s.sendto(b"WATCHDOG=1", addr)
    time.sleep(0.1)
time.sleep(3600)
""")

PAUSE = 3.0


def _freeze(pid: int) -> None:
    """Stop ``pid`` for PAUSE seconds, as a VM pause would. The duration is the fault itself:
    the daemon is frozen, so there is no condition to wait for."""
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(PAUSE)
    finally:
        os.kill(pid, signal.SIGCONT)


def test_healthy_programs_survive_a_paused_daemon(make_daemon):
    """SIGSTOP the daemon for longer than the watchdog period, then SIGCONT: none of the nine
    beating programs is restarted, and heartbeats are counted again."""
    body = "".join(
        f"""
        [programs.b{i}]
        command = {BEATER}
        ready = "notify"
        watchdog = "1s"
        """
        for i in range(9)
    )
    d = make_daemon(body)
    for i in range(9):
        d.wait_state(f"b{i}", "running")
    assert d.proc is not None
    _freeze(d.proc.pid)

    def received() -> int:
        with d.client() as c:
            return int(c.get("/v1/status")["daemon"]["notify"]["received"])

    # Two full watchdog periods of beats after the resume: long enough for any wrong verdict.
    mark = received()
    wait_until(lambda: received() > mark + 9 * 20, 20, "two seconds of heartbeats")
    status = d.status()
    restarted = {n: p["last_exit"] for n, p in status.items() if p["restarts"]}
    assert restarted == {}, f"programs restarted after the daemon's own pause: {restarted}"
    assert all(p["state"] == "running" for p in status.values())
    assert "the daemon did not run for" in d.log.read_text()


def test_a_hung_program_is_still_caught_after_the_pause(make_daemon, tmp_path):
    """The pause buys a program one period, not a pass: one that stopped beating before the
    pause is restarted after it."""
    flag = tmp_path / "beat"
    flag.touch()
    d = make_daemon(f"""
        [programs.hang]
        command = {HANGER[:-1]}, "{flag}"]
        watchdog = "1s"
        stop_timeout = "1s"
    """)
    d.wait_state("hang", "running")
    flag.unlink()
    assert d.proc is not None
    _freeze(d.proc.pid)
    p = wait_until(lambda: (q := d.program("hang"))["restarts"] >= 1 and q, 10, "the restart")
    assert p["last_exit"]["reason"] == "watchdog"
