"""Heartbeats in systemd's notify protocol: readiness, watchdog, status, and what is refused."""

from __future__ import annotations

import json
import os
import socket

from tests.integration.conftest import py, wait_until

from heartline.supervise._heartbeat import SHARDS

# A program that beats while a file exists, then hangs in a recognisable function. SIGUSR2
# dumps its stacks (what a heartline report handler or faulthandler.register does).
BEATER = py("""
import faulthandler, os, signal, socket, sys, time
faulthandler.register(signal.SIGUSR2, all_threads=True)
addr = os.environ["NOTIFY_SOCKET"]
addr = "\\0" + addr[1:] if addr.startswith("@") else addr
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1\\nSTATUS=serving", addr)
def stuck_forever():
    while True:
        time.sleep(1)
while os.path.exists(sys.argv[1]):
    s.sendto(b"WATCHDOG=1", addr)
    time.sleep(0.05)
stuck_forever()
""")

SDNOTIFY_APP = py("""
import sys, time, sdnotify
n = sdnotify.SystemdNotifier()
time.sleep(0.3)
n.notify("READY=1")
n.notify("STATUS=answering requests")
for _ in range(2000):
    n.notify("WATCHDOG=1")
    time.sleep(0.1)
""")


def test_hung_program_is_restarted_with_its_stack_in_the_log(make_daemon, tmp_path):
    """No heartbeat within `watchdog`: report signal, stop, restart; the stack is in the log."""
    alive_flag = tmp_path / "beat"
    alive_flag.touch()
    d = make_daemon(f"""
        [programs.app]
        command = {BEATER[:-1]}, "{alive_flag}"]
        ready = "notify"
        watchdog = "400ms"
        report_wait = "300ms"
        stop_timeout = "1s"
        backoff = {{ initial = "0s" }}
    """)
    first = d.wait_state("app", "running")
    assert first["notify_status"] == "serving"
    alive_flag.unlink()  # stop beating
    p = wait_until(lambda: (q := d.program("app"))["restarts"] == 1 and q, 10, "the restart")
    assert p["last_exit"]["reason"] == "watchdog"
    assert "no heartbeat" in p["last_exit"]["detail"]
    wait_until(
        lambda: "stuck_forever" in d.cli("logs", "app", "--stderr", "-n", "100").stdout,
        10,
        "the stack",
    )


def test_program_using_sdnotify_works_unchanged(make_daemon):
    """A systemd-style program (sdnotify package) is gated on READY=1 and kept by its beats."""
    d = make_daemon(f"""
        [programs.svc]
        command = {SDNOTIFY_APP}
        ready = "notify"
        watchdog = "1s"
    """)
    assert d.program("svc")["state"] == "starting"
    p = d.wait_state("svc", "running")
    # READY=1 and STATUS= are two datagrams: the status may land a moment after the state.
    wait_until(lambda: d.program("svc")["notify_status"] == "answering requests", 5, "STATUS=")
    # Well past two watchdog periods, still the same process.
    wait_until(lambda: d.program("svc")["uptime"] > 2.5, 10, "uptime past two periods")
    q = d.program("svc")
    assert q["pid"] == p["pid"] and q["restarts"] == 0


def test_watchdog_environment_matches_systemd(make_daemon, tmp_path):
    """WATCHDOG_USEC is the period in microseconds and WATCHDOG_PID the program's own pid."""
    out = tmp_path / "env.json"
    code = py("""
import json, os, sys, time
json.dump({k: os.environ.get(k) for k in ("WATCHDOG_USEC", "WATCHDOG_PID", "NOTIFY_SOCKET")}
          | {"pid": os.getpid()}, open(sys.argv[1], "w"))
time.sleep(3600)
""")
    d = make_daemon(f"""
        [programs.app]
        command = {code[:-1]}, "{out}"]
        watchdog = "30s"
    """)
    wait_until(out.exists, 10, "the environment dump")
    env = wait_until(lambda: out.read_text() and json.loads(out.read_text()), 10, "json")
    assert env["WATCHDOG_USEC"] == "30000000"
    assert env["WATCHDOG_PID"] == str(env["pid"]) == str(d.program("app")["pid"])
    assert env["NOTIFY_SOCKET"].startswith("@heartline/notify/")


def test_ready_gates_dependent_programs(make_daemon, tmp_path):
    """A program that `requires` a notify-ready one starts only after READY=1."""
    go = tmp_path / "go"
    waiter = py("""
import os, socket, sys, time
addr = "\\0" + os.environ["NOTIFY_SOCKET"][1:]
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", addr)
time.sleep(3600)
""")
    d = make_daemon(f"""
        [programs.db]
        command = {waiter[:-1]}, "{go}"]
        ready = "notify"
        [programs.app]
        command = ["/bin/sleep", "3600"]
        requires = ["db"]
    """)
    assert d.program("db")["state"] == "starting"
    app = d.program("app")
    assert app["state"] == "starting" and app["pid"] is None and "waiting for db" in app["detail"]
    go.touch()
    d.wait_state("db", "running")
    assert d.wait_state("app", "running")["pid"]


def test_no_ready_within_start_timeout_restarts(make_daemon):
    """ready = "notify" without READY=1 within start_timeout: restarted, reason start-timeout."""
    d = make_daemon("""
        [programs.silent]
        command = ["/bin/sleep", "3600"]
        ready = "notify"
        start_timeout = "300ms"
        report_signal = "none"
        backoff = { initial = "0s" }
    """)
    p = wait_until(lambda: (q := d.program("silent"))["restarts"] >= 1 and q, 10, "a restart")
    assert p["last_exit"]["reason"] == "start-timeout"


def test_foreign_and_malformed_datagrams_are_dropped(make_daemon, tmp_path):
    """Datagrams from other processes, bad encodings and oversized ones are dropped and counted."""
    go = tmp_path / "go"
    bad = py("""
import os, socket, sys, time
addr = "\\0" + os.environ["NOTIFY_SOCKET"][1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for junk in (b"\\xff\\xfe", b"no equals sign", b"=x", b"READY=1" + b"x" * 9000, b""):
    s.sendto(junk, addr)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
s.sendto(b"READY=1", addr)
time.sleep(3600)
""")
    d = make_daemon(f"""
        [programs.app]
        command = {bad[:-1]}, "{go}"]
        ready = "notify"
    """)
    with d.client() as c:
        address = c.get("/v1/status")["daemon"]["notify"]["socket"]
    # This test process is no program's: its READY=1 must not count.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as foreign:
        for shard in range(SHARDS):  # whichever socket the program got
            foreign.sendto(b"READY=1", f"\0{address[1:]}/{shard}".encode())
    with d.client() as c:
        wait_until(
            lambda: c.get("/v1/status")["daemon"]["notify"]["dropped"] >= SHARDS + 5, 10, "drops"
        )
    assert d.program("app")["state"] == "starting"
    go.touch()
    d.wait_state("app", "running")
    with d.client() as c:
        notify = c.get("/v1/status")["daemon"]["notify"]
    assert notify["received"] >= 1 and notify["dropped"] >= SHARDS + 5
    assert os.path.exists(f"/proc/{d.proc.pid}")
