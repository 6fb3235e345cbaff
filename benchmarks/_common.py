"""What every benchmark script shares: where things are, how figures are summarised, and the
peers' virtualenv.

The scripts run as ``python3 benchmarks/NAME.py``, so this directory is on ``sys.path`` and the
shared modules are imported by their plain names. Standard library only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
WORK_DIR = os.path.join(BENCH_DIR, "work")
# Compiled children and copies of system binaries: whatever runs from here is the benchmarks'
# own, so leftovers can be found by executable path.
BIN_DIR = os.path.join(WORK_DIR, "bin")
PEERS_VENV = os.path.join(BENCH_DIR, ".venv-peers")
PEERS_PY = os.path.join(PEERS_VENV, "bin", "python")
VENV_PY = os.path.join(REPO_DIR, ".venv", "bin", "python")
HEARTLINE_BIN = os.environ.get("HEARTLINE_BIN", os.path.join(REPO_DIR, ".venv", "bin", "heartline"))


def one_line(text: object, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks; ``values`` must not be empty."""
    vals = sorted(values)
    k = (len(vals) - 1) * pct / 100.0
    lo = int(k)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def nearest_rank(values: Sequence[float], pct: float) -> float:
    """The value at rank round(pct % of n), counting from 1, without interpolation: with few
    samples (20 connections) the figure is one that was measured, not one between two."""
    vals = sorted(values)
    return vals[max(0, round(pct / 100.0 * len(vals)) - 1)]


def install_peers(packages: Sequence[str], *, probe: str | None = None) -> None:
    """Install ``packages`` into benchmarks/.venv-peers, creating it on first use, unless the
    Python code ``probe`` already runs there. Raises OSError or subprocess.SubprocessError."""
    if not os.path.exists(PEERS_PY):
        subprocess.run([sys.executable, "-m", "venv", PEERS_VENV], check=True, timeout=120)
    if probe is not None:
        found = subprocess.run([PEERS_PY, "-c", probe], capture_output=True, check=False)
        if found.returncode == 0:
            return
    subprocess.run(
        [PEERS_PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *packages],
        check=True,
        timeout=600,
    )
