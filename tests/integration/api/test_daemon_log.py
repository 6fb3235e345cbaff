"""The detached daemon's own log (`<log_dir>/heartline.log`) is capped like a program's."""

from __future__ import annotations

from tests.integration.conftest import wait_until

from heartline.daemon._selflog import MAX_BYTES


def test_detached_daemon_rotates_its_own_log_at_the_cap(make_daemon):
    """`up --detach` with a heartline.log already at the cap: the daemon's first lines start
    a new file, the full one becomes heartline.log.1, and later lines (here from stopping a
    program) land in the new file."""
    d = make_daemon('[programs.web]\ncommand = ["/bin/sleep", "3600"]\n', start=False)
    logs = d.root / "logs"
    logs.mkdir()
    log = logs / "heartline.log"
    with open(log, "wb") as f:
        f.truncate(MAX_BYTES)  # sparse: the size the daemon sees, without the disk it costs
    try:
        d.cli("up", "--detach")
        wait_until(lambda: d.program("web")["state"] == "running", 10, "web to run")
        assert (logs / "heartline.log.1").stat().st_size == MAX_BYTES
        assert "ready on" in log.read_text()
        assert log.stat().st_size < 64 * 1024
        d.cli("stop", "web")
        wait_until(lambda: "SIGTERM" in log.read_text(), 10, "the stop in the new file")
        assert (logs / "heartline.log.1").stat().st_size == MAX_BYTES
        assert not (logs / "heartline.log.2").exists()
    finally:
        d.cli("down", check=False)
