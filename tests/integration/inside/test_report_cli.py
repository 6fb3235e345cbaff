"""`heartline report NAME|PID`: a supervised program's report through the daemon, and a
process outside heartline's, which is sent a signal only when asked to."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from tests.integration.conftest import HEARTLINE, py, wait_until

REPORTING = py("""
import threading, time
from heartline.service import reports
reports.install()
def distinctive_worker_function():
    threading.Event().wait()
threading.Thread(target=distinctive_worker_function, name="worker-1", daemon=True).start()
open("armed", "w").close()
while True:
    time.sleep(1)
""")


def test_report_of_a_supervised_program(make_daemon):
    """The report names the program's threads, in text and JSON; the program keeps running."""
    d = make_daemon(f"""
        [programs.app]
        command = {REPORTING}
        cwd = "."
    """)
    wait_until((d.root / "armed").exists, 15, "reports installed")
    pid = d.program("app")["pid"]
    text = d.cli("report", "app").stdout
    assert "distinctive_worker_function" in text and "worker-1" in text
    doc = json.loads(d.cli("report", "app", "--json").stdout)
    assert "distinctive_worker_function" in json.dumps(doc)
    assert d.program("app")["pid"] == pid and d.program("app")["restarts"] == 0
    # The reports are kept in the program's report directory, where the next run finds them.
    assert list((d.root / "logs" / "reports" / "app").glob("report-*.txt"))


def test_report_refused_for_a_program_without_reports(make_daemon):
    """A program that does not handle the report signal is not sent it (it would die)."""
    d = make_daemon('[programs.plain]\ncommand = ["/bin/sleep", "3600"]\n')
    pid = d.program("plain")["pid"]
    res = d.cli("report", "plain", check=False)
    assert res.returncode != 0 and "does not handle SIGUSR2" in res.stderr
    assert res.stderr.count("\n") == 1
    assert d.program("plain")["pid"] == pid


#: Handles the report signal, but writes its reports to a directory of its own choosing: the
#: daemon, which looks in the program's report directory, never sees one.
ELSEWHERE = py("""
import time
from heartline.service import reports
reports.install(directory="elsewhere")
open("armed", "w").close()
while True:
    time.sleep(1)
""")


def test_a_report_that_never_comes_ends_at_the_timeout_and_the_daemon_serves_meanwhile(
    make_daemon,
):
    """When no report lands in the program's report directory, `report -t 3` fails with one
    line after the 3 s, not before; while it waits, the daemon answers other requests."""
    d = make_daemon(f"""
        [programs.app]
        command = {ELSEWHERE}
        cwd = "."
    """)
    wait_until((d.root / "armed").exists, 15, "reports installed")
    started = time.monotonic()
    waiting = subprocess.Popen(
        [*HEARTLINE, "-c", str(d.config), "report", "app", "-t", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=d.env,
    )
    try:
        wait_until(lambda: list((d.root / "elsewhere").glob("report-*.txt")), 10, "the report")
        assert d.program("app")["state"] == "running"
        answered_while_waiting = waiting.poll() is None
        _, err = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert answered_while_waiting
    assert time.monotonic() - started >= 3
    assert waiting.returncode == 1
    assert err == "heartline: no report from app within 3s\n"


#: A program that catches SIGUSR2 for its own purpose (as nginx and unicorn do) and writes down
#: every signal it receives; SIGALRM, sent by the test afterwards, marks the end of the record.
RECORDER = """
import signal
def record(signum, frame):
    with open("received", "a") as f:
        f.write(signal.Signals(signum).name + "\\n")
signal.signal(signal.SIGUSR2, record)
signal.signal(signal.SIGALRM, record)
open("armed", "w").close()
while True:
    signal.pause()
"""


def report_pid(tmp_path, pid, *options, env=None):
    """`heartline report PID ...` with no daemon to ask and no py-spy on PATH."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    return subprocess.run(
        [*HEARTLINE, "-s", str(tmp_path / "none.sock"), "report", str(pid), *options],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(empty), **(env or {})},
        timeout=30,
        check=False,
    )


@pytest.fixture
def recorder(tmp_path):
    """The RECORDER program, running in tmp_path until the test ends."""
    with subprocess.Popen([sys.executable, "-c", RECORDER], cwd=tmp_path) as proc:
        try:
            wait_until((tmp_path / "armed").exists, 15, "the recorder's handlers")
            yield proc
        finally:
            proc.kill()


def received(tmp_path, proc):
    """The signals ``proc`` received, read once the SIGALRM sent now is in its record: the
    kernel and Python handle lower-numbered signals (SIGUSR2) first, so one sent before it
    would be recorded by then."""
    os.kill(proc.pid, signal.SIGALRM)
    record = tmp_path / "received"
    wait_until(lambda: record.exists() and "SIGALRM" in record.read_text(), 15, "SIGALRM")
    return record.read_text().split()


def test_report_by_pid_sends_no_signal_unless_told(tmp_path, recorder):
    """A pid heartline does not supervise, which catches SIGUSR2 for its own purpose, and no
    py-spy: nothing is sent, and a one-line error names both ways out (py-spy, --signal)."""
    res = report_pid(tmp_path, recorder.pid)
    assert received(tmp_path, recorder) == ["SIGALRM"]
    assert res.returncode == 1, res
    assert res.stderr.count("\n") == 1
    assert "py-spy" in res.stderr and "--signal SIG" in res.stderr
    assert f"pid {recorder.pid} (" in res.stderr
    assert recorder.poll() is None


def test_report_by_pid_with_signal_sends_it_and_says_so(tmp_path, recorder):
    """--signal USR2: heartline says what it sends to which process, then sends it."""
    with open(f"/proc/{recorder.pid}/comm") as f:
        name = f.read().strip()
    res = report_pid(tmp_path, recorder.pid, "--signal", "USR2")
    assert res.returncode == 0, res
    assert res.stderr.startswith(f"heartline: sending SIGUSR2 to pid {recorder.pid} ({name}): ")
    assert received(tmp_path, recorder) == ["SIGUSR2", "SIGALRM"]


def test_report_by_pid_with_signal_writes_the_report(tmp_path):
    """A pid outside heartline with reports installed: --signal usr2 makes it write its
    report into its report directory."""
    reports_dir = tmp_path / "reports"
    env = {"HEARTLINE_REPORT_DIR": str(reports_dir)}
    code = (
        "import time\nfrom heartline.service import reports\nreports.install()\n"
        "open('armed', 'w').close()\ntime.sleep(60)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, **env}
    ) as app:
        try:
            wait_until((tmp_path / "armed").exists, 15, "reports installed")
            res = report_pid(tmp_path, app.pid, "--signal", "usr2", env=env)
            assert res.returncode == 0, res
            assert "sending SIGUSR2" in res.stderr
            wait_until(lambda: list(reports_dir.glob("report-*.txt")), 15, "the report file")
        finally:
            app.kill()


def test_report_by_pid_refuses_a_signal_the_process_does_not_catch(tmp_path):
    """--signal to a process that does not catch it (it would end it): nothing is sent, a
    one-line error says so, the process lives on."""
    with subprocess.Popen(["/bin/sleep", "60"]) as plain:
        try:
            res = report_pid(tmp_path, plain.pid, "--signal", "USR2")
            assert res.returncode == 1, res
            assert res.stderr.count("\n") == 1
            assert f"pid {plain.pid} (sleep) does not catch SIGUSR2" in res.stderr
            assert plain.poll() is None
        finally:
            plain.kill()


@pytest.mark.parametrize(
    ("target", "options", "message"),
    [
        ("app", ["--signal", "USR2"], "--signal is for a pid heartline does not supervise"),
        ("1", ["--signal", "NOSUCH"], "unknown signal 'NOSUCH'"),
    ],
)
def test_report_signal_option_misuse_is_one_line(tmp_path, target, options, message):
    """--signal with a program name, or an unknown signal: a one-line usage error (exit 2)."""
    res = report_pid(tmp_path, target, *options)
    assert res.returncode == 2, res
    assert res.stderr.count("\n") == 1 and message in res.stderr
