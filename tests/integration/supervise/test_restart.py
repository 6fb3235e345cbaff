"""Restart policy, back-off and the crash-loop limit, against real crashing processes."""

from __future__ import annotations

import os
import signal

from tests.integration.conftest import py, wait_until


def test_crashed_program_is_restarted_with_a_new_pid(make_daemon):
    """A program killed by a signal is restarted at once; the record shows the signal."""
    d = make_daemon(f"""
        [programs.app]
        command = {py("import time; time.sleep(3600)")}
    """)
    first = d.wait_state("app", "running")
    os.kill(first["pid"], signal.SIGKILL)
    p = wait_until(
        lambda: (q := d.program("app"))["pid"] not in (None, first["pid"]) and q, 10, "restart"
    )
    assert p["restarts"] == 1
    assert p["last_exit"]["reason"] == "signal"
    assert p["last_exit"]["signal"] == signal.SIGKILL


def test_on_failure_leaves_a_clean_exit_alone(make_daemon):
    """restart = on-failure: exit 0 (a success code) ends in `exited`, a failure restarts."""
    d = make_daemon(f"""
        [programs.ok]
        command = {py("raise SystemExit(0)")}
        [programs.bad]
        command = {py("raise SystemExit(5)")}
        backoff = {{ initial = "0s" }}
        crash_loop = {{ max_starts = 3, window = "60s", cooldown = "never" }}
    """)
    ok = d.wait_state("ok", "exited")
    assert ok["last_exit"]["code"] == 0 and ok["restarts"] == 0
    bad = d.wait_state("bad", "fatal")
    assert bad["restarts"] == 2 and bad["last_exit"]["code"] == 5


def test_success_codes_and_prevent_codes(make_daemon):
    """success_exit_codes counts 3 as success; prevent_restart_exit_codes stops even `always`."""
    d = make_daemon(f"""
        [programs.three]
        command = {py("raise SystemExit(3)")}
        success_exit_codes = [0, 3]
        [programs.seven]
        command = {py("raise SystemExit(7)")}
        restart = "always"
        prevent_restart_exit_codes = [7]
    """)
    assert d.wait_state("three", "exited")["restarts"] == 0
    seven = d.wait_state("seven", "exited")
    assert seven["restarts"] == 0 and "prevents restart" in seven["detail"]


def test_restart_never(make_daemon):
    """restart = never: a crash leaves the program exited with its code."""
    d = make_daemon(f"""
        [programs.once]
        command = {py("raise SystemExit(9)")}
        restart = "never"
    """)
    p = d.wait_state("once", "exited")
    assert p["last_exit"]["code"] == 9 and p["restarts"] == 0


def test_backoff_between_quick_failures(make_daemon):
    """Quick consecutive failures wait in `backoff` (the first restart is immediate)."""
    d = make_daemon(f"""
        [programs.crash]
        command = {py("raise SystemExit(1)")}
        backoff = {{ initial = "2s", max = "2s", jitter = 0 }}
        crash_loop = {{ max_starts = 0 }}
    """)
    p = d.wait_state("crash", "backoff")
    assert p["restarts"] == 1
    assert p["detail"].startswith("retry in") and p["last_exit"]["text"] == "exit 1"


def test_crash_loop_goes_fatal_then_retries_after_cooldown(make_daemon):
    """N starts within the window -> fatal with a visible retry; after the cool-down it starts again."""
    d = make_daemon(f"""
        [programs.loop]
        command = {py("raise SystemExit(2)")}
        backoff = {{ initial = "0s" }}
        crash_loop = {{ max_starts = 3, window = "30s", cooldown = "1s" }}
    """)
    p = d.wait_state("loop", "fatal")
    assert "crash loop" in p["detail"] and "retry in" in p["detail"]
    # After the cool-down it runs again (and, still crashing, comes back to fatal).
    wait_until(lambda: d.program("loop")["restarts"] >= 3, 10, "a retry after the cool-down")


def test_fatal_with_cooldown_never_waits_for_an_operator(make_daemon):
    """cooldown = "never": fatal says so, and `heartline start` gives it a fresh window."""
    d = make_daemon(f"""
        [programs.loop]
        command = {py("raise SystemExit(2)")}
        backoff = {{ initial = "0s" }}
        crash_loop = {{ max_starts = 2, window = "30s", cooldown = "never" }}
    """)
    p = d.wait_state("loop", "fatal")
    assert "start it by hand" in p["detail"]
    before = p["restarts"]
    d.cli("start", "loop")
    wait_until(lambda: d.program("loop")["restarts"] > before, 10, "a manual start")


def test_spawn_failure_is_reported_not_fatal_to_the_daemon(make_daemon):
    """A missing executable shows `spawn-failed` with the reason; the daemon stays up."""
    d = make_daemon("""
        [programs.missing]
        command = ["/nonexistent/program", "--x"]
        crash_loop = { max_starts = 1, window = "60s", cooldown = "never" }
        [programs.fine]
        command = ["/bin/sleep", "3600"]
    """)
    p = d.wait_state("missing", "fatal")
    assert p["last_exit"]["reason"] == "spawn-failed"
    assert "No such file" in p["last_exit"]["detail"]
    assert d.program("fine")["state"] == "running"


def test_long_commands_and_arguments_are_passed_unchanged(make_daemon, tmp_path):
    """No length limit: a 100 000-byte argument arrives intact (heart's 128-byte bug)."""
    out = tmp_path / "arg.txt"
    big = "x" * 100_000
    d = make_daemon(f"""
        [programs.long]
        command = {py("import sys; open(sys.argv[1], 'w').write(sys.argv[2])")[:-1]}, "{out}", "{big}"]
        restart = "never"
    """)
    d.wait_state("long", "exited")
    assert out.read_text() == big


def test_command_that_cannot_start_goes_fatal_with_its_reason(make_daemon):
    """A misspelt command is tried three times (each retry counted), then fatal with the exec
    error in status, instead of backing off for ever at zero restarts."""
    d = make_daemon("""
        [programs.typo]
        command = ["pyhton3-no-such-command"]
        crash_loop = { max_starts = 0 }
    """)
    p = d.wait_state("typo", "fatal", timeout=15)
    assert p["restarts"] == 2
    assert "cannot start (3 tries)" in p["detail"]
    assert "No such file or directory" in p["detail"]
    assert p["last_exit"]["reason"] == "spawn-failed"
    assert "cannot start" in d.cli("status", "typo").stdout
