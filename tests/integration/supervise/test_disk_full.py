"""A full file system under the daemon: one line and nothing left behind at start; while
running, a state file that cannot be written is retried and shown, never a crash."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.conftest import tagged_pids, wait_until


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test alone, unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "fs"
    mount.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(fs: Path) -> Path:
    """Fill ``fs`` to the last byte; the returned file frees it when removed."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with contextlib.suppress(OSError):
            for _ in range(1 << 16):  # bounded: 256 MiB at most, far beyond the mount's size
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


def test_up_on_a_full_run_dir_is_one_line_and_leaves_nothing(make_daemon, small_fs):
    """`heartline up` with a full run directory: exit 8, one line naming the cause, no fd
    holder or other process left, no state file or temporary file."""
    run = small_fs / "run"
    run.mkdir(mode=0o700)
    fill(small_fs)
    d = make_daemon('[programs.a]\ncommand = ["/bin/sleep", "3600"]\n', start=False, run_dir=run)
    res = d.cli("up", check=False)
    assert res.returncode == 8, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert tagged_pids(d.tag) == []
    assert sorted(p.name for p in run.iterdir()) in ([], ["daemon.lock"])


def test_up_detach_on_a_full_run_dir_says_why(make_daemon, small_fs, tmp_path):
    """`heartline up --detach` shows the daemon's reason, not whatever line the log ends with."""
    run = small_fs / "run"
    run.mkdir(mode=0o700)
    fill(small_fs)
    d = make_daemon('[programs.a]\ncommand = ["/bin/sleep", "3600"]\n', start=False, run_dir=run)
    res = d.cli("up", "--detach", check=False)
    assert res.returncode == 8, res
    assert res.stderr.startswith("heartline: the daemon did not start: cannot use the run")
    assert "No space left on device" in res.stderr
    wait_until(lambda: not tagged_pids(d.tag), 10, "the daemon to be gone")


def test_state_file_that_cannot_be_written_is_retried_and_shown(make_daemon, small_fs):
    """The disk fills while the daemon runs: a state change that cannot be saved is shown in
    status and retried; programs are still supervised; once space is back it is saved."""
    run = small_fs / "run"
    d = make_daemon(
        """
        [programs.a]
        command = ["/bin/sleep", "3600"]
        [programs.b]
        command = ["/bin/sleep", "3600"]
        """,
        run_dir=run,
    )
    filler = fill(small_fs)
    d.cli("restart", "a")

    def state_error() -> dict | None:
        with d.client() as c:
            return c.get("/v1/status")["daemon"]["state_file"]

    err = wait_until(state_error, 10, "the state file error in status")
    assert "No space left on device" in err["error"]
    assert not list(run.glob("state.json.tmp.*"))
    new_a = d.program("a")["pid"]
    assert d.program("a")["state"] == "running"
    filler.unlink()
    wait_until(lambda: state_error() is None, 20, "the state file to be written again")
    assert d.state_file()["programs"]["a"]["pid"] == new_a
    assert d.proc is not None and d.proc.poll() is None
