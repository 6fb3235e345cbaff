"""Stopping: the stop signal reaches the whole process group, SIGKILL follows the grace."""

from __future__ import annotations

import os

from tests.integration.conftest import alive, py, wait_until

# A leader that starts a grandchild in its own group, writes both pids, and then waits.
FAMILY = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
open(sys.argv[1], "w").write(f"{os.getpid()} {child.pid}")
time.sleep(3600)
"""

STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1], "w").write("armed")
time.sleep(3600)
"""


def _argv(code: str, *args: str) -> str:
    base = py(code)[:-1]
    return base + "".join(f', "{a}"' for a in args) + "]"


def test_stop_signal_reaches_the_whole_group(make_daemon, tmp_path):
    """`heartline stop` ends the leader and its child; the record says no SIGKILL was needed."""
    pids = tmp_path / "pids"
    d = make_daemon(f"""
        [programs.family]
        command = {_argv(FAMILY, str(pids))}
    """)
    wait_until(lambda: pids.exists() and pids.read_text(), 10, "pids file")
    leader, child = map(int, pids.read_text().split())
    res = d.cli("stop", "family")
    assert "family: stopped" in res.stdout
    assert not alive(leader) and not alive(child)
    p = d.program("family")
    assert p["state"] == "stopped" and p["last_stop_killed"] is False


def test_sigkill_after_stop_timeout_is_recorded(make_daemon, tmp_path):
    """A program ignoring SIGTERM is killed after stop_timeout, and the record says so."""
    armed = tmp_path / "armed"
    d = make_daemon(f"""
        [programs.stubborn]
        command = {_argv(STUBBORN, str(armed))}
        stop_timeout = "300ms"
    """)
    wait_until(armed.exists, 10, "signal handler armed")
    pid = d.program("stubborn")["pid"]
    res = d.cli("stop", "stubborn")
    assert "killed with SIGKILL" in res.stdout
    assert not alive(pid)
    p = d.program("stubborn")
    assert p["last_stop_killed"] is True and p["last_exit"]["signal"] == 9


def test_custom_stop_signal(make_daemon, tmp_path):
    """stop_signal = "INT" is what the program receives."""
    got = tmp_path / "got"
    code = """
import signal, sys, time
def h(n, f):
    open(sys.argv[1], "w").write(signal.Signals(n).name); sys.exit(0)
signal.signal(signal.SIGINT, h)
time.sleep(3600)
"""
    d = make_daemon(f"""
        [programs.app]
        command = {_argv(code, str(got))}
        stop_signal = "INT"
    """)
    d.wait_state("app", "running")
    d.cli("stop", "app")
    assert got.read_text() == "SIGINT"


def test_strays_of_a_crashed_leader_are_killed_before_restart(make_daemon, tmp_path):
    """When the leader dies unasked, what it left in its group is killed, so no copy doubles up."""
    pids = tmp_path / "pids"
    make_daemon(f"""
        [programs.family]
        command = {_argv(FAMILY, str(pids))}
    """)
    wait_until(lambda: pids.exists() and pids.read_text(), 10, "pids file")
    leader, child = map(int, pids.read_text().split())
    pids.unlink()
    os.kill(leader, 9)
    wait_until(lambda: not alive(child), 10, "the stray child to be killed")
    wait_until(lambda: pids.exists() and pids.read_text(), 10, "the restarted family")


def test_restart_and_signal_commands(make_daemon, tmp_path):
    """`restart` gives a new pid; `signal HUP` reaches the program's handler."""
    got = tmp_path / "hup"
    code = """
import signal, sys, time
signal.signal(signal.SIGHUP, lambda n, f: open(sys.argv[1], "w").write("hup"))
open(sys.argv[1] + ".armed", "w").close()
while True:
    time.sleep(1)
"""
    d = make_daemon(f"""
        [programs.app]
        command = {_argv(code, str(got))}
    """)
    before = d.wait_state("app", "running")["pid"]
    wait_until(lambda: os.path.exists(f"{got}.armed"), 10, "the handler installed")
    d.cli("signal", "HUP", "app")
    wait_until(got.exists, 10, "the HUP handler")
    res = d.cli("restart", "app")
    assert "app: running" in res.stdout
    assert d.program("app")["pid"] != before
