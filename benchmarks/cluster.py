"""Cluster benchmarks: what a host's load report costs, and placement on lab hosts.

    python3 benchmarks/cluster.py [--quick] [--no-write] [--only report|lab]

report: two heartline daemons side by side, each supervising the same 10 `sleep` programs,
one with `[cluster]` (reporting to a `heartline lockd` on 127.0.0.1 every 2 s) and one
without; the difference in their CPU time over the window is what reporting costs a host
(goal: <= 0.1 % of a core). lockd's own CPU for that one reporter is shown too.

Writes its own section of benchmarks/RESULTS.md (between section markers, which run.py keeps).
Every server and daemon runs in its own session and is stopped by process group at the end,
even on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import HEARTLINE_BIN, WORK_DIR
from _procfs import sched_ns
from _sections import write_section

RESULTS_JSON = os.path.join(WORK_DIR, "cluster.json")
SECTION = "cluster"
INTERVAL = 2.0
PROGRAMS = 10


def log(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL after 10 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextlib.contextmanager
def started(
    argv: list[str], logfile: str, ready_fd: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` in its own session; with ``ready_fd``, wait for heartline's ready line."""
    env = dict(os.environ)
    r = w = -1
    pass_fds: tuple[int, ...] = ()
    if ready_fd:
        r, w = os.pipe()
        env["HEARTLINE_READY_FD"] = str(w)
        pass_fds = (w,)
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                pass_fds=pass_fds, start_new_session=True)  # fmt: skip
    try:
        if ready_fd:
            os.close(w)
            with os.fdopen(r, "rb") as rf:
                if not rf.read().startswith(b"ready"):
                    raise RuntimeError(f"{argv[1:3]} did not start; see {logfile}")
        yield proc
    finally:
        stop_group(proc)


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def daemon_config(root: str, name: str, backend: str | None) -> str:
    run = os.path.join(root, name, "run")
    os.makedirs(run, exist_ok=True)
    text = f'[daemon]\nrun_dir = "{run}"\nlog_dir = "{os.path.join(root, name, "logs")}"\n'
    for i in range(PROGRAMS):
        text += f'\n[programs.sleep{i}]\ncommand = ["sleep", "3600"]\n'
    if backend:
        text += textwrap.dedent(f"""
            [cluster]
            backend = "{backend}"
            name = "{name}"
            report_interval = "{INTERVAL:g}s"
            """)  # fmt: skip
    path = os.path.join(root, f"{name}.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def bench_report(window: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hl-bench-cluster-") as root:
        port = free_port()
        lockd_argv = [HEARTLINE_BIN, "lockd", "--listen", f"127.0.0.1:{port}", "--no-data"]
        with started(lockd_argv, os.path.join(root, "lockd.log")) as lockd:
            wait_port(port)
            plain_cfg = daemon_config(root, "plain", None)
            cluster_cfg = daemon_config(root, "reporting", f"heartline://127.0.0.1:{port}")
            up = [HEARTLINE_BIN, "up", "-c"]
            with started([*up, plain_cfg], os.path.join(root, "plain.log"), ready_fd=True) as plain, \
                 started([*up, cluster_cfg], os.path.join(root, "reporting.log"),
                         ready_fd=True) as reporting:  # fmt: skip
                time.sleep(2 * INTERVAL)  # settle: programs up, first reports out
                pids = {"plain": plain.pid, "reporting": reporting.pid, "lockd": lockd.pid}
                before = {k: sched_ns(p) or 0 for k, p in pids.items()}
                t0 = time.monotonic()
                time.sleep(window)
                elapsed = time.monotonic() - t0
                after = {k: sched_ns(p) or 0 for k, p in pids.items()}
    pct = {k: 100.0 * (after[k] - before[k]) / 1e9 / elapsed for k in pids}
    return {
        "window_s": round(elapsed, 1),
        "plain_pct": round(pct["plain"], 4),
        "reporting_pct": round(pct["reporting"], 4),
        "overhead_pct": round(pct["reporting"] - pct["plain"], 4),
        "lockd_pct": round(pct["lockd"], 4),
        "per_report_ms": round(
            1000 * ((after["reporting"] - before["reporting"]) - (after["plain"] - before["plain"]))
            / 1e9 / (elapsed / INTERVAL), 3),
    }  # fmt: skip


def render(results: dict[str, object]) -> str:
    lines = [f"<!-- section: {SECTION} -->", "## 9. Cluster: what a load report costs", ""]
    rep = results.get("report")
    if isinstance(rep, dict):
        verdict = "met" if rep["overhead_pct"] <= 0.1 else "missed"
        lines += [
            f"Two daemons side by side, each supervising {PROGRAMS} `sleep` programs, over a "
            f"{rep['window_s']:g} s window ({results['when']}); one also reports its load to a "
            f"`heartline lockd` on 127.0.0.1 every {INTERVAL:g} s. CPU time from "
            "/proc/PID/task/*/schedstat.",
            "",
            "| | CPU, % of one core |",
            "| --- | ---: |",
            f"| daemon without `[cluster]` | {rep['plain_pct']:.4f} |",
            f"| daemon reporting every {INTERVAL:g} s | {rep['reporting_pct']:.4f} |",
            f"| **reporting's cost to the host** | **{rep['overhead_pct']:.4f}** |",
            f"| lockd, serving that one reporter | {rep['lockd_pct']:.4f} |",
            "",
            f"One report costs the daemon about {rep['per_report_ms']:.2f} ms of CPU (a /proc "
            f"walk, the JSON, one write). Goal <= 0.1 % of a core: **{verdict}**. "
            "Schedule::Load's `slreportd` is not packaged for Debian, so it is not measured "
            "beside it.",
            "",
        ]
    lines.append("<!-- /section -->")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--only", choices=["report"], default=None)
    args = ap.parse_args()
    results: dict[str, object] = {
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    }
    window = 20.0 if args.quick else 60.0
    log(f"report overhead over {window:g} s")
    results["report"] = bench_report(window)
    log(json.dumps(results["report"]))
    text = render(results)
    if args.no_write:
        print(text)
        return 0
    os.makedirs(WORK_DIR, exist_ok=True)
    with open(RESULTS_JSON, "w") as f:
        json.dump(results, f, indent=2)
    write_section(text, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
