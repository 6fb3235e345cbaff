"""run.py's four benchmarks, each run against one tool through its adapter (_tools.Tool):
crash-to-restart latency, startup of 500 programs and the idle cost of running them (one
daemon for both), and the status CLI from a cold start. Each returns the figures of its results
row, or raises BenchError."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import time

from _common import BENCH_DIR, BIN_DIR, WORK_DIR, one_line, percentile
from _harness import TRACKER, BenchError, Daemon, fresh_dir, run_cmd
from _procfs import (
    cpu_ticks,
    descendants,
    fd_count,
    proc_exe,
    sched_ns,
    thread_count,
    total_cpu_ticks,
    vm_rss_kb,
)
from _tools import CHILD_BIN, SLEEP_BIN

CHILD_SRC = os.path.join(BENCH_DIR, "child.c")

N_PROGRAMS = 500
N_STATUS_PROGRAMS = 10


def build_child():
    os.makedirs(BIN_DIR, exist_ok=True)
    if not os.path.exists(CHILD_BIN) or os.path.getmtime(CHILD_BIN) < os.path.getmtime(CHILD_SRC):
        subprocess.run(["gcc", "-O2", "-Wall", "-o", CHILD_BIN, CHILD_SRC], check=True, timeout=120)
    src = shutil.which("sleep") or "/bin/sleep"
    src = "/bin/sleep" if os.path.exists("/bin/sleep") else src
    if not os.path.exists(SLEEP_BIN):
        shutil.copy2(src, SLEEP_BIN)


def wait_running(tool, d, n, daemon, timeout, state=None):
    deadline = time.monotonic() + timeout
    return tool.poll_wait(d, n, daemon, state, deadline)


def launch_and_wait(tool, d, cmd, n, timeout, name):
    """Start the daemon and poll until n programs are running.
    Returns (daemon, seconds_from_launch, poll_info)."""
    state = tool.poll_prepare(d, n, timeout)
    try:
        daemon = Daemon(name, cmd, d)
    except Exception:
        if state is not None:
            state.kill()
            state.wait(5)
            TRACKER.live_popen.discard(state.pid)
        raise
    if state is not None:
        tool.poll_go(state)
    try:
        t_done, t_send, polls = wait_running(tool, d, n, daemon, timeout, state)
    except BaseException:
        daemon.stop(grace=3.0)
        raise
    return (
        daemon,
        t_done - daemon.t_launch,
        {"poll_sent_s": round(t_send - daemon.t_launch, 4), "polls": polls},
    )


# ---------------------------------------------------------------------------
# 1. crash-to-restart latency
# ---------------------------------------------------------------------------


def parse_crash_file(path):
    events = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0] in ("S", "E"):
                    events.append((parts[0], int(parts[1])))
    except OSError:
        pass
    lat = []
    for (tag_a, t_a), (tag_b, t_b) in itertools.pairwise(events):
        if tag_a == "E" and tag_b == "S":
            lat.append((t_b - t_a) / 1e6)
    starts = sum(1 for t, _ in events if t == "S")
    return lat, starts


def bench_crash(tool, mode, budget, samples):
    d = fresh_dir(os.path.join(WORK_DIR, "crash-" + tool.slug()))
    out = os.path.join(d, "events.txt")
    cmd = tool.crash_config(d, out)
    timeout = budget.limit(10.0 + (samples + 2) * tool.crash_sample_s)
    daemon = Daemon(tool.name, cmd, d)
    try:
        deadline = time.monotonic() + timeout
        lat, starts = [], 0
        while time.monotonic() < deadline:
            daemon.check_alive()
            lat, starts = parse_crash_file(out)
            if len(lat) >= samples + 1:
                break
            time.sleep(0.05)
    finally:
        daemon.stop(grace=mode["stop_grace"])
    lat, starts = parse_crash_file(out)
    lat = lat[1 : samples + 1]  # drop the first restart (daemon warm-up)
    if len(lat) < max(3, samples // 4):
        raise BenchError(f"only {len(lat)} restarts observed in {timeout:.0f} s ({starts} starts)")
    res = {
        "n": len(lat),
        "p50_ms": percentile(lat, 50),
        "p90_ms": percentile(lat, 90),
        "p99_ms": percentile(lat, 99),
        "min_ms": min(lat),
        "max_ms": max(lat),
    }
    if len(lat) < samples:
        res["note"] = f"only {len(lat)} of {samples} samples before timeout"
    return res


# ---------------------------------------------------------------------------
# 2 + 3. 500 programs: startup, then idle cost
# ---------------------------------------------------------------------------


def helper_pids(daemon_pid):
    """Descendants of the daemon that are not the benchmark's programs."""
    return [p for p in descendants([daemon_pid]) if (proc_exe(p) or "") != SLEEP_BIN]


def daemon_ticks(pid):
    ticks = cpu_ticks(pid)
    if ticks is None:
        raise BenchError(f"daemon pid {pid} vanished")
    return ticks


def daemon_rss_kb(pid):
    rss = vm_rss_kb(pid)
    if rss is None:
        raise BenchError(f"no VmRSS for pid {pid}")
    return rss


def empty_baseline_fds(tool, mode, budget):
    """fds held by a daemon with no programs (or 1 if it needs one)."""
    for n in (0, 1):
        d = fresh_dir(os.path.join(WORK_DIR, f"fdbase-{tool.name}-{n}"))
        cmd = tool.sleep_config(d, n)
        try:
            daemon, _, _ = launch_and_wait(tool, d, cmd, n, budget.limit(30.0), tool.name)
        except BenchError as e:
            last_err = e
            continue
        try:
            time.sleep(1.0)
            return fd_count(daemon.pid), n
        finally:
            daemon.stop(grace=mode["stop_grace"])
    raise BenchError(f"baseline daemon: {last_err}")


def measure_idle(daemon, window):
    """RSS, CPU over ``window`` seconds, threads and fds of a daemon left alone, and the
    processes it runs beside its programs."""
    time.sleep(2.0)  # let startup transitions settle
    daemon.check_alive()
    fds_500 = fd_count(daemon.pid)
    clk = os.sysconf("SC_CLK_TCK")
    helpers = helper_pids(daemon.pid)
    h0 = total_cpu_ticks(helpers)
    t0, c0, s0 = time.monotonic(), daemon_ticks(daemon.pid), sched_ns(daemon.pid)
    end = t0 + window
    while time.monotonic() < end:
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
    t1, c1, s1 = time.monotonic(), daemon_ticks(daemon.pid), sched_ns(daemon.pid)
    h1 = total_cpu_ticks(helpers)
    daemon.check_alive()
    rss_kb = daemon_rss_kb(daemon.pid)
    threads = thread_count(daemon.pid)
    kids = len(descendants([daemon.pid]))
    helper_rss = 0
    for pid in helpers:
        with contextlib.suppress(OSError):
            helper_rss += vm_rss_kb(pid) or 0
    return {
        "rss_mb": rss_kb / 1024.0,
        "cpu_pct": 100.0 * (c1 - c0) / clk / (t1 - t0),
        "cpu_pct_schedstat": (
            100.0 * (s1 - s0) / 1e9 / (t1 - t0) if s0 is not None and s1 is not None else None
        ),
        "window_s": t1 - t0,
        "fds_500": fds_500,
        "threads": threads,
        "descendants": kids,
        "helpers": len(helpers),
        "helper_rss_mb": helper_rss / 1024.0,
        "helper_cpu_pct": 100.0 * (h1 - h0) / clk / (t1 - t0),
    }


def bench_startup_idle(tool, mode, budget, want_startup, want_idle):
    d = fresh_dir(os.path.join(WORK_DIR, "many-" + tool.slug()))
    cmd = tool.sleep_config(d, N_PROGRAMS)
    idle = None
    repeats = mode["startup_runs"] if want_startup else 1
    runs = []
    for i in range(repeats):
        if i:
            # a fresh daemon each time; a run that does not fit the
            # budget is skipped rather than failing the benchmark
            if budget.remaining() < 40.0 + (mode["idle_window"] if want_idle else 0):
                break
            d = fresh_dir(d)
            cmd = tool.sleep_config(d, N_PROGRAMS)
        daemon, secs, info = launch_and_wait(
            tool, d, cmd, N_PROGRAMS, budget.limit(60.0), tool.name
        )
        runs.append(secs)
        if i < repeats - 1:
            daemon.stop(grace=mode["stop_grace"])
            daemon = None
            continue
        break
    if daemon is None:  # the last planned repeat was skipped
        daemon, secs, info = launch_and_wait(
            tool, d, cmd, N_PROGRAMS, budget.limit(60.0), tool.name
        )
        runs.append(secs)
    try:
        startup = {
            "seconds": percentile(runs, 50),
            "min_s": min(runs),
            "max_s": max(runs),
            "n": len(runs),
            "runs_s": [round(x, 4) for x in runs],
        }
        startup.update(info)
        startup["last_call_s"] = secs - info["poll_sent_s"]
        if want_idle:
            budget.limit(mode["idle_window"] + 10.0)
            idle = measure_idle(daemon, mode["idle_window"])
    finally:
        daemon.stop(grace=mode["stop_grace"])
    if idle is not None:
        try:
            base, base_n = empty_baseline_fds(tool, mode, budget)
            idle["fds_base"] = base
            idle["fds_base_programs"] = base_n
            idle["fds_per_child"] = (idle["fds_500"] - base) / float(N_PROGRAMS - base_n)
        except BenchError as e:
            idle["fds_per_child_error"] = str(e)
    return startup, idle


# ---------------------------------------------------------------------------
# 4. status from a cold start
# ---------------------------------------------------------------------------


def bench_status(tool, mode, budget):
    d = fresh_dir(os.path.join(WORK_DIR, "status-" + tool.name))
    cmd = tool.sleep_config(d, N_STATUS_PROGRAMS)
    runs = mode["status_runs"]
    daemon, _, _ = launch_and_wait(tool, d, cmd, N_STATUS_PROGRAMS, budget.limit(30.0), tool.name)
    times = []
    try:
        cli = tool.status_cli(d)
        time.sleep(0.5)
        r = run_cmd(cli, 30)  # warm-up (page cache), not counted
        if r.returncode != 0:
            raise BenchError(f"status rc={r.returncode}: {one_line(r.stderr or r.stdout, 100)}")
        if "p001" not in r.stdout:
            raise BenchError(f"status output lacks program names: {one_line(r.stdout, 80)}")
        deadline = time.monotonic() + budget.limit(60.0)
        for _ in range(runs):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            r = run_cmd(cli, 30)
            t1 = time.perf_counter()
            if r.returncode != 0:
                raise BenchError(f"status rc={r.returncode}: {one_line(r.stderr or r.stdout, 100)}")
            times.append((t1 - t0) * 1000.0)
    finally:
        daemon.stop(grace=mode["stop_grace"])
    if not times:
        raise BenchError("no status runs completed")
    return {
        "n": len(times),
        "p50_ms": percentile(times, 50),
        "p90_ms": percentile(times, 90),
        "min_ms": min(times),
    }


def warm_up(tool):
    """One short daemon + status CLI run, untimed: fills the bytecode cache
    and the page cache so that the first measured run is not a cold one."""
    d = fresh_dir(os.path.join(WORK_DIR, "warm-" + tool.name))
    cmd = tool.sleep_config(d, 1)
    daemon, _, _ = launch_and_wait(tool, d, cmd, 1, 30.0, tool.name)
    try:
        run_cmd(tool.status_cli(d), 30)
    finally:
        daemon.stop(grace=1.0)
