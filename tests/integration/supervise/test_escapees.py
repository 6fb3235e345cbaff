"""Processes that leave a program's process group (setsid, a double fork) stay the program's:
the daemon, a child subreaper, finds them, shows them, stops them with the program, keeps them
across its own crash, and never lets them run on unsupervised."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.integration.conftest import alive, py, wait_until

# The main process forks a child that forks a grandchild; the grandchild calls setsid(), writes
# its pid and waits; the child exits at once and the main process right after: a daemonizing
# program, as `command = ["nginx"]` without `daemon off` would be.
DOUBLE_FORK_SETSID = py("""
import os, sys, time
pidfile = sys.argv[1]
if os.fork() == 0:
    if os.fork() == 0:
        os.setsid()
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pidfile + ".tmp", pidfile)
        while True:
            time.sleep(1)
    os._exit(0)
while not os.path.exists(pidfile):
    time.sleep(0.01)
sys.exit(0)
""")

# The classic forking daemon: a double fork without setsid (the grandchild stays in the
# program's process group). Its SIGTERM handler notes that it was stopped gracefully.
DOUBLE_FORK_IN_GROUP = py("""
import os, signal, sys, time
pidfile = sys.argv[1]
if os.fork() == 0:
    if os.fork() == 0:
        def term(*_):
            with open(pidfile + ".term", "w") as f:
                f.write("graceful")
            os._exit(0)
        signal.signal(signal.SIGTERM, term)
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pidfile + ".tmp", pidfile)
        while True:
            time.sleep(1)
    os._exit(0)
while not os.path.exists(pidfile):
    time.sleep(0.01)
sys.exit(0)
""")

# A long-running program that starts a helper in a session of its own (Popen's
# start_new_session), as job runners do, and keeps running.
SETSID_CHILD = py("""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                         start_new_session=True)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(child.pid))
import os
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    time.sleep(1)
""")


def _pid(path: Path) -> int:
    wait_until(path.exists, 10, f"{path.name} to be written")
    return int(path.read_text())


def test_daemonized_grandchild_is_stopped_not_left_running(make_daemon, tmp_path):
    """A double fork + setsid grandchild is stopped when the main process exits, and the
    daemon's log says so; status never claims the program exited while it still runs."""
    pidfile = tmp_path / "grandchild.pid"
    d = make_daemon(f"""
        [programs.forker]
        command = {DOUBLE_FORK_SETSID[:-1]}, "{pidfile}"]
        restart = "on-failure"
    """)
    grandchild = _pid(pidfile)
    p = d.wait_state("forker", "exited")
    assert p["last_exit"]["code"] == 0
    assert not alive(grandchild), "the setsid grandchild runs on unsupervised"
    log = d.log.read_text()
    assert "leaving 1 process behind" in log and str(grandchild) in log


def test_forking_daemon_in_the_group_is_stopped_gracefully_with_a_log_line(make_daemon, tmp_path):
    """A grandchild left in the program's group after the main process exits gets the stop
    signal (its SIGTERM handler runs), not a silent SIGKILL, and the log names it."""
    pidfile = tmp_path / "daemon.pid"
    d = make_daemon(f"""
        [programs.classic]
        command = {DOUBLE_FORK_IN_GROUP[:-1]}, "{pidfile}"]
        restart = "never"
    """)
    grandchild = _pid(pidfile)
    d.wait_state("classic", "exited")
    wait_until(lambda: not alive(grandchild), 10, "the grandchild to be stopped")
    assert (tmp_path / "daemon.pid.term").read_text() == "graceful"
    assert f"leaving 1 process behind: {grandchild}" in d.log.read_text()


def test_setsid_child_is_shown_and_stopped_with_its_program(make_daemon, tmp_path):
    """A child in a session of its own shows in status under its program (not in another
    group's count) and `heartline stop` stops it too."""
    pidfile = tmp_path / "child.pid"
    d = make_daemon(f"""
        [programs.runner]
        command = {SETSID_CHILD[:-1]}, "{pidfile}"]
    """)
    child = _pid(pidfile)
    wait_until(lambda: child in d.program("runner")["others"], 10, "the child in status")
    assert "+1" in d.cli("status", "runner").stdout
    top = d.cli("top", "--once", "--tree").stdout
    assert str(child) in top
    d.cli("stop", "runner")
    assert not alive(child), "the setsid child outlived `heartline stop`"


def test_escaped_child_is_kept_across_a_daemon_crash(make_daemon, tmp_path):
    """After the daemon is SIGKILLed and started again, the escaped child is still counted as
    the program's and is stopped with it."""
    pidfile = tmp_path / "child.pid"
    d = make_daemon(f"""
        [programs.runner]
        command = {SETSID_CHILD[:-1]}, "{pidfile}"]
    """)
    child = _pid(pidfile)
    wait_until(lambda: child in d.program("runner")["others"], 10, "the child in status")
    main = d.program("runner")["pid"]
    d.kill9()
    d.start()
    p = d.program("runner")
    assert p["pid"] == main and p["adopted"]
    assert child in p["others"]
    d.cli("stop", "runner")
    assert not alive(child) and not alive(main)


def test_escapee_of_a_program_that_exits_is_stopped_before_the_restart(make_daemon, tmp_path):
    """A program that crashes while its setsid child runs: the child is stopped before the
    new copy starts, so there are never two helpers."""
    pidfile = tmp_path / "child.pid"
    d = make_daemon(f"""
        [programs.runner]
        command = {SETSID_CHILD[:-1]}, "{pidfile}"]
        backoff = {{ initial = "0s" }}
    """)
    child = _pid(pidfile)
    first = d.program("runner")["pid"]
    pidfile.unlink()
    os.kill(first, signal.SIGKILL)
    second_child = _pid(pidfile)
    assert second_child != child
    assert not alive(child), "the first copy's helper still runs beside the second"
    p = d.wait_state("runner", "running")
    assert p["restarts"] == 1 and p["pid"] != first
