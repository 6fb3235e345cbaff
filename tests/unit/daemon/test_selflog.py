"""The daemon's own log, in a real process: capped and rotated when stderr is a file (as with
`up --detach`), a plain stream otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

MAX = 2000
BACKUPS = 2

SCRIPT = textwrap.dedent(f"""
    import logging, os, sys
    from heartline.daemon._selflog import configure
    configure(sys.stderr, max_bytes={MAX}, backups={BACKUPS})
    log = logging.getLogger("heartline.daemon")
    for i in range(300):
        log.info("record %05d %s", i, "x" * 60)
    os.write(2, b"raw write on fd 2\\n")
    print("stdout line", flush=True)
""")


def run(stdout: int, stderr: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("JOURNAL_STREAM", None)
    subprocess.run(
        [sys.executable, "-c", SCRIPT],
        stdout=stdout,
        stderr=stderr,
        env=env,
        timeout=60,
        check=True,
    )


def test_log_on_a_file_is_capped_and_rotated(tmp_path: Path) -> None:
    """With stdout and stderr on one file opened for append (as `up --detach` does), the file
    is rotated when it reaches the cap: NAME, NAME.1 .. NAME.BACKUPS remain, none much past the
    cap, together holding the latest records in order; writes that bypass logging (on fd 2 or
    stdout) land in the current file."""
    log = tmp_path / "heartline.log"
    with open(log, "ab") as f:
        run(f.fileno(), f.fileno())
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["heartline.log", "heartline.log.1", "heartline.log.2"]
    parts = [tmp_path / f"heartline.log.{i}" for i in range(BACKUPS, 0, -1)] + [log]
    for p in parts:
        assert p.stat().st_size <= MAX + 200, p
    text = "".join(p.read_text() for p in parts)
    numbers = [
        int(line.split("record ")[1].split()[0]) for line in text.splitlines() if "record" in line
    ]
    assert numbers == list(range(numbers[0], 300))
    assert numbers[0] > 0
    current = log.read_text()
    assert "record 00299" in current
    assert "raw write on fd 2" in current
    assert current.endswith("stdout line\n")
    assert oct(log.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_log_on_a_pipe_stays_a_plain_stream(tmp_path: Path) -> None:
    """With stderr on a pipe (a terminal, systemd's journal) the daemon only writes: every
    record arrives, nothing is rotated, no file is made."""
    r, w = os.pipe()
    try:
        run(subprocess.DEVNULL, w)
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        text = f.read().decode()
    assert text.count("record ") == 300
    assert list(tmp_path.iterdir()) == []
