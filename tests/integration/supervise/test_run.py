"""`heartline run -- CMD`: one command supervised in the foreground, no config file."""

from __future__ import annotations

import os
import signal
import subprocess

from tests.integration.conftest import HEARTLINE, PY, alive, wait_until


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HEARTLINE, "run", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_run_restarts_then_exits_with_the_commands_code(tmp_path):
    """--max-restarts 2: three runs, then heartline exits with the command's exit code."""
    count = tmp_path / "count"
    res = _run(
        "--max-restarts",
        "2",
        "--backoff",
        "0s",
        "--",
        PY,
        "-c",
        f"open('{count}', 'a').write('x'); raise SystemExit(3)",
    )
    assert res.returncode == 3
    assert count.read_text() == "xxx"


def test_run_on_failure_stops_after_success(tmp_path):
    """The default policy (on-failure) ends at the first clean exit, with code 0."""
    flag = tmp_path / "flag"
    code = f"import os, sys; sys.exit(0 if os.path.exists('{flag}') else (open('{flag}', 'w').close() or 1))"
    res = _run("--backoff", "0s", "--", PY, "-c", code)
    assert res.returncode == 0


def test_run_passes_output_through_and_reports_signals():
    """Output goes to our stdout; a death by signal N exits 128+N."""
    res = _run(
        "--restart",
        "never",
        "--",
        PY,
        "-c",
        "import os, signal; print('hello', flush=True); os.kill(os.getpid(), signal.SIGTERM)",
    )
    assert res.stdout == "hello\n"
    assert res.returncode == 128 + signal.SIGTERM


def test_run_spawn_failure_exits_127():
    """A command that cannot be started exits 127 with a one-line reason."""
    res = _run("--restart", "never", "--", "/nonexistent/cmd")
    assert res.returncode == 127
    assert "No such file" in res.stderr and "Traceback" not in res.stderr


def test_run_forwards_sigterm_and_stops_the_command(tmp_path):
    """SIGTERM to heartline run stops the command's group and exits with its status."""
    ready = tmp_path / "ready"
    code = f"import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\nopen('{ready}', 'w').write(str(__import__('os').getpid()))\ntime.sleep(3600)"
    with subprocess.Popen([*HEARTLINE, "run", "--restart", "always", "--", PY, "-c", code]) as proc:
        wait_until(lambda: ready.exists() and ready.read_text(), 15, "the command to start")
        child = int(ready.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 42
    assert not alive(child)


def test_run_usage_errors():
    """A bad --backoff or --max-restarts is a usage error with the reserved code 64 (2 could be
    the command's own), one line, no traceback."""
    for args in (("--backoff", "fast"), ("--max-restarts", "lots")):
        res = _run(*args, "--", "/bin/true")
        assert res.returncode == 64, res
        assert args[0] in res.stderr and res.stderr.count("\n") == 1


def test_run_does_not_parse_options_after_double_dash(tmp_path):
    """Everything after `--` is the command's argv, options included."""
    out = tmp_path / "argv"
    res = _run(
        "--restart",
        "never",
        "--",
        PY,
        "-c",
        f"import sys; open('{out}', 'w').write(' '.join(sys.argv[1:]))",
        "--restart",
        "-h",
    )
    assert res.returncode == 0
    assert out.read_text() == "--restart -h"


def test_run_sighup_is_forwarded(tmp_path):
    """SIGHUP to heartline run reaches the command."""
    got = tmp_path / "hup"
    code = f"import signal, time\nsignal.signal(signal.SIGHUP, lambda *a: open('{got}', 'w').close())\nopen('{got}.armed', 'w').close()\nfor _ in range(3000):\n    time.sleep(0.01)\n    if __import__('os').path.exists('{got}'): break"
    with subprocess.Popen([*HEARTLINE, "run", "--restart", "never", "--", PY, "-c", code]) as proc:
        wait_until(lambda: os.path.exists(f"{got}.armed"), 15, "handler armed")
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(15) == 0
    assert got.exists()


def test_run_tells_each_restart_and_gives_up_after_five(tmp_path):
    """`run -- false`: one line per exit on stderr (how it ended, what comes next), gives up
    after the default five restarts with the command's exit code."""
    count = tmp_path / "count"
    res = _run(
        "--backoff", "0s", "--", PY, "-c",
        f"open('{count}', 'a').write('x'); raise SystemExit(3)",
    )  # fmt: skip
    assert res.returncode == 3
    assert count.read_text() == "x" * 6
    lines = res.stderr.splitlines()
    assert len(lines) == 6, res.stderr
    assert all(ln.startswith("heartline: ") and "exit 3" in ln for ln in lines)
    assert lines[0].endswith("restarting now (restart 1 of 5)")
    assert lines[-1].endswith("giving up after 5 restart(s) (--max-restarts 5)")


def test_run_quiet_and_forever(tmp_path):
    """--quiet prints nothing of its own; --max-restarts forever keeps going past five."""
    count = tmp_path / "count"
    code = (
        f"import sys; n = len(open('{count}').read()) if __import__('os').path.exists('{count}')"
        f" else 0; open('{count}', 'a').write('x'); sys.exit(0 if n >= 7 else 1)"
    )
    res = _run("-q", "--max-restarts", "forever", "--backoff", "0s", "--", PY, "-c", code)
    assert res.returncode == 0 and res.stderr == ""
    assert count.read_text() == "x" * 8


def test_run_gives_up_on_a_command_that_cannot_start():
    """A command that cannot be exec'd: three tries, then exit 127 with the reason."""
    res = _run("--", "/nonexistent/cmd")
    assert res.returncode == 127
    lines = res.stderr.splitlines()
    assert lines[-1] == (
        "heartline: cannot start: /nonexistent/cmd: No such file or directory; "
        "giving up after 3 tries"
    )
    assert len(lines) == 3


def test_run_help_states_the_defaults():
    """--help names the defaults of the restart options."""
    out = subprocess.run(
        [*HEARTLINE, "run", "--help"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    flat = " ".join(out.split())
    for text in ("(default: on-failure)", "(default: 5,", "(default: 1s..30s)", "(default: 10s)"):
        assert text in flat, text


def test_run_stops_what_a_daemonizing_command_leaves_behind(tmp_path):
    """A command that double-forks a setsid grandchild and exits: `heartline run` (a child
    subreaper) gets the grandchild back, stops it, says so, and exits with the command's code."""
    pidfile = tmp_path / "grandchild"
    code = f"""
import os, sys, time
if os.fork() == 0:
    if os.fork() == 0:
        os.setsid()
        open({str(pidfile)!r} + ".tmp", "w").write(str(os.getpid()))
        os.rename({str(pidfile)!r} + ".tmp", {str(pidfile)!r})
        time.sleep(600)
    os._exit(0)
while not os.path.exists({str(pidfile)!r}):
    time.sleep(0.01)
"""
    res = _run("--restart", "never", "--", PY, "-c", code)
    assert res.returncode == 0
    grandchild = int(pidfile.read_text())
    assert not alive(grandchild), "the daemonized grandchild runs on under init"
    assert "leaving 1 process behind" in res.stderr
