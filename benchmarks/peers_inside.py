#!/usr/bin/env python3
"""Two in-process peers measured the way heartline's reports.py and backdoor.py measure heartline.

Usage:
    python3 benchmarks/peers_inside.py [--json] [--threads 1000] [--runs 5] [--connections 20]

The peers run under the interpreter of ``benchmarks/.venv-peers`` (``pip install oslo.reports
manhole`` there); this script itself needs only the standard library.

* **oslo.reports** (Guru Meditation Report): a child starts T threads (1000 by default), each
  blocked on a threading.Event, and calls
  ``TextGuruMeditation.setup_autorun(version, service_name=..., log_dir=DIR)``, which installs a
  SIGUSR2 handler (its default signal) that builds the report and writes it to a file in DIR.
  As in reports.py, the child waits 1 s, then its main thread spins recording the gaps between
  successive ``time.perf_counter()`` readings. For each of ``--runs`` reports:

  - **latency**: SIGUSR2 -> the report file is complete. oslo.reports writes the file in place
    (open, write, close; no rename), so "complete" means: the file exists, is not empty, and its
    size has not changed for 50 ms; the latency is taken at the first poll that saw the final
    size (polling every 0.5 ms). The report file is then removed, so that the next report
    (whose name only has one-second resolution) is a new file. The time at which the child's
    main thread resumed (the end of the gap that covers the signal: the handler runs in the main
    thread and returns once the file is closed) is shown as a cross-check;
  - **main thread blocked**: the largest gap overlapping [signal, file complete], as in
    reports.py.

* **manhole**: a child starts T threads, each blocked on an Event, and calls
  ``manhole.install(socket_path=PATH, verbose=False, daemon_connection=True)``; its main thread
  then blocks on stdin, as in backdoor.py. ``--connections`` connections (20 by default) are
  made one after the other (manhole serves one client at a time), each timed from the start of
  ``connect()`` to the first ">>> " prompt received (manhole first sends the stacks of all the
  threads, then the banner, then the prompt), then closed. No main-thread gap is measured for
  manhole (the main thread is blocked, as in backdoor.py).

Each child runs in its own process group, which is killed on the way out whatever happens. A peer
that cannot be run is reported as ``"failed: reason"``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable

# The same measurements as heartline's own benchmarks (this directory is on sys.path when the
# script runs).
from _common import PEERS_PY, nearest_rank
from _stalls import overlaps, spin_source, stalls
from backdoor import first_prompt_ms

STABLE_S = 0.05  # a report file whose size has not changed for this long is complete
REPORT_TIMEOUT_S = 20.0
START_TIMEOUT_S = 30.0

OSLO_CHILD = textwrap.dedent("""
    import json, sys, threading, time
    from oslo_reports import guru_meditation_report as gmr

    class Version:
        def vendor_string(self):
            return "bench"

        def product_string(self):
            return "peers-inside"

        def version_string_with_package(self):
            return "0"

    directory, nthreads = sys.argv[1], int(sys.argv[2])
    stop = threading.Event()
    for i in range(nthreads):
        threading.Thread(target=stop.wait, name=f"blocked-{i}", daemon=True).start()
    gmr.TextGuruMeditation.setup_autorun(Version(), service_name="peer", log_dir=directory)
    time.sleep(1.0)  # same warm-up pause as heartline's reports.py
""") + spin_source('"ready", threading.active_count()')

MANHOLE_CHILD = textwrap.dedent("""
    import sys, threading
    import manhole

    path, nthreads = sys.argv[1], int(sys.argv[2])
    stop = threading.Event()
    for i in range(nthreads):
        threading.Thread(target=stop.wait, name=f"blocked-{i}", daemon=True).start()
    manhole.install(socket_path=path, verbose=False, daemon_connection=True, strict=True)
    print("ready", threading.active_count(), flush=True)
    sys.stdin.read()
""")


def start_child(code: str, *args: str) -> subprocess.Popen[str]:
    if not os.access(PEERS_PY, os.X_OK):
        raise RuntimeError(f"no peers interpreter at {PEERS_PY}")
    return subprocess.Popen(
        [PEERS_PY, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, killed as a whole at the end
    )


def wait_ready(proc: subprocess.Popen[str]) -> int:
    """Wait (bounded) for the child's "ready N" line; returns N, its thread count."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    deadline = time.monotonic() + START_TIMEOUT_S
    buf = ""
    try:
        while "\n" not in buf:
            if time.monotonic() > deadline:
                raise RuntimeError(f"child not ready within {START_TIMEOUT_S:g} s")
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"child exited {proc.returncode}: {err.strip()[-300:]}")
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            if not chunk:
                time.sleep(0.01)
                continue
            buf += chunk.decode()
    finally:
        os.set_blocking(fd, True)
    line = buf.split("\n", 1)[0].split()
    if len(line) != 2 or line[0] != "ready":
        raise RuntimeError(f"child did not start: {buf!r}")
    return int(line[1])


def kill_group(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def finish(proc: subprocess.Popen[str]) -> str:
    """Tell the child to stop (newline on stdin) and return its stdout, bounded."""
    try:
        out, _ = proc.communicate("\n", timeout=30)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise RuntimeError("child did not stop within 30 s") from None
    return out


def wait_report(directory: str, t0: float) -> tuple[str, float, int]:
    """Poll for a complete report file: (path, time its final size was first seen, size)."""
    deadline = t0 + REPORT_TIMEOUT_S
    size, since, path = -1, 0.0, ""
    while True:
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"no complete report within {REPORT_TIMEOUT_S:g} s")
        names = [n for n in os.listdir(directory) if "gurumeditation" in n]
        if names:
            path = os.path.join(directory, sorted(names)[-1])
            try:
                current = os.path.getsize(path)
            except FileNotFoundError:
                current = -1
            if current != size:
                size, since = current, now
            elif size > 0 and now - since >= STABLE_S:
                return path, since, size
        time.sleep(0.0005)


def measure_oslo(threads: int, runs: int) -> dict[str, object]:
    directory = tempfile.mkdtemp(prefix="hl-bench-gmr-")
    proc = None
    try:
        proc = start_child(OSLO_CHILD, directory, str(threads))
        active = wait_ready(proc)
        latencies, windows, sizes = [], [], []
        for _ in range(runs):
            t0 = time.monotonic()
            os.kill(proc.pid, signal.SIGUSR2)
            path, t1, size = wait_report(directory, t0)
            latencies.append(t1 - t0)
            windows.append((t0, t1))
            sizes.append(size)
            time.sleep(0.2)
            os.unlink(path)  # the next report gets the same name if made within the same second
        out = finish(proc)
    finally:
        if proc is not None:
            kill_group(proc)
        shutil.rmtree(directory, ignore_errors=True)
    gaps = [(end, gap) for end, gap in json.loads(out.strip().splitlines()[-1])]
    blocked, noise = stalls(gaps, windows)
    resumed = []
    for t0, t1 in windows:
        covering = [
            end for end, gap in gaps if overlaps(end, gap, t0, t1) and end - gap <= t0 + 0.001
        ]
        resumed.append(max(covering, default=t1) - t0)
    return {
        "threads": active,
        "runs": runs,
        "completion_rule": "file non-empty and size unchanged for 50 ms (time of final size)",
        "report_p50_ms": statistics.median(latencies) * 1000,
        "report_max_ms": max(latencies) * 1000,
        "main_resumed_p50_ms": statistics.median(resumed) * 1000,
        "main_blocked_p50_ms": statistics.median(blocked) * 1000,
        "main_blocked_max_ms": max(blocked) * 1000,
        "noise_max_gap_ms": noise * 1000,
        "report_text_kib": statistics.median(sizes) / 1024,
    }


def measure_manhole(threads: int, connections: int) -> dict[str, object]:
    directory = tempfile.mkdtemp(prefix="hl-bench-mh-")
    path = os.path.join(directory, "manhole.sock")
    proc = None
    try:
        proc = start_child(MANHOLE_CHILD, path, str(threads))
        active = wait_ready(proc)
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise RuntimeError("manhole socket did not appear within 10 s")
            time.sleep(0.01)
        latencies = sorted(first_prompt_ms(path) for _ in range(connections))
        if proc.poll() is not None:
            raise RuntimeError(f"child ended during the connections ({proc.returncode})")
    finally:
        if proc is not None:
            kill_group(proc)
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "threads": active,
        "connections": connections,
        "connect_to_prompt_p50_ms": statistics.median(latencies),
        "connect_to_prompt_p90_ms": nearest_rank(latencies, 90),
        "connect_to_prompt_max_ms": latencies[-1],
        "connect_to_prompt_min_ms": latencies[0],
        "main_blocked_max_ms": None,
    }


def attempt(fn: Callable[..., dict[str, object]], *args: int) -> dict[str, object] | str:
    try:
        return fn(*args)
    except Exception as exc:  # reported, not raised: the other peer still runs
        return f"failed: {type(exc).__name__}: {exc}"


def peer_versions() -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, platform\n"
        "out = {'python': platform.python_version()}\n"
        "for d in ('oslo.reports', 'manhole'):\n"
        "    try:\n"
        "        out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError:\n"
        "        out[d] = 'not installed'\n"
        "print(json.dumps(out))\n"
    )
    try:
        res = subprocess.run(
            [PEERS_PY, "-c", code], capture_output=True, text=True, timeout=30, check=True
        )
        versions = json.loads(res.stdout)
        return {str(k): str(v) for k, v in versions.items()}
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}


def markdown(result: dict[str, object], threads: int) -> str:
    lines = [
        f"Peers measured in-process, {threads} blocked threads, Python {result['python']}\n",
        "| peer | measure | p50 | max | main thread blocked, max |",
        "| --- | --- | --- | --- | --- |",
    ]
    versions = result.get("versions") or {}
    assert isinstance(versions, dict)
    oslo = result["oslo_reports"]
    name = f"oslo.reports {versions.get('oslo.reports', '')}".strip()
    if isinstance(oslo, dict):
        lines.append(
            f"| {name} | SIGUSR2 -> report file complete ({oslo['runs']} runs) "
            f"| {oslo['report_p50_ms']:.0f} ms | {oslo['report_max_ms']:.0f} ms "
            f"| {oslo['main_blocked_max_ms']:.0f} ms |"
        )
    else:
        lines.append(f"| {name} | {oslo} | | | |")
    mh = result["manhole"]
    name = f"manhole {versions.get('manhole', '')}".strip()
    if isinstance(mh, dict):
        lines.append(
            f"| {name} | connect -> first prompt ({mh['connections']} connections) "
            f"| {mh['connect_to_prompt_p50_ms']:.1f} ms | {mh['connect_to_prompt_max_ms']:.1f} ms "
            "| not measured |"
        )
    else:
        lines.append(f"| {name} | {mh} | | | |")
    if isinstance(oslo, dict):
        lines.append(
            f"\noslo.reports: main thread resumed after p50 {oslo['main_resumed_p50_ms']:.0f} ms "
            f"(the handler runs in the main thread); report {oslo['report_text_kib']:.0f} KiB; "
            f"largest main-thread gap outside reports {oslo['noise_max_gap_ms']:.1f} ms."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5, help="oslo.reports reports")
    parser.add_argument("--connections", type=int, default=20, help="manhole connections")
    args = parser.parse_args()
    result: dict[str, object] = {
        "oslo_reports": attempt(measure_oslo, args.threads, args.runs),
        "manhole": attempt(measure_manhole, args.threads, args.connections),
        "versions": peer_versions(),
    }
    versions = result["versions"]
    assert isinstance(versions, dict)
    result["python"] = versions.pop("python", "unknown")  # the peers' interpreter
    print(json.dumps(result, indent=1) if args.json else markdown(result, args.threads))


if __name__ == "__main__":
    main()
