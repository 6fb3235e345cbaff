"""Liveness benchmarks: hang-to-restart latency, the daemon's cost of 500 heartbeating
programs, and the in-process kick().

    python3 benchmarks/liveness.py [--quick]

Writes its own section of benchmarks/RESULTS.md (between section markers, which run.py keeps
when it rewrites the file). Standard library only; heartline from the repository's .venv.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import time

import _common
from _common import BENCH_DIR, BIN_DIR, HEARTLINE_BIN, REPO_DIR, VENV_PY, percentile
from _procfs import cpu_ticks
from _sections import RESULTS_MD, write_section

WORK_DIR = os.path.join(_common.WORK_DIR, "liveness")
CHILD_SRC = os.path.join(BENCH_DIR, "hangchild.c")
CHILD_BIN = os.path.join(BIN_DIR, "hangchild")
WATCHDOG = 0.5  # seconds, for the hang benchmark
TICK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[liveness {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_child() -> None:
    os.makedirs(os.path.dirname(CHILD_BIN), exist_ok=True)
    if not os.path.exists(CHILD_BIN) or os.path.getmtime(CHILD_BIN) < os.path.getmtime(CHILD_SRC):
        subprocess.run(["gcc", "-O2", "-o", CHILD_BIN, CHILD_SRC], check=True)


class Daemon:
    """`heartline up` in the foreground in its own session; always stopped with its group."""

    def __init__(self, root: str, programs: str) -> None:
        os.makedirs(root, exist_ok=True)
        self.config = os.path.join(root, "heartline.toml")
        with open(self.config, "w") as f:
            f.write(f'[daemon]\nrun_dir = "run"\nlog_dir = "logs"\n{programs}')
        self.log = open(os.path.join(root, "daemon.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [HEARTLINE_BIN, "up", "-c", self.config],
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )

    def status(self) -> dict:
        out = subprocess.run(
            [HEARTLINE_BIN, "-c", self.config, "status", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def wait_running(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = self.status()
            if sum(p["state"] == "running" for p in doc.get("programs", [])) == n:
                return
            time.sleep(0.2)
        raise RuntimeError(f"not all {n} programs running within {timeout}s")

    def cpu_ticks(self) -> int:
        ticks = cpu_ticks(self.proc.pid)
        if ticks is None:
            raise RuntimeError(f"daemon pid {self.proc.pid} vanished")
        return ticks

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


def bench_hang(samples: int) -> dict:
    """Last heartbeat of a hung program to the start of its replacement."""
    root = os.path.join(WORK_DIR, "hang")
    subprocess.run(["rm", "-rf", root], check=True)
    os.makedirs(root)
    record = os.path.join(root, "times.txt")
    d = Daemon(
        root,
        f"""
[programs.hang]
command = ["{CHILD_BIN}", "hang", "{record}"]
ready = "notify"
watchdog = "{WATCHDOG}s"
stop_timeout = "2s"
backoff = {{ initial = "0s" }}
crash_loop = {{ max_starts = 0 }}
""",
    )
    try:
        deadline = time.monotonic() + samples * (WATCHDOG + 0.5) + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), open(record) as f:
                if f.read().count("S ") > samples + 1:
                    break
            time.sleep(0.2)
    finally:
        d.stop()
    starts, beats = [], []
    with open(record) as f:
        for line in f:
            tag, ns = line.split()
            (starts if tag == "S" else beats).append(int(ns))
    gaps = [(s - b) / 1e6 for b, s in zip(beats, starts[1:], strict=False)]
    if not gaps:
        raise RuntimeError("no restart observed")
    return {
        "samples": len(gaps),
        "p50_ms": percentile(gaps, 50),
        "p99_ms": percentile(gaps, 99),
        "max_ms": max(gaps),
        "watchdog_ms": WATCHDOG * 1000,
    }


def bench_beats(n: int, window: float) -> dict:
    """Daemon CPU while n programs each send WATCHDOG=1 every 100 ms."""
    root = os.path.join(WORK_DIR, "beats")
    subprocess.run(["rm", "-rf", root], check=True)
    programs = "".join(
        f'[programs.b{i}]\ncommand = ["{CHILD_BIN}", "beat"]\nready = "notify"\nwatchdog = "2s"\n'
        for i in range(n)
    )
    d = Daemon(root, programs)
    try:
        d.wait_running(n, 60)
        time.sleep(2)
        t0, c0 = time.monotonic(), d.cpu_ticks()
        time.sleep(window)
        t1, c1 = time.monotonic(), d.cpu_ticks()
        doc = d.status()
        restarts = sum(p["restarts"] for p in doc["programs"])
        received = doc["daemon"]["notify"]["received"]
    finally:
        d.stop()
    return {
        "programs": n,
        "window_s": window,
        "cpu_pct": 100.0 * (c1 - c0) / TICK / (t1 - t0),
        "restarts": restarts,
        "datagrams": received,
    }


def bench_kick() -> dict | None:
    script = os.path.join(BENCH_DIR, "kick.py")
    if not os.path.exists(script):
        return None
    out = subprocess.run(
        [VENV_PY, script, "--json"], capture_output=True, text=True, timeout=300, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr else "kick.py failed")
    return json.loads(out.stdout)


def render(res: dict, quick: bool) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    L = [
        "<!-- section: liveness -->",
        "## 5. Liveness",
        "",
        f"Generated by `python3 benchmarks/liveness.py{' --quick' if quick else ''}` on {when}. "
        "heartline only: none of supervisord, circus's core or PM2 detects a hung program.",
        "",
    ]
    h = res.get("hang")
    L += ["### 5a. Hang to restart", ""]
    if isinstance(h, dict):
        goal = h["watchdog_ms"] + 100
        L += [
            f"`benchmarks/hangchild.c` (C) sends READY=1, beats 5 times, then hangs; `watchdog = "
            f'"{WATCHDOG}s"`, default report signal (SIGUSR2, which this child ignores '
            "by handling it) and report wait, then the stop path. Sample = start of the "
            "replacement minus the last heartbeat (CLOCK_MONOTONIC).",
            "",
            "| samples | p50 | p99 | max | goal (p99) |",
            "|---|---|---|---|---|",
            f"| {h['samples']} | {h['p50_ms']:.1f} ms | {h['p99_ms']:.1f} ms | {h['max_ms']:.1f} ms"
            f" | <= watchdog + 100 ms = {goal:.0f} ms ({'met' if h['p99_ms'] <= goal else 'missed'}) |",
            "",
        ]
    else:
        L += [f"failed: {h}", ""]
    b = res.get("beats")
    L += ["### 5b. 500 programs beating every 100 ms", ""]
    if isinstance(b, dict):
        L += [
            "Daemon CPU (utime+stime from /proc) while every program sends WATCHDOG=1 every "
            "100 ms (`hangchild beat`, 5000 datagrams/s in all).",
            "",
            "| programs | window | daemon CPU | datagrams received | restarts | goal |",
            "|---|---|---|---|---|---|",
            f"| {b['programs']} | {b['window_s']:.0f} s | {b['cpu_pct']:.2f} % of one core | "
            f"{b['datagrams']} | {b['restarts']} | < 5 % ({'met' if b['cpu_pct'] < 5 else 'missed'}) |",
            "",
        ]
    else:
        L += [f"failed: {b}", ""]
    k = res.get("kick")
    L += ["### 5c. In-process kick()", ""]
    if isinstance(k, dict) and k.get("results"):
        rows = k["results"]
        lock = next((r["ns_per_call"] for r in rows if r.get("variant") == "lock"), None)
        L += [
            f"`benchmarks/kick.py`: {k.get('calls')} calls per run, median of {k.get('runs')} "
            "runs, empty-loop overhead subtracted. The lock-based kick is the seed's pattern "
            "(a threading.Lock around a time.time() store, with its checker thread running).",
            "",
            "| kick | ns per call (median) | min | max | vs lock-based | goal |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            vs = f"{r['ns_per_call'] / lock:.2f}x" if lock else "n/a"
            goal = "<= 100 ns ({})".format("met" if r["ns_per_call"] <= 100 else "missed")
            if r.get("variant") == "lock":
                goal = "(reference)"
            L.append(
                f"| {r['name']} | {r['ns_per_call']:.1f} | {r['min_ns']:.1f} | {r['max_ns']:.1f}"
                f" | {vs} | {goal} |"
            )
        L.append("")
    elif isinstance(k, dict):
        L += ["```", json.dumps(k, indent=1), "```", ""]
    else:
        L += [f"not measured: {k}", ""]
    L.append("<!-- /section -->")
    return "\n".join(L) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    build_child()
    res: dict = {}
    for name, fn in (
        ("hang", lambda: bench_hang(10 if args.quick else 30)),
        ("beats", lambda: bench_beats(500, 10 if args.quick else 30)),
        ("kick", bench_kick),
    ):
        log(f"{name} ...")
        try:
            res[name] = fn()
        except Exception as e:  # one failed benchmark must not lose the others
            res[name] = f"{type(e).__name__}: {e}"
        log(f"   -> {res[name]}")
    write_section(render(res, args.quick), name="liveness")
    log(f"wrote {os.path.relpath(RESULTS_MD, REPO_DIR)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
