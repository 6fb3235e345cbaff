"""Captured output: size-capped files, tail, follow, reopen."""

from __future__ import annotations

import os
import subprocess
import time

from tests.integration.conftest import HEARTLINE, py, wait_until

FLOOD = py("""
import sys, time
for i in range(30000):
    sys.stdout.write(f"{i:08d} " + "x" * 90 + "\\n")
sys.stdout.flush()
open("done", "w").close()
time.sleep(3600)
""")
BOTH = py("""
import sys, time
print("to-out", flush=True)
print("to-err", file=sys.stderr, flush=True)
time.sleep(3600)
""")
TICK_1000 = py("""
import time
for i in range(1000):
    print("tick", i, flush=True)
    time.sleep(0.05)
""")
TICK = py("""
import time
while True:
    print("tick", flush=True)
    time.sleep(0.02)
""")


def test_runaway_output_cannot_fill_the_disk(make_daemon):
    """A program writing 3 MB as fast as it can leaves at most max_size * (backups + 1) bytes."""
    d = make_daemon(f"""
        [programs.flood]
        command = {FLOOD}
        cwd = "."
        log = {{ max_size = "64KiB", backups = 2 }}
    """)
    wait_until((d.root / "done").exists, 30, "the flood to finish")
    logs = d.root / "logs"
    files = sorted(p.name for p in logs.iterdir() if p.name.startswith("flood.out"))
    assert files == ["flood.out.log", "flood.out.log.1", "flood.out.log.2"]
    wait_until(lambda: b"00029999" in (logs / "flood.out.log").read_bytes(), 10, "the last line")
    for f in files:
        assert (logs / f).stat().st_size <= 64 * 1024
    res = d.cli("logs", "flood", "-n", "2")
    assert res.stdout.splitlines()[-1].startswith("00029999 ")
    assert len(res.stdout.splitlines()) == 2


def test_stdout_and_stderr_are_kept_apart(make_daemon):
    """`logs` shows stdout; `logs --stderr` shows stderr."""
    d = make_daemon(f"""
        [programs.both]
        command = {BOTH}
    """)
    wait_until(lambda: "to-out" in d.cli("logs", "both").stdout, 10, "stdout")
    assert "to-err" not in d.cli("logs", "both").stdout
    assert "to-err" in d.cli("logs", "both", "--stderr").stdout


def test_redirect_stderr_merges_streams(make_daemon):
    """redirect_stderr = true sends stderr into the stdout log."""
    d = make_daemon(f"""
        [programs.both]
        command = {BOTH}
        redirect_stderr = true
    """)
    wait_until(lambda: "to-err" in d.cli("logs", "both").stdout, 10, "merged stderr")
    assert not (d.root / "logs" / "both.err.log").exists()


def test_logs_follow_streams_new_output(make_daemon):
    """`logs -f` prints lines as the program writes them."""
    d = make_daemon(f"""
        [programs.tick]
        command = {TICK_1000}
    """)
    d.wait_state("tick", "running")
    with subprocess.Popen(
        [*HEARTLINE, "-c", str(d.config), "logs", "tick", "-f", "-n", "0"],
        stdout=subprocess.PIPE,
        env=d.env,
        text=True,
    ) as proc:
        try:
            seen = []
            deadline = time.monotonic() + 10
            while len(seen) < 3 and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if line.startswith("tick"):
                    seen.append(int(line.split()[1]))
            assert len(seen) == 3 and seen == sorted(seen)
        finally:
            proc.terminate()


def test_reopen_logs_after_external_rotation(make_daemon):
    """After logrotate moves the file, `reopen-logs` makes new output land in a fresh file."""
    d = make_daemon(f"""
        [programs.tick]
        command = {TICK}
    """)
    log = d.root / "logs" / "tick.out.log"
    wait_until(lambda: log.exists() and log.stat().st_size > 0, 10, "output")
    os.rename(log, str(log) + ".moved")
    d.cli("reopen-logs")
    wait_until(lambda: log.exists() and log.stat().st_size > 0, 10, "output in the reopened file")
