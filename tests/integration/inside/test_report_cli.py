"""`heartline report NAME`: a supervised program's report through the daemon."""

from __future__ import annotations

import json

from tests.integration.conftest import py, wait_until

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


def test_report_by_pid_outside_heartline(tmp_path):
    """A pid heartline does not supervise: with reports installed it is sent SIGUSR2 and its
    report lands in its report directory; without, a one-line error names the way out."""
    import os
    import subprocess
    import sys

    from tests.integration.conftest import HEARTLINE

    reports_dir = tmp_path / "reports"
    env = {"PATH": "/usr/bin:/bin", "HEARTLINE_REPORT_DIR": str(reports_dir)}  # no py-spy here
    code = (
        "import time\nfrom heartline.service import reports\nreports.install()\n"
        "open('armed', 'w').close()\ntime.sleep(60)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, **env}
    ) as app:
        try:
            wait_until((tmp_path / "armed").exists, 15, "reports installed")
            res = subprocess.run(
                [*HEARTLINE, "-s", str(tmp_path / "none.sock"), "report", str(app.pid)],
                capture_output=True,
                text=True,
                env={**os.environ, **env},
                timeout=30,
                check=False,
            )
            assert res.returncode == 0 and "sent SIGUSR2" in res.stdout
            wait_until(lambda: list(reports_dir.glob("report-*.txt")), 15, "the report file")
        finally:
            app.kill()
    with subprocess.Popen(["/bin/sleep", "60"]) as plain:
        try:
            res = subprocess.run(
                [*HEARTLINE, "-s", str(tmp_path / "none.sock"), "report", str(plain.pid)],
                capture_output=True,
                text=True,
                env={**os.environ, **env},
                timeout=30,
                check=False,
            )
        finally:
            plain.kill()
    assert res.returncode == 2 and "py-spy" in res.stderr and res.stderr.count("\n") == 1
