"""What a daemon started after a crash makes of what the previous one left: a state file that is
torn or hostile, leftovers it cannot adopt, counters, and operations that were under way."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from tests.integration.conftest import HEARTLINE, alive, py, wait_until

# Ignores SIGTERM, and refuses to run beside another copy of itself: a second copy writes
# "DOUBLE" into the marker file and exits.
SINGLE = py("""
import fcntl, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
lock = open(sys.argv[1], "a")
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    with open(sys.argv[1] + ".double", "a") as f:
        f.write("DOUBLE\\n")
    sys.exit(1)
while True:
    time.sleep(1)
""")


def _corrupt(d, mutate) -> None:
    path = d.run_dir / "state.json"
    state = json.loads(path.read_text())
    mutate(state)
    path.write_text(json.dumps(state))


def test_leftover_ignoring_sigterm_is_gone_before_the_new_copy_starts(make_daemon, tmp_path):
    """Unreadable state.json: the program left running (it ignores SIGTERM) is killed after its
    stop_timeout, and only then does its new copy start; two never run at once."""
    lock = tmp_path / "single.lock"
    d = make_daemon(f"""
        [programs.single]
        command = {SINGLE[:-1]}, "{lock}"]
        stop_timeout = "1s"
    """)
    old = d.program("single")["pid"]
    d.kill9()
    (d.run_dir / "state.json").write_text("{ this is not json")
    d.start()
    p = wait_until(
        lambda: (q := d.program("single"))["pid"] not in (None, old) and q, 20, "the new copy"
    )
    assert p["state"] == "running"
    assert not alive(old)
    assert not (tmp_path / "single.lock.double").exists(), "two copies ran at once"
    assert "left by the previous daemon" in d.log.read_text()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("restarts", "x"),
        ("pipes", []),
        ("pipes", 5),
        ("started", "abc"),
        ("pid", 2**40),
        ("start_time", None),
        ("others", [[1, "x"]]),
        ("intent", "explode"),
    ],
)
def test_state_record_of_the_wrong_shape_does_not_stop_the_daemon(make_daemon, field, value):
    """A record with a field of the wrong type is logged and its program treated as unknown:
    the daemon starts, adopts the others, stops that program's old process and starts it anew."""
    d = make_daemon("""
        [programs.bad]
        command = ["/bin/sleep", "3600"]
        stop_timeout = "1s"
        [programs.good]
        command = ["/bin/sleep", "3600"]
    """)
    before = {n: p["pid"] for n, p in d.status().items()}
    d.kill9()
    _corrupt(d, lambda s: s["programs"]["bad"].__setitem__(field, value))
    d.start()
    good = d.program("good")
    assert good["pid"] == before["good"] and good["adopted"]
    wait_until(lambda: not alive(before["bad"]), 15, "the unknown old copy to be stopped")
    p = wait_until(
        lambda: (q := d.program("bad"))["state"] == "running" and q["pid"] and q, 15, "a new copy"
    )
    assert p["pid"] != before["bad"]
    assert "is unusable" in d.log.read_text()


def test_notify_address_is_random_and_kept_across_a_crash(make_daemon):
    """NOTIFY_SOCKET names a random address (not derived from the run directory), recorded in
    the state file and bound again by the next daemon."""
    d = make_daemon('[programs.a]\ncommand = ["/bin/sleep", "3600"]\n')
    with d.client() as c:
        address = c.get("/v1/status")["daemon"]["notify"]["socket"]
    prefix, _, token = address.rpartition("/")
    assert prefix == "@heartline/notify" and len(token) == 32 and int(token, 16) >= 0
    assert d.state_file()["notify"] == address
    d.kill9()
    d.start()
    with d.client() as c:
        assert c.get("/v1/status")["daemon"]["notify"]["socket"] == address


SQUATTER = textwrap.dedent("""
    import os, socket, sys
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(b"\\0" + sys.argv[1][1:].encode())
    print("bound", flush=True)
    n = 0
    while True:
        s.recv(4096)
        n += 1
        with open(sys.argv[2] + ".tmp", "w") as f:
            f.write(str(n))
        os.replace(sys.argv[2] + ".tmp", sys.argv[2])
""")

BEATER = py("""
import os, socket, time
addr = os.environ["NOTIFY_SOCKET"]
addr = "\\0" + addr[1:] if addr.startswith("@") else addr
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
while True:
    try:
        s.sendto(b"WATCHDOG=1", addr)
    except OSError:
        pass
    time.sleep(0.05)
""")


def test_squatted_notify_address_does_not_get_healthy_programs_restarted(make_daemon, tmp_path):
    """Another process binds an adopted program's notify address while the daemon is down: the
    new daemon sees that it cannot hear the program, says so, and does not restart it."""
    d = make_daemon(f"""
        [programs.beat]
        command = {BEATER}
        watchdog = "500ms"
    """)
    p = d.wait_state("beat", "running")
    with open(f"/proc/{p['pid']}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    address = env[b"NOTIFY_SOCKET"].decode()
    d.kill9()
    count = tmp_path / "count"
    squatter = subprocess.Popen(
        [sys.executable, "-c", SQUATTER, address, str(count)],
        stdout=subprocess.PIPE,
        text=True,
        env=d.env,
    )
    try:
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "bound"
        d.start()
        mark = int(count.read_text()) if count.exists() else 0
        # Four watchdog periods of beats going to the squatter.
        wait_until(
            lambda: count.exists() and int(count.read_text()) > mark + 40, 15, "beats to flow"
        )
        q = d.program("beat")
        assert q["pid"] == p["pid"] and q["restarts"] == 0, q
        assert "watchdog suspended" in q["detail"]
        assert "held by another process" in d.log.read_text()
    finally:
        squatter.kill()
        squatter.communicate(timeout=10)


# Crashes on its first three starts (counted in a file), then runs.
CRASH_THRICE = py("""
import sys, time
path = sys.argv[1]
try:
    n = int(open(path).read())
except OSError:
    n = 0
open(path, "w").write(str(n + 1))
if n < 3:
    sys.exit(1)
while True:
    time.sleep(1)
""")


def test_restart_count_survives_adoption(make_daemon, tmp_path):
    """Three restarts before the crash are three after it, not one or zero."""
    d = make_daemon(f"""
        [programs.c]
        command = {CRASH_THRICE[:-1]}, "{tmp_path / "n"}"]
        backoff = {{ initial = "0s", max = "0s" }}
    """)
    p = wait_until(
        lambda: (q := d.program("c"))["state"] == "running" and q["restarts"] == 3 and q,
        15,
        "three restarts",
    )
    d.kill9()
    d.start()
    q = d.program("c")
    assert q["pid"] == p["pid"] and q["adopted"] and q["restarts"] == 3


def test_restart_count_of_a_program_in_backoff_survives_a_crash(make_daemon):
    """A crash-looping program caught between two runs (no process) keeps its count too."""
    d = make_daemon("""
        [programs.loop]
        command = ["/bin/false"]
        backoff = { initial = "1s", factor = 1.0, jitter = 0.0 }
        crash_loop = { max_starts = 0 }
    """)
    p = wait_until(
        lambda: (q := d.program("loop"))["state"] == "backoff" and q["restarts"] >= 2 and q,
        15,
        "two restarts",
    )
    wait_until(lambda: d.state_file()["programs"]["loop"]["restarts"] == p["restarts"], 5, "saved")
    d.kill9()
    d.start()
    assert d.program("loop")["restarts"] >= p["restarts"]


def test_restart_in_flight_is_finished_by_the_next_daemon(make_daemon, tmp_path):
    """A daemon that dies while an operator's restart waits for the old copy to stop: the next
    daemon does not adopt the old copy as running; it finishes the restart."""
    lock = tmp_path / "single.lock"
    d = make_daemon(f"""
        [programs.slow]
        command = {SINGLE[:-1]}, "{lock}"]
        stop_timeout = "2s"
    """)
    old = d.program("slow")["pid"]
    cli = subprocess.Popen(
        [*HEARTLINE, "-c", str(d.config), "restart", "slow"],
        env=d.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        d.wait_state("slow", "stopping")
        wait_until(lambda: d.state_file()["programs"]["slow"].get("intent"), 5, "the intent")
        d.kill9()
    finally:
        cli.wait(30)
    d.start()
    assert not (d.program("slow")["state"] == "running" and d.program("slow")["pid"] == old)
    p = wait_until(
        lambda: (q := d.program("slow"))["pid"] not in (None, old) and q, 20, "the new copy"
    )
    assert p["state"] == "running" and not alive(old)
    assert not (tmp_path / "single.lock.double").exists()


def test_operator_stop_and_finished_jobs_stay_down_after_a_crash(make_daemon, tmp_path):
    """A program an operator stopped stays stopped, and a one-shot job that exited for good is
    not run a second time, when a new daemon takes over."""
    runs = tmp_path / "runs"
    once = py("""
        import sys
        open(sys.argv[1], "a").write("ran\\n")
    """)
    d = make_daemon(f"""
        [programs.held]
        command = ["/bin/sleep", "3600"]
        [programs.once]
        command = {once[:-1]}, "{runs}"]
        restart = "on-failure"
    """)
    d.wait_state("once", "exited")
    d.cli("stop", "held")
    wait_until(lambda: d.state_file()["programs"]["held"].get("intent") == "stop", 5, "saved")
    d.kill9()
    d.start()
    assert d.program("held")["state"] == "stopped"
    once_state = d.program("once")
    assert once_state["state"] == "exited" and once_state["last_exit"]["code"] == 0
    assert runs.read_text() == "ran\n"
    d.cli("start", "held")
    d.wait_state("held", "running")


def test_plain_crash_and_restart_stops_nothing(make_daemon):
    """The adopted program is the daemon's again, not a leftover: nothing is stopped."""
    d = make_daemon('[programs.a]\ncommand = ["/bin/sleep", "3600"]\n')
    before = d.program("a")["pid"]
    d.kill9()
    d.start()
    assert alive(before) and d.program("a")["pid"] == before
    assert "stopping pid" not in d.log.read_text()
