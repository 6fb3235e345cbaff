"""How fast a report comes, what it costs the application, and what it costs when idle.

A child process starts 1000 threads (each blocked on an Event) and installs
``heartline.service.reports``. Then:

The spinning child lets the helper thread finish its warm-up (1 s) before it starts: a signal
during the warm-up waits for it.

* **latency**: SIGUSR2 -> the text report is on disk (it is written last, by rename, so once it
  is there the report is complete); p50 and max over ``--runs`` reports;
* **main thread blocked**: the child's main thread spins recording the gaps between successive
  ``time.perf_counter()`` readings; the largest gap while a report is being written is how long
  the report kept the application's main thread from running (the same gap outside reports is
  shown as the noise floor);
* **idle cost**: with reports installed and the main thread blocked on stdin, the voluntary and
  involuntary context switches of all the child's threads over 2 s (/proc/PID/task/*/status):
  zero means no thread ever woke up.

Goals: report <= 200 ms, main thread blocked <= 20 ms, 0 wake-ups per second when idle.

    python benchmarks/reports.py [--threads 1000] [--runs 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from _procfs import ctxt_switches
from _stalls import spin_source, stalls

CHILD = textwrap.dedent("""
    import json, sys, threading, time
    from heartline.service import reports

    mode, directory, nthreads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    stop = threading.Event()
    for i in range(nthreads):
        threading.Thread(target=stop.wait, name=f"blocked-{i}", daemon=True).start()
    reports.install(directory=directory)
    if mode == "idle":
        print("ready", flush=True)
        sys.stdin.readline()
        sys.exit(0)

    # The helper thread warms up right after install (imports, distributions, source lines):
    # let it finish before the main thread starts competing for the GIL.
    time.sleep(1.0)
""") + spin_source('"ready"')


def start_child(mode: str, directory: str, threads: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, directory, str(threads)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != "ready\n":
        proc.kill()
        raise SystemExit(f"child did not start: {line!r}")
    return proc


def reports_in(directory: str) -> set[str]:
    return {n for n in os.listdir(directory) if n.startswith("report-") and n.endswith(".txt")}


def measure_reports(threads: int, runs: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="hl-bench-reports-") as directory:
        proc = start_child("spin", directory, threads)
        try:
            windows = []
            latencies = []
            for _ in range(runs):
                before = reports_in(directory)
                t0 = time.monotonic()
                os.kill(proc.pid, signal.SIGUSR2)
                deadline = t0 + 10
                while not (reports_in(directory) - before):
                    if time.monotonic() > deadline:
                        raise SystemExit("no report within 10 s")
                    time.sleep(0.0005)
                t1 = time.monotonic()
                latencies.append(t1 - t0)
                windows.append((t0, t1))
                time.sleep(0.2)
            newest = sorted(reports_in(directory))[-1]
            txt_size = os.path.getsize(os.path.join(directory, newest))
            json_size = os.path.getsize(os.path.join(directory, newest[:-4] + ".json"))
            out, _ = proc.communicate("\n", timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    gaps = [(end, gap) for end, gap in json.loads(out.strip().splitlines()[-1])]
    blocked, noise = stalls(gaps, windows)
    return {
        "threads": threads,
        "runs": runs,
        "report_p50_ms": statistics.median(latencies) * 1000,
        "report_max_ms": max(latencies) * 1000,
        "main_blocked_p50_ms": statistics.median(blocked) * 1000,
        "main_blocked_max_ms": max(blocked) * 1000,
        "noise_max_gap_ms": noise * 1000,
        "report_text_kib": txt_size / 1024,
        "report_json_kib": json_size / 1024,
    }


def switches(pid: int) -> dict[int, int]:
    """Voluntary plus involuntary context switches of each thread of ``pid``."""
    return {tid: vol + invol for tid, (vol, invol) in ctxt_switches(pid).items()}


def measure_idle(threads: int, seconds: float = 2.0) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="hl-bench-reports-") as directory:
        proc = start_child("idle", directory, threads)
        try:
            time.sleep(1.0)  # the helper lists distributions once, then sleeps
            before = switches(proc.pid)
            time.sleep(seconds)
            after = switches(proc.pid)
            proc.communicate("\n", timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    woke = {tid: after[tid] - before[tid] for tid in after if tid in before}
    main = woke.get(proc.pid, 0)
    others = sum(n for tid, n in woke.items() if tid != proc.pid)
    return {
        "idle_seconds": seconds,
        "idle_threads_sampled": len(woke),
        "idle_main_switches_per_s": main / seconds,
        "idle_other_switches_per_s": others / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    result = measure_reports(args.threads, args.runs) | measure_idle(args.threads)
    result["python"] = sys.version.split()[0]
    result["goals_met"] = (
        result["report_p50_ms"] <= 200  # type: ignore[operator]
        and result["main_blocked_max_ms"] <= 20  # type: ignore[operator]
        and result["idle_other_switches_per_s"] == 0
    )
    if args.json:
        print(json.dumps(result, indent=1))
        return
    rows = [
        ("report: SIGUSR2 -> file complete, p50", f"{result['report_p50_ms']:.1f} ms", "<= 200 ms"),
        ("report: max", f"{result['report_max_ms']:.1f} ms", ""),
        ("main thread blocked during a report, p50", f"{result['main_blocked_p50_ms']:.1f} ms", ""),
        (
            "main thread blocked during a report, max",
            f"{result['main_blocked_max_ms']:.1f} ms",
            "<= 20 ms",
        ),
        (
            "main thread: largest gap outside reports",
            f"{result['noise_max_gap_ms']:.1f} ms",
            "(noise)",
        ),
        (
            "report size, text / JSON",
            f"{result['report_text_kib']:.0f} / {result['report_json_kib']:.0f} KiB",
            "",
        ),
        (
            "idle: wake-ups/s, all threads but main",
            f"{result['idle_other_switches_per_s']:.1f}",
            "0",
        ),
        ("idle: wake-ups/s, main thread", f"{result['idle_main_switches_per_s']:.1f}", ""),
    ]
    print(
        f"heartline reports, {args.threads} threads, {args.runs} reports, Python {result['python']}\n"
    )
    print("| measure | result | goal |")
    print("|---|---|---|")
    for name, value, goal in rows:
        print(f"| {name} | {value} | {goal} |")
    print(f"\ngoals met: {'yes' if result['goals_met'] else 'NO'}")


if __name__ == "__main__":
    main()
