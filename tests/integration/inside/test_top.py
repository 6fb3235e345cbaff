"""`heartline top` and `status --json`: who burns the CPU, who hammers the disk."""

from __future__ import annotations

import json

from tests.integration.conftest import py, wait_until

# Writes and fsyncs a megabyte at a time in a loop (the disk hog the seed hunts with iotop).
WRITER = py("""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
block = b"x" * (1 << 20)
while True:
    os.write(fd, block)
    os.fsync(fd)
    if os.lseek(fd, 0, os.SEEK_CUR) > (32 << 20):
        os.lseek(fd, 0, os.SEEK_SET)
""")
# Burns CPU in a child process of its own, so the figure is the whole tree's.
BURNER = py("""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "while True: pass"])
time.sleep(3600)
""")


def test_top_finds_the_cpu_burner_and_the_disk_hog(make_daemon, tmp_path):
    """The CPU figure covers a program's children; the writer leads the WRITE/s column."""
    d = make_daemon(f"""
        [programs.idle]
        command = ["/bin/sleep", "3600"]
        [programs.burner]
        command = {BURNER}
        [programs.writer]
        command = {WRITER[:-1]}, "{tmp_path / "hog.bin"}"]
    """)
    wait_until(lambda: len(_top(d)["burner"]["processes"]) == 2, 10, "the burner's child")
    # On a machine busy with other work the burner gets less than a whole core in some
    # windows: wait for a window where its child's spinning shows clearly.
    top = wait_until(lambda: (t := _top(d))["burner"]["cpu_pct"] > 30 and t, 20, "a busy burner")
    child = max(top["burner"]["processes"], key=lambda r: r["cpu_pct"] or 0)
    assert child["pid"] != top["burner"]["pid"], "the CPU is the child's, counted for its program"
    assert top["idle"]["cpu_pct"] < 5
    assert top["writer"]["write_bps"] > 1_000_000
    assert (top["idle"]["write_bps"] or 0) == 0
    assert top["idle"]["rss"] > 0 and top["idle"]["fds"] >= 3
    table = d.cli("top", "--once", "--sort", "write").stdout.splitlines()
    assert table[2].split()[0] == "NAME" and table[3].split()[0] == "writer"
    tree = d.cli("top", "--once", "--tree", "--sort", "cpu").stdout
    process_rows = [ln for ln in tree.splitlines() if ln.startswith("  ")]
    assert len(process_rows) == 4  # sleep, the burner and its child, the writer


def test_status_json_carries_the_figures(make_daemon):
    """`status --json` includes each running program's resources; a stopped one has none."""
    d = make_daemon("""
        [programs.a]
        command = ["/bin/sleep", "3600"]
        [programs.b]
        command = ["/bin/sleep", "3600"]
        autostart = false
    """)
    doc = json.loads(d.cli("status", "--json").stdout)
    res = {p["name"]: p["resources"] for p in doc["programs"]}
    assert res["b"] is None
    assert res["a"]["rss"] > 0 and res["a"]["fds"] >= 3


def _top(d) -> dict[str, dict]:
    doc = json.loads(d.cli("top", "--once", "--json").stdout)
    assert doc["window"] >= 0.25
    return {p["name"]: p for p in doc["programs"]}
