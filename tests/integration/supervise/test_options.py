"""Per-program options: env, cwd, umask, numprocs, shell, start order and readiness."""

from __future__ import annotations

import json

from tests.integration.conftest import py, wait_until

REPORT = py("""
import json, os, sys
um = os.umask(0); os.umask(um)
json.dump({"cwd": os.getcwd(), "umask": um, "env": os.environ.get("GREETING"),
           "prog": os.environ.get("HEARTLINE_PROGRAM")}, open(sys.argv[1], "w"))
""")


def test_env_cwd_umask(make_daemon, tmp_path):
    """env adds variables, cwd sets the directory, umask is applied; HEARTLINE_PROGRAM is set."""
    work = tmp_path / "work"
    work.mkdir()
    out = tmp_path / "out.json"
    d = make_daemon(f"""
        [programs.rep]
        command = {REPORT[:-1]}, "{out}"]
        env = {{ GREETING = "hello" }}
        cwd = "{work}"
        umask = "027"
        restart = "never"
    """)
    d.wait_state("rep", "exited")
    got = json.loads(out.read_text())
    assert got == {"cwd": str(work), "umask": 0o027, "env": "hello", "prog": "rep"}


def test_shell_only_when_asked(make_daemon, tmp_path):
    """shell = true runs the command through /bin/sh; argv lists never touch a shell."""
    out = tmp_path / "out"
    d = make_daemon(f"""
        [programs.sh]
        command = "echo $((6 * 7)) > {out}"
        shell = true
        restart = "never"
        [programs.argv]
        command = ["/bin/echo", "$((6 * 7))", ";", "rm", "-rf", "/"]
        restart = "never"
    """)
    d.wait_state("sh", "exited")
    assert out.read_text().strip() == "42"
    d.wait_state("argv", "exited")
    assert d.cli("logs", "argv").stdout.strip() == "$((6 * 7)) ; rm -rf /"


def test_requires_waits_for_readiness_and_after_orders(make_daemon, tmp_path):
    """`requires` starts only once the dependency is running (ready_after); `after` follows start order."""
    log = tmp_path / "order"
    stamp = py("""
import sys, time
with open(sys.argv[1], "a") as f:
    f.write(f"{sys.argv[2]} {time.monotonic()}\\n")
time.sleep(3600)
""")
    d = make_daemon(f"""
        [programs.app]
        command = {stamp[:-1]}, "{log}", "app"]
        requires = ["db"]
        [programs.db]
        command = {stamp[:-1]}, "{log}", "db"]
        ready_after = "700ms"
        [programs.cron]
        command = {stamp[:-1]}, "{log}", "cron"]
        after = ["app"]
    """)
    assert d.program("app")["state"] == "starting"
    assert "waiting for db" in d.program("app")["detail"]
    assert "waiting for app" in d.program("cron")["detail"]
    app = d.wait_state("app", "running")
    cron = d.wait_state("cron", "running")
    assert cron["started"] >= app["started"]
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) == 3, 10, "three starts")
    times = {ln.split()[0]: float(ln.split()[1]) for ln in log.read_text().splitlines()}
    assert times["app"] - times["db"] >= 0.6


def test_numprocs_instances(make_daemon):
    """numprocs = 3 runs three instances, addressable one by one or as a group."""
    d = make_daemon("""
        [programs.w]
        command = ["/bin/sleep", "3600"]
        numprocs = 3
    """)
    st = d.status()
    assert sorted(st) == ["w:0", "w:1", "w:2"]
    assert len({p["pid"] for p in st.values()}) == 3
    d.cli("stop", "w:1")
    assert [d.program(n)["state"] for n in ("w:0", "w:1", "w:2")] == [
        "running",
        "stopped",
        "running",
    ]
    d.cli("stop", "w")
    assert {p["state"] for p in d.status().values()} == {"stopped"}


def test_stop_all_stops_dependents_first(make_daemon, tmp_path):
    """`stop all` stops a program before the programs it requires."""
    log = tmp_path / "stops"
    record = py("""
import signal, sys, time
def bye(n, f):
    with open(sys.argv[1], "a") as out:
        out.write(sys.argv[2] + "\\n")
    time.sleep(0.2)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
open(sys.argv[1] + "." + sys.argv[2], "w").close()
time.sleep(3600)
""")
    d = make_daemon(f"""
        [programs.db]
        command = {record[:-1]}, "{log}", "db"]
        [programs.app]
        command = {record[:-1]}, "{log}", "app"]
        requires = ["db"]
        [programs.web]
        command = {record[:-1]}, "{log}", "web"]
        requires = ["app"]
    """)
    for name in ("db", "app", "web"):
        wait_until(lambda name=name: (tmp_path / f"stops.{name}").exists(), 10, f"{name} armed")
    d.cli("stop", "all")
    assert log.read_text().split() == ["web", "app", "db"]
