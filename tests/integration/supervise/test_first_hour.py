"""What a newcomer meets in the first hour: messages that say where to look next."""

from __future__ import annotations

import os
import select
import subprocess

from tests.integration.conftest import HEARTLINE, py


def _run(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HEARTLINE, *args], capture_output=True, text=True, timeout=30, cwd=cwd, env=env
    )


def test_status_info_does_not_repeat_the_last_exit(make_daemon):
    """An exited program: LAST EXIT says how it ended, INFO only why it stays down."""
    d = make_daemon("""
        [programs.job]
        command = ["/bin/true"]
        restart = "on-failure"
    """)
    d.wait_state("job", "exited")
    row = d.cli("status", "job").stdout.splitlines()[1]
    assert row.count("exit 0") == 1, row
    assert row.endswith("exited successfully")


def test_logs_of_a_stderr_only_program_point_at_stderr(make_daemon):
    """`logs NAME` for a program that only writes to stderr says where its output is."""
    d = make_daemon(f"""
        [programs.quiet]
        command = {py('import sys, time; print("to stderr", file=sys.stderr, flush=True); time.sleep(3600)')}
    """)
    from tests.helpers import wait_until

    wait_until(lambda: "to stderr" in d.cli("logs", "quiet", "--stderr").stdout, 10, "output")
    res = d.cli("logs", "quiet")
    assert res.stdout == ""
    assert res.stderr == (
        "heartline: quiet wrote nothing to stdout; its stderr has output: "
        "heartline logs quiet --stderr\n"
    )


def test_up_without_a_config_names_both_places_searched(tmp_path):
    """`heartline up` in a directory without heartline.toml names ./heartline.toml too and
    points at `heartline init`."""
    env = {k: v for k, v in os.environ.items() if k != "HEARTLINE_CONFIG"}
    res = _run("up", cwd=tmp_path, env=env)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1
    assert "/etc/heartline/heartline.toml: file not found, nor ./heartline.toml" in res.stderr
    assert "heartline init" in res.stderr


def test_down_leaves_a_closing_line_in_the_daemon_log(tmp_path):
    """After `down`, the daemon's log ends with a line saying it stopped."""
    cfg = tmp_path / "h.toml"
    cfg.write_text(
        '[daemon]\nrun_dir = "run"\nlog_dir = "logs"\n[programs.a]\ncommand = ["/bin/sleep", "3600"]\n'
    )
    up = _run("up", "-c", str(cfg), "--detach")
    assert up.returncode == 0, up.stderr
    down = _run("-c", str(cfg), "down")
    assert down.returncode == 0, down.stderr
    last = (tmp_path / "logs" / "heartline.log").read_text().strip().splitlines()[-1]
    assert "heartline daemon" in last and "stopped" in last


def test_init_writes_a_commented_sample_that_runs(tmp_path):
    """`heartline init` prints the sample; `--out` writes it once (a second time is a one-line
    error unless --force); the written file is a working config."""
    printed = _run("init")
    assert printed.returncode == 0 and "[programs.example]" in printed.stdout
    out = tmp_path / "heartline.toml"
    first = _run("init", "--out", str(out))
    assert first.returncode == 0 and out.read_text() == printed.stdout
    again = _run("init", "--out", str(out))
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--force" in again.stderr
    assert _run("init", "--out", str(out), "--force").returncode == 0
    from heartline.config import load_config

    assert list(load_config(str(out)).programs) == ["example"]


def test_lock_commands_do_not_offer_daemon_options():
    """-c/-s are the daemon's: lock, locks, lockd, run and init do not list them, and an unknown
    option points at the command's own help."""
    for cmd in ("lock", "locks", "lockd", "run", "init"):
        helptext = _run(cmd, "--help").stdout
        assert "--config" not in helptext and "--socket" not in helptext, cmd
    res = _run("lock", "demo", "--bogus", "--", "true")
    assert res.returncode == 64
    assert "(see `heartline lock --help`)" in res.stderr


def test_second_detached_daemon_says_why_with_one_prefix(make_daemon):
    """`up --detach` beside a running daemon: exit 6 and one `heartline:` prefix, not two."""
    d = make_daemon('[programs.a]\ncommand = ["/bin/sleep", "3600"]\n')
    res = d.cli("up", "--detach", check=False)
    assert res.returncode == 6
    assert res.stderr.count("heartline:") == 1 and "already runs" in res.stderr
    assert res.stderr.count("\n") == 1


def test_logs_follow_ends_with_one_line_when_the_daemon_stops(make_daemon):
    """`logs -f` while the daemon shuts down: exit 1 with one line, no traceback."""
    d = make_daemon(f"""
        [programs.a]
        command = {py('import time; print("hello", flush=True); time.sleep(3600)')}
    """)
    follow = subprocess.Popen(
        [*HEARTLINE, "-c", str(d.config), "logs", "-f", "a"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=d.env,
    )
    try:
        assert follow.stdout is not None
        ready, _, _ = select.select([follow.stdout], [], [], 15)
        assert ready and follow.stdout.readline() == "hello\n"  # the stream is open
        d.shutdown()
        _out, err = follow.communicate(timeout=30)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.communicate(timeout=10)
    assert "Traceback" not in err
    if follow.returncode != 0:  # the daemon may end the stream cleanly, or cut it
        assert follow.returncode == 1 and err.count("\n") == 1, err
