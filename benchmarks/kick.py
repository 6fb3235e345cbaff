#!/usr/bin/env python3
"""Cost of one watchdog kick: heartline's notify.kick() against a lock-based kick.

Usage:
    python3 benchmarks/kick.py [--json] [--calls N] [--runs R]

Three variants, each measured in a fresh interpreter:

* ``notify.kick() supervised``: NOTIFY_SOCKET names a datagram socket this script binds and
  WATCHDOG_USEC is 100 ms, so heartline's pinger thread runs (it wakes every 50 ms and sends
  WATCHDOG=1 when kicked; this script counts the datagrams to show it did);
* ``notify.kick() unsupervised``: no NOTIFY_SOCKET, no thread;
* ``Watchdog.kick()``: heartline's in-process watchdog (a monotonic timestamp, no lock), started;
* ``lock-based kick``: the common hand-written pattern, a watchdog thread object whose kick()
  takes a threading.Lock and stores time.time(), with its checking thread running.

Each run times R loops of N calls of the statement (timeit, garbage collector off) and subtracts
an empty loop of the same length; the table shows the median over the runs in nanoseconds per
call, and the fastest and slowest run. ``--json`` prints the same as JSON instead.

Standard library plus heartline (taken from the installed package, else from ../src).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit

SRC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

VARIANTS = {
    "supervised": "notify.kick() supervised",
    "unsupervised": "notify.kick() unsupervised",
    "watchdog": "Watchdog.kick() (in-process watchdog)",
    "lock": "lock-based kick",
}
#: WATCHDOG_USEC of the supervised variant: the pinger looks every half of it.
WATCHDOG_USEC = 100_000


class LockedWatchdog(threading.Thread):
    """The usual hand-written watchdog: kick() stores a timestamp under a lock, and a thread
    looks at it now and then."""

    def __init__(self, timeout: float) -> None:
        super().__init__(name="locked-watchdog", daemon=True)
        self.timeout = timeout
        self.lock = threading.Lock()
        self.last_kicked_ts = time.time()
        self.stopped = threading.Event()
        self.expired = False

    def kick(self) -> None:
        with self.lock:
            self.last_kicked_ts = time.time()

    def run(self) -> None:
        while not self.stopped.wait(self.timeout / 2):
            with self.lock:
                if time.time() - self.last_kicked_ts > self.timeout:
                    self.expired = True


def measure(stmt: str, namespace: dict[str, object], calls: int, runs: int) -> list[float]:
    """ns per call of ``stmt`` for each run, the empty loop's time taken off."""
    timer = timeit.Timer(stmt, globals=namespace)
    empty = timeit.Timer("pass")
    out = []
    for _ in range(runs):
        base = empty.timeit(calls)
        total = timer.timeit(calls)
        out.append(max(0.0, (total - base) / calls * 1e9))
    return out


def worker(variant: str, calls: int, runs: int) -> dict[str, object]:
    """Runs inside the fresh interpreter of one variant."""
    try:
        from heartline.service import Watchdog, notify
    except ImportError:
        sys.path.insert(0, SRC_DIR)
        from heartline.service import Watchdog, notify

    if variant == "watchdog":
        with Watchdog(3600.0) as guard:
            runs_ns = measure("guard.kick()", {"guard": guard}, calls, runs)
    elif variant == "lock":
        wd = LockedWatchdog(timeout=WATCHDOG_USEC / 1e6)
        wd.start()
        runs_ns = measure("wd.kick()", {"wd": wd}, calls, runs)
        wd.stopped.set()
        wd.join()
    else:
        notify.kick()  # first look-up: starts the pinger when supervised
        pinger = any(t.name == "heartline-notify-pinger" for t in threading.enumerate())
        if pinger != (variant == "supervised"):
            raise SystemExit(f"{variant}: pinger thread running = {pinger}, not as expected")
        runs_ns = measure("notify.kick()", {"notify": notify}, calls, runs)
    return {"runs_ns": runs_ns}


def run_variant(variant: str, calls: int, runs: int, sock_dir: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.pop("WATCHDOG_PID", None)
    received = [0]
    stop = threading.Event()
    server = None
    if variant == "supervised":
        path = os.path.join(sock_dir, "notify.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(path)
        server.settimeout(0.1)
        env["NOTIFY_SOCKET"] = path
        env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)

        def drain() -> None:
            while not stop.is_set():
                try:
                    if server.recv(4096) == b"WATCHDOG=1":
                        received[0] += 1
                except TimeoutError:
                    continue

        threading.Thread(target=drain, daemon=True).start()
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant]
    cmd += ["--calls", str(calls), "--runs", str(runs)]
    started = time.monotonic()
    try:
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    finally:
        stop.set()
        if server is not None:
            time.sleep(0.2)  # let the drain thread leave its last recv() before closing
            server.close()
            os.unlink(env["NOTIFY_SOCKET"])
    result: dict[str, object] = json.loads(out)
    runs_ns = result["runs_ns"]
    assert isinstance(runs_ns, list)
    result.update(
        variant=variant,
        name=VARIANTS[variant],
        ns_per_call=statistics.median(runs_ns),
        min_ns=min(runs_ns),
        max_ns=max(runs_ns),
        seconds=round(time.monotonic() - started, 2),
    )
    if variant == "supervised":
        result["watchdog_pings_received"] = received[0]
    return result


def markdown(results: list[dict[str, object]], calls: int, runs: int) -> str:
    lines = [
        f"kick cost, ns per call (median of {runs} runs of {calls:,} calls, empty loop taken off;"
        f" Python {platform.python_version()})",
        "",
        "| variant | ns/call | fastest run | slowest run |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['ns_per_call']:.1f} | {r['min_ns']:.1f} | {r['max_ns']:.1f} |"
        )
    for r in results:
        if "watchdog_pings_received" in r:
            lines.append("")
            lines.append(
                f"Supervised: WATCHDOG_USEC={WATCHDOG_USEC}; the pinger sent "
                f"{r['watchdog_pings_received']} WATCHDOG=1 datagrams during the run."
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--calls", type=int, default=5_000_000, help="calls per run")
    parser.add_argument("--runs", type=int, default=5, help="runs per variant")
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.calls, args.runs)))
        return
    with tempfile.TemporaryDirectory(prefix="hl-kick-") as sock_dir:
        results = [run_variant(v, args.calls, args.runs, sock_dir) for v in VARIANTS]
    if args.json:
        report = {
            "benchmark": "kick",
            "python": platform.python_version(),
            "calls": args.calls,
            "runs": args.runs,
            "results": results,
        }
        print(json.dumps(report, indent=2))
    else:
        print(markdown(results, args.calls, args.runs))


if __name__ == "__main__":
    main()
