"""A hung program is stopped gracefully: the report signal never ends a program by itself."""

from __future__ import annotations

from tests.integration.conftest import py, wait_until

# Handles SIGTERM (writes a file, exits 0), not SIGUSR2, and never beats.
GRACEFUL = py("""
import signal, sys, time
def on_term(*_):
    with open(sys.argv[1], "a") as f:
        f.write("clean shutdown\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
while True:
    time.sleep(1)
""")


def test_watchdog_skips_the_report_signal_a_program_does_not_catch(make_daemon, tmp_path):
    """Watchdog restart of a program without a SIGUSR2 handler: its SIGTERM handler runs."""
    marker = tmp_path / "term"
    d = make_daemon(f"""
        [programs.app]
        command = {GRACEFUL[:-1]}, "{marker}"]
        watchdog = "300ms"
        report_wait = "2s"
        stop_timeout = "5s"
        backoff = {{ initial = "0s" }}
    """)
    p = wait_until(lambda: (q := d.program("app"))["restarts"] >= 1 and q, 10, "the restart")
    assert p["last_exit"]["reason"] == "watchdog"
    assert p["last_exit"]["signal"] is None and p["last_exit"]["code"] == 0, p["last_exit"]
    assert p["last_stop_killed"] is False
    assert marker.read_text().startswith("clean shutdown")


def test_start_timeout_skips_the_report_signal_a_program_does_not_catch(make_daemon, tmp_path):
    """A start timeout on a program without a SIGUSR2 handler stops it through SIGTERM."""
    marker = tmp_path / "term"
    d = make_daemon(f"""
        [programs.app]
        command = {GRACEFUL[:-1]}, "{marker}"]
        ready = "notify"
        start_timeout = "300ms"
        report_wait = "2s"
        backoff = {{ initial = "0s" }}
    """)
    p = wait_until(lambda: (q := d.program("app"))["restarts"] >= 1 and q, 10, "the restart")
    assert p["last_exit"]["reason"] == "start-timeout"
    assert p["last_exit"]["code"] == 0, p["last_exit"]
    assert marker.read_text().startswith("clean shutdown")
