"""A cold CLI call loads the code of the command it runs and nothing heavier.

Each case runs the real `heartline` in a fresh interpreter with ``-X importtime`` (its report
names every module imported, even when a command ends with ``os._exit``) and checks which
modules came in. Nothing here needs a daemon or a lock server: the calls fail fast on a socket
that does not exist, or on a loopback port nobody listens on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: Heavy for a cold start, and needed only by `run`, `up` and `lockd` once they run.
HEAVY = ("asyncio", "ssl", "heartline.supervise", "heartline.daemon", "heartline.lockd")
#: The modules that hold the commands' code.
COMMAND_MODULES = {
    "heartline.cli._cmd_daemon",
    "heartline.cli._cmd_control",
    "heartline.cli._cmd_inside",
    "heartline.cli._cmd_lock",
    "heartline.cli._cmd_cluster",
    "heartline.cli._cmd_lab",
    "heartline.cli._run",
}
NOWHERE = "heartline://127.0.0.1:1"

CASES = [
    # (argv, exit code, the one command module the call loads, or None)
    (["status"], 3, "heartline.cli._cmd_control"),
    (["start", "x"], 3, "heartline.cli._cmd_control"),
    (["stop", "x"], 3, "heartline.cli._cmd_control"),
    (["restart", "x"], 3, "heartline.cli._cmd_control"),
    (["signal", "HUP", "x"], 3, "heartline.cli._cmd_control"),
    (["logs", "x"], 3, "heartline.cli._cmd_control"),
    (["reload"], 3, "heartline.cli._cmd_control"),
    (["reopen-logs"], 3, "heartline.cli._cmd_control"),
    (["top", "--once"], 3, "heartline.cli._cmd_inside"),
    (["report", "x"], 3, "heartline.cli._cmd_inside"),
    (["attach", "x"], 3, "heartline.cli._cmd_inside"),
    (["down"], 3, "heartline.cli._cmd_daemon"),
    (["systemd-unit"], 0, "heartline.cli._cmd_daemon"),
    (["locks", "--server", NOWHERE], 69, "heartline.cli._cmd_lock"),
    (["lock", "x", "--server", NOWHERE, "--", "true"], 69, "heartline.cli._cmd_lock"),
    (["hosts"], 2, "heartline.cli._cmd_cluster"),  # no config here
    (["place", "--", "true"], 2, "heartline.cli._cmd_cluster"),
    (["-c", "cluster.toml", "hosts"], 69, "heartline.cli._cmd_cluster"),
    (["-c", "cluster.toml", "place", "--", "true"], 69, "heartline.cli._cmd_cluster"),
    (["hosts", "--help"], 0, None),
    (["place", "--help"], 0, None),
    (
        ["-c", "cluster.toml", "rolling", "--group", "g", "--", "true"],
        12,
        "heartline.cli._cmd_cluster",
    ),  # no such group
    (["rolling", "--help"], 0, None),
    (["lab", "status", "--dir", "no-lab-here"], 15, "heartline.cli._cmd_lab"),
    (["lab", "crash", "lab1", "--dir", "no-lab-here"], 15, "heartline.cli._cmd_lab"),
    (["--help"], 0, None),
    (["lab", "--help"], 0, None),
    (["lab", "up", "--help"], 0, None),
    (["lock", "--help"], 0, None),
    (["lockd", "--help"], 0, None),
    (["run", "--help"], 0, None),
    (["up", "--help"], 0, None),
]


def imported(argv: list[str], tmp_path: Path) -> tuple[int, set[str]]:
    """Exit code and the names of the modules a cold `heartline ARGV` imported."""
    socket = str(tmp_path / "none.sock")
    (tmp_path / "cluster.toml").write_text(f'[cluster]\nbackend = "{NOWHERE}"\n')
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "heartline", "-s", socket, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    names = {
        line.rpartition("|")[2].strip()
        for line in res.stderr.splitlines()
        if line.startswith("import time:") and "self [us]" not in line
    }
    return res.returncode, names


@pytest.mark.parametrize(("argv", "code", "module"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_cold_call_loads_only_its_commands_code(
    tmp_path: Path, argv: list[str], code: int, module: str | None
) -> None:
    """Parsing builds no command's code: a call loads the module of its own command only (none
    for --help), and no command but run, up and lockd loads asyncio, ssl, the supervisor, the
    daemon or the lock server."""
    got, names = imported(argv, tmp_path)
    assert got == code
    assert "heartline.cli._main" in names  # the report really covers the CLI's imports
    heavy = sorted(n for n in names for h in HEAVY if n == h or n.startswith(h + "."))
    assert heavy == []
    assert names & COMMAND_MODULES == ({module} if module else set())
