#!/usr/bin/env python3
"""Cost of heartline's backdoor in a busy program: connect latency and idle wake-ups.

Usage:
    python3 benchmarks/backdoor.py [--json] [--connections N] [--threads T] [--idle SECONDS]

A child interpreter starts T threads (1000 by default), each blocked on a threading.Event, and
installs the backdoor on a unix socket in a private temporary directory. This script then

* opens N connections (20 by default), one after the other, and times each from the start of
  ``connect()`` to the first ">>> " prompt received (the banner comes before it); the table shows
  p50, p90 and the slowest (goal: p50 <= 10 ms);
* once the sessions are closed, reads the voluntary and involuntary context switches of the
  backdoor's accept thread, and of the whole process, from /proc over an idle window of SECONDS
  (2 by default), and shows them per second (goal: zero for the accept thread).

``--json`` prints the same as JSON instead of a markdown table. Linux only (SO_PEERCRED, /proc).
Standard library plus heartline (taken from the installed package, else from ../src).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from _common import nearest_rank
from _procfs import ctxt_switches, thread_count

SRC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

CHILD = """
import sys, threading
sys.path.append({src!r})
from heartline.service import backdoor

stop = threading.Event()
workers = [threading.Thread(target=stop.wait, daemon=True) for _ in range({threads})]
for w in workers:
    w.start()
bd = backdoor.install(sys.argv[1])
accept = next(t for t in threading.enumerate() if t.name == "heartline-backdoor")
print(accept.native_id, threading.active_count(), flush=True)
sys.stdin.read()
bd.close()
"""

PROMPT = b">>> "


def first_prompt_ms(path: str) -> float:
    start = time.perf_counter()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.connect(path)
        data = b""
        while not data.endswith(PROMPT):
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"session ended before the prompt: {data!r}")
            data += chunk
        return (time.perf_counter() - start) * 1000
    finally:
        sock.close()


def switches(pid: int, tid: int | None = None) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of one thread, or summed over all of them."""
    per_thread = ctxt_switches(pid, None if tid is None else [tid]).values()
    return sum(v for v, _ in per_thread), sum(i for _, i in per_thread)


def measure(connections: int, threads: int, idle: float) -> dict[str, object]:
    directory = tempfile.mkdtemp(prefix="hl-bench-bd-")
    path = os.path.join(directory, "bd.sock")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(src=SRC_DIR, threads=threads), path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        accept_tid, active = (int(x) for x in child.stdout.readline().split())
        baseline_tasks = thread_count(child.pid)
        latencies = [first_prompt_ms(path) for _ in range(connections)]
        # Session threads end once their client has gone: wait (with a deadline) until the
        # process is back to its thread count before the idle window.
        deadline = time.monotonic() + 10
        while thread_count(child.pid) > baseline_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        before_accept, before_all = switches(child.pid, accept_tid), switches(child.pid)
        time.sleep(idle)  # the idle window itself is what is measured
        after_accept, after_all = switches(child.pid, accept_tid), switches(child.pid)
        if child.poll() is not None:
            raise RuntimeError(f"the program ended during the idle window ({child.returncode})")
    finally:
        if child.poll() is None:
            child.communicate(input="", timeout=30)
        shutil.rmtree(directory, ignore_errors=True)
    latencies.sort()
    return {
        "python": platform.python_version(),
        "threads": active,
        "connections": connections,
        "connect_to_prompt_ms": {
            "p50": statistics.median(latencies),
            "p90": nearest_rank(latencies, 90),
            "max": latencies[-1],
            "min": latencies[0],
        },
        "idle_seconds": idle,
        "accept_thread_wakeups_per_s": {
            "voluntary": (after_accept[0] - before_accept[0]) / idle,
            "involuntary": (after_accept[1] - before_accept[1]) / idle,
        },
        "process_wakeups_per_s": {
            "voluntary": (after_all[0] - before_all[0]) / idle,
            "involuntary": (after_all[1] - before_all[1]) / idle,
        },
    }


def markdown(r: dict[str, object]) -> str:
    lat = r["connect_to_prompt_ms"]
    acc = r["accept_thread_wakeups_per_s"]
    proc = r["process_wakeups_per_s"]
    assert isinstance(lat, dict) and isinstance(acc, dict) and isinstance(proc, dict)
    rows = [
        "| measure | value | goal |",
        "| --- | --- | --- |",
        f"| connect to first prompt, p50 of {r['connections']} | {lat['p50']:.2f} ms | <= 10 ms |",
        f"| connect to first prompt, p90 / max | {lat['p90']:.2f} / {lat['max']:.2f} ms | |",
        f"| accept thread wake-ups over {r['idle_seconds']:g} s idle "
        f"(voluntary / involuntary) | {acc['voluntary']:g} / {acc['involuntary']:g} per s | 0 |",
        f"| whole process wake-ups, {r['threads']} threads "
        f"(voluntary / involuntary) | {proc['voluntary']:g} / {proc['involuntary']:g} per s | |",
    ]
    return f"Python {r['python']}, {r['threads']} threads in the program\n\n" + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=2.0, help="idle window in seconds")
    args = parser.parse_args()
    result = measure(args.connections, args.threads, args.idle)
    print(json.dumps(result, indent=2) if args.json else markdown(result))


if __name__ == "__main__":
    main()
