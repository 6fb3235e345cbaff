"""`heartline attach`: a terminal on a supervised program's backdoor, found by the program's pid."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

from tests.integration.conftest import HEARTLINE, py, wait_until

BACKDOORED = py("""
import time
from heartline.service import backdoor
answer = 42
backdoor.install()
open("armed", "w").close()
while True:
    time.sleep(1)
""")


def test_attach_by_program_name(make_daemon):
    """Lines typed into `heartline attach NAME` run inside the program; EOF ends the session."""
    runtime = tempfile.mkdtemp(prefix="hl-rt-")  # short: unix socket paths are limited
    try:
        _attach_by_program_name(make_daemon, runtime)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def _attach_by_program_name(make_daemon, runtime: str) -> None:
    d = make_daemon(f"""
        [programs.app]
        command = {BACKDOORED}
        cwd = "."
        env = {{ XDG_RUNTIME_DIR = "{runtime}" }}
    """)
    wait_until((d.root / "armed").exists, 15, "the backdoor")
    res = subprocess.run(
        [*HEARTLINE, "-c", str(d.config), "attach", "app"],
        input="import __main__\n__main__.answer * 2\nimport os; os.getpid()\n",
        capture_output=True,
        text=True,
        env={**d.env, "XDG_RUNTIME_DIR": runtime},
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "84" in res.stdout
    assert str(d.program("app")["pid"]) in res.stdout


def test_attach_refuses_a_process_without_a_backdoor(make_daemon):
    """No backdoor: one line saying how to add one, exit 2."""
    d = make_daemon('[programs.plain]\ncommand = ["/bin/sleep", "3600"]\n')
    res = d.cli("attach", "plain", check=False)
    assert res.returncode == 2 and "backdoor.install()" in res.stderr
    assert res.stderr.count("\n") == 1
