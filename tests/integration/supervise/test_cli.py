"""The CLI: status output, one-line errors and distinct exit codes."""

from __future__ import annotations

import json
import subprocess

from tests.integration.conftest import HEARTLINE, alive


def _run(*args: str, env=None, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HEARTLINE, *args], capture_output=True, text=True, timeout=30, env=env, cwd=cwd
    )


def test_status_table_and_json(make_daemon):
    """`status` prints a table row per program; `--json` the API document; names filter."""
    d = make_daemon("""
        [programs.web]
        command = ["/bin/sleep", "3600"]
        [programs.worker]
        command = ["/bin/sleep", "3600"]
        numprocs = 2
    """)
    table = d.cli("status").stdout.splitlines()
    assert table[0].split()[:5] == ["NAME", "STATE", "PID", "UPTIME", "RESTARTS"]
    assert [r.split()[0] for r in table[1:]] == ["web", "worker:0", "worker:1"]
    assert all(r.split()[1] == "running" for r in table[1:])
    doc = json.loads(d.cli("status", "--json", "worker").stdout)
    assert [p["name"] for p in doc["programs"]] == ["worker:0", "worker:1"]
    assert {p["group"] for p in doc["programs"]} == {"worker"}


def test_unknown_program_exit_code_4(make_daemon):
    """An unknown name: one line on stderr, exit code 4, the daemon unharmed."""
    d = make_daemon('[programs.a]\ncommand = ["/bin/sleep", "3600"]\n')
    for args in (
        ("start", "nope"),
        ("stop", "nope"),
        ("status", "nope"),
        ("logs", "nope"),
        ("signal", "HUP", "nope"),
    ):
        res = d.cli(*args, check=False)
        assert res.returncode == 4, args
        assert res.stderr.count("\n") == 1 and "unknown program 'nope'" in res.stderr
    assert d.program("a")["state"] == "running"


def test_daemon_not_running_exit_code_3(tmp_path):
    """No daemon: a one-line error saying how to start one, exit code 3."""
    cfg = tmp_path / "h.toml"
    cfg.write_text('[daemon]\nrun_dir = "run"\nlog_dir = "logs"\n')
    res = _run("-c", str(cfg), "status")
    assert res.returncode == 3
    assert res.stderr.count("\n") == 1 and "heartline up" in res.stderr


def test_config_error_exit_code_2_names_file_key_line(tmp_path):
    """A bad config: `file:line: key: what` in one line, exit code 2, nothing started."""
    cfg = tmp_path / "h.toml"
    cfg.write_text(
        '[daemon]\nrun_dir = "run"\n\n[programs.web]\ncommand = ["/bin/true"]\nstop_timeout = "soon"\n'
    )
    res = _run("up", "-c", str(cfg))
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"heartline: {cfg}:6: programs.web.stop_timeout: expected a duration such as '10s' or "
        "'250ms', got 'soon'"
    )
    assert "Traceback" not in res.stderr


def test_bad_usage_exit_code_2(make_daemon):
    """Usage errors (missing names, bad signal) exit 2 without a traceback."""
    d = make_daemon('[programs.a]\ncommand = ["/bin/sleep", "3600"]\n')
    res = d.cli("stop", check=False)
    assert res.returncode == 2 and "name the programs" in res.stderr
    res = d.cli("signal", "NOPE", "a", check=False)
    assert res.returncode == 2 and "unknown signal" in res.stderr and "Traceback" not in res.stderr


def test_start_stop_all(make_daemon):
    """`stop all` stops every program; `start all` brings them back."""
    d = make_daemon("""
        [programs.a]
        command = ["/bin/sleep", "3600"]
        [programs.b]
        command = ["/bin/sleep", "3600"]
    """)
    d.cli("stop", "all")
    assert {p["state"] for p in d.status().values()} == {"stopped"}
    d.cli("start", "all")
    assert {p["state"] for p in d.status().values()} == {"running"}


def test_up_detach_and_down(tmp_path):
    """`up --detach` returns once the daemon is ready; `down` stops programs and the daemon."""
    cfg = tmp_path / "h.toml"
    cfg.write_text(
        '[daemon]\nrun_dir = "run"\nlog_dir = "logs"\n[programs.a]\ncommand = ["/bin/sleep", "3600"]\n'
    )
    res = _run("up", "-c", str(cfg), "--detach")
    try:
        assert res.returncode == 0, res.stderr
        status = json.loads(_run("-c", str(cfg), "status", "--json").stdout)
        pid = status["programs"][0]["pid"]
        daemon_pid = status["daemon"]["pid"]
        assert pid
    finally:
        down = _run("-c", str(cfg), "down")
    assert down.returncode == 0, down.stderr
    assert not alive(pid) and not alive(daemon_pid)


def test_systemd_unit_text():
    """`systemd-unit` prints a notify-type unit that runs `up` with the given config."""
    res = _run("systemd-unit", "-c", "/etc/heartline/heartline.toml")
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert "Type=notify" in lines and "KillMode=process" in lines
    assert any(
        ln.startswith("ExecStart=") and ln.endswith("up -c /etc/heartline/heartline.toml")
        for ln in lines
    )
    assert any(ln.startswith("WatchdogSec=") for ln in lines)
