#!/usr/bin/env python3
"""Benchmark harness: heartline against supervisord and circus.

Usage:
    python3 benchmarks/run.py [--quick] [--only NAME] [--tools LIST]

NAME is one of: crash, startup, idle, status, herding, rolling, singleton.
LIST is a comma-separated subset of: heartline, supervisord, circus.

herding is a simulation of placement under stale load reports (herding.py: no daemon, no
peers, no network); it writes its own section of RESULTS.md, and `--only herding` runs it
alone, without setting up the peers or the child. rolling (rolling.py: `heartline rolling` beside
ansible-playbook on lab hosts, needs root) also writes its own section and runs alone with
`--only rolling`; it runs under the project's .venv Python, as a process of its own. singleton
(singleton.py: failover of a singleton program on lab hosts, heartline beside an `etcdctl lock`
loop, needs root) is run the same way, alone with `--only singleton`.

Standard library only. The peers (supervisor, circus) are installed into
benchmarks/.venv-peers on first use; heartline is taken from the
repository's own virtualenv (<repo>/.venv). Scratch files go to
benchmarks/work/. Results are written to benchmarks/RESULTS.md (overwritten)
and, machine-readable, to benchmarks/work/results.json.

Every daemon is started in its own session; at the end of each run it is
stopped (SIGTERM, then SIGKILL to its process group) and every process that
it left behind is killed by pid. This script makes itself a child
sub-reaper so that orphaned children land with it and can be reaped.

This file runs the benchmarks and keeps the results; the parts live beside it:
_tools.py (the adapter interface and heartline's config and commands), _peers.py
(supervisord and circus), _scenarios.py (the four benchmarks), _harness.py (process
housekeeping), _procfs.py (/proc sampling), _render.py (the tables of RESULTS.md), herding.py
(the placement simulation and its section), rolling.py (rolling operations and their section),
singleton.py (singleton failover and its section).
"""

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys

from _common import BENCH_DIR, BIN_DIR, HEARTLINE_BIN, REPO_DIR, VENV_PY, WORK_DIR, one_line
from _harness import TRACKER, BenchError, Budget, become_subreaper, log
from _peers import (
    CIRCUS_DEFAULT_CHECK_DELAY,
    CIRCUS_FAST_CHECK_DELAY,
    Circus,
    Supervisord,
    ensure_peers,
)
from _procfs import all_pids, loadavg, machine_info, proc_exe
from _render import render
from _scenarios import bench_crash, bench_startup_idle, bench_status, build_child, warm_up
from _sections import RESULTS_MD, kept_sections
from _tools import CHILD_BIN, Heartline

RESULTS_JSON = os.path.join(WORK_DIR, "results.json")

TOOLS = ["heartline", "supervisord", "circus"]
BENCHES = ["crash", "startup", "idle", "status", "herding", "rolling", "singleton"]
#: The benchmarks that write their own section and need neither the peers nor the child.
OWN_SECTION = {"herding", "rolling", "singleton"}

MODES = {
    "quick": {
        "crash_samples": 20,
        "crash_default_circus_samples": 0,  # skipped: 5 s per sample
        "idle_window": 10.0,
        "startup_runs": 1,
        "status_runs": 10,
        "circus_fast_idle_variant": False,
        "budget": 115.0,
        "stop_grace": 8.0,
    },
    "full": {
        "crash_samples": 50,
        "crash_default_circus_samples": 6,
        "idle_window": 60.0,
        "startup_runs": 3,
        "status_runs": 30,
        "circus_fast_idle_variant": True,
        "budget": 570.0,
        "stop_grace": 15.0,
    },
}


class Run:
    """One run: the tools wanted, the results (the rows of earlier runs kept, so that --only
    and --tools keep the other figures) and the rows this run fills in."""

    def __init__(self, mode_name, tools_wanted, peer_err):
        self.mode_name = mode_name
        self.mode = MODES[mode_name]
        self.tools_wanted = tools_wanted
        self.peer_err = peer_err
        self.budget = Budget(self.mode["budget"])
        self.load_start = loadavg()
        self.hl, self.sup = Heartline(), Supervisord()
        self.circ_fast = Circus(CIRCUS_FAST_CHECK_DELAY)
        self.circ_default = Circus(CIRCUS_DEFAULT_CHECK_DELAY)
        self.versions = {}
        self.results = {}
        self.now = self.when = ""

    def unavailable(self, t):
        if t.name not in self.tools_wanted:
            return "skipped"
        r = t.available()
        if r is None and t is not self.hl:
            r = self.peer_err
        return r

    def read_versions(self):
        for t in (self.hl, self.sup, self.circ_fast):
            if t.name not in self.tools_wanted:
                continue
            reason = t.available() or (self.peer_err if t is not self.hl else None)
            if reason is None:
                try:
                    self.versions[t.name] = t.version()
                except Exception as e:
                    self.versions[t.name] = f"unknown ({one_line(e, 40)})"
            else:
                self.versions[t.name] = reason

    def warm_up(self):
        for t in (self.hl, self.sup, self.circ_default):
            if self.unavailable(t):
                continue
            try:
                log(f"warm-up {t.name}")
                warm_up(t)
            except Exception as e:
                log(f"   warm-up of {t.name} failed: {one_line(e)}")
            finally:
                TRACKER.sweep()

    def load_results(self):
        try:
            with open(RESULTS_JSON) as f:
                self.results = json.load(f)
        except (OSError, ValueError):
            self.results = {}
        self.results["_args"] = "".join(" " + a for a in sys.argv[1:])
        self.now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        self.when = f"{self.mode_name}, {self.now}"

    def section(self, bench):
        old = self.results.get(bench) or {}
        rows = dict(old.get("rows", {}))
        sec = {"mode": self.mode_name, "date": self.now, "rows": rows, "notes": []}
        self.results[bench] = sec
        return sec

    def row(self, value):
        value = dict(value)
        value["_when"] = self.when
        return value

    def error_row(self, text):
        return {"error": text, "_when": self.when}

    def guarded(self, sec, bench, key, t, fn):
        """Returns ("skip"|"fail"|"ok", value); failures fill the cell."""
        if t.name not in self.tools_wanted:
            return "skip", None
        why = self.unavailable(t)
        if why:
            sec["rows"][key] = self.error_row(why if why == "not installed" else "failed: " + why)
            return "fail", None
        log(f"{bench} / {key} ...")
        try:
            return "ok", fn()
        except BenchError as e:
            sec["rows"][key] = self.error_row("failed: " + one_line(e))
        except Exception as e:
            sec["rows"][key] = self.error_row(f"failed: {type(e).__name__}: {one_line(e)}")
        finally:
            TRACKER.sweep()
        log("   -> {}".format(sec["rows"][key]["error"]))
        return "fail", None

    def crash(self):
        """1. crash-to-restart"""
        mode = self.mode
        sec = self.section("crash")
        variants = [
            ("heartline", self.hl, mode["crash_samples"]),
            ("supervisord", self.sup, mode["crash_samples"]),
            ("circus", self.circ_fast, mode["crash_samples"]),
        ]
        if mode["crash_default_circus_samples"]:
            variants.append(
                ("circus_default", self.circ_default, mode["crash_default_circus_samples"])
            )
        else:
            sec["notes"].append(
                "circus with its default check_delay (5 s) is measured in "
                "full runs only (~5 s per sample); a quick run keeps the "
                "last full-run row, if any."
            )
        for key, t, n in variants:
            status, r = self.guarded(
                sec, "crash", key, t, lambda t=t, n=n: bench_crash(t, mode, self.budget, n)
            )
            if status == "ok":
                sec["rows"][key] = self.row(r)
                log(
                    f"   -> p50 {r['p50_ms']:.2f} ms p90 {r['p90_ms']:.2f} ms "
                    f"p99 {r['p99_ms']:.2f} ms (n={r['n']})"
                )

    def startup_idle(self, want_startup, want_idle):
        """2 + 3. startup and idle share one daemon per tool"""
        mode = self.mode
        s_sec = self.section("startup") if want_startup else {"rows": {}, "notes": []}
        i_sec = self.section("idle") if want_idle else {"rows": {}, "notes": []}
        variants = [
            ("heartline", self.hl),
            ("supervisord", self.sup),
            ("circus_default", self.circ_default),
        ]
        if mode["circus_fast_idle_variant"]:
            variants.append(("circus", self.circ_fast))
        else:
            i_sec["notes"].append(
                "circus with check_delay 0.1 s (the setting of benchmark 1) "
                "is measured here in full runs only; a quick run keeps the "
                "last full-run row, if any."
            )
        for key, t in variants:
            holder, bench = (s_sec, "startup") if want_startup else (i_sec, "idle")
            status, r = self.guarded(
                holder,
                bench,
                key,
                t,
                lambda t=t: bench_startup_idle(t, mode, self.budget, want_startup, want_idle),
            )
            if status == "fail" and want_startup and want_idle:
                i_sec["rows"][key] = s_sec["rows"][key]
            if status != "ok":
                continue
            startup, idle = r
            if want_startup:
                s_sec["rows"][key] = self.row(startup)
                log("   -> startup {:.3f} s".format(startup["seconds"]))
            if want_idle:
                i_sec["rows"][key] = self.idle_row(idle)
        if want_idle:
            i_sec["notes"].append("Idle window: {:.0f} s.".format(mode["idle_window"]))

    def idle_row(self, idle):
        if idle is None:
            return self.error_row("failed: no idle data")
        if idle.get("fds_per_child_error"):
            idle["note"] = "fds/child: " + idle["fds_per_child_error"]
        elif idle.get("fds_base_programs") == 1:
            idle["note"] = (
                "baseline daemon needed 1 program; fds/child = (fds at 500 - fds at 1) / 499."
            )
        log(
            "   -> RSS {:.1f} MB, CPU {:.3f} % (schedstat {}), fds/child {}".format(
                idle["rss_mb"],
                idle["cpu_pct"],
                "{:.3f} %".format(idle["cpu_pct_schedstat"])
                if idle.get("cpu_pct_schedstat") is not None
                else "n/a",
                "{:.2f}".format(idle["fds_per_child"]) if "fds_per_child" in idle else "n/a",
            )
        )
        return self.row(idle)

    def status(self):
        """4. status from a cold start"""
        sec = self.section("status")
        for key, t in (
            ("heartline", self.hl),
            ("supervisord", self.sup),
            ("circus_default", self.circ_default),
        ):
            status, r = self.guarded(
                sec, "status", key, t, lambda t=t: bench_status(t, self.mode, self.budget)
            )
            if status == "ok":
                sec["rows"][key] = self.row(r)
                log("   -> p50 {:.1f} ms p90 {:.1f} ms".format(r["p50_ms"], r["p90_ms"]))

    def finish(self):
        """The final safety net, and the notes that say how the run went."""
        left = TRACKER.sweep()
        leftovers = [p for p in all_pids() if (proc_exe(p) or "").startswith(BIN_DIR + "/")]
        self.results["_notes"] = [
            "Only loopback/unix-socket control channels are used "
            "(supervisord unix socket, circus ipc:// endpoints, heartline "
            "control socket in its run_dir).",
            "Every daemon ran in its own session and was stopped with SIGTERM "
            "(then SIGKILL to its group after a grace period); processes it "
            "left behind were killed by pid. Processes still running from "
            f"`benchmarks/work/bin/` after the run: {len(leftovers)}.",
            "heartline binary: `{}`{}.".format(
                os.path.relpath(HEARTLINE_BIN, REPO_DIR),
                "" if self.hl.available() is None else " (not installed at run time)",
            ),
            "Python tools run with PYTHONDONTWRITEBYTECODE unset and "
            "PYTHONPYCACHEPREFIX=benchmarks/work/pycache, after one untimed "
            "warm-up daemon + status run per tool, so every tool runs from "
            "compiled bytecode as after a normal install.",
            "Reference figures from earlier measurements: supervisord ~1008 ms "
            "restart latency, ~2.5 s for 500 programs, 34 MB RSS, 0.3 % idle "
            "CPU, 5 fds/child; circus 53 ms restart latency.",
            "Wall time of this run: {:.0f} s (budget {:.0f} s). Load average "
            "(1/5/15 min) at start: {}; at end: {}. The machine is not "
            "isolated: other work on it shows up as noise.".format(
                self.budget.elapsed(), self.mode["budget"], self.load_start, loadavg()
            ),
        ]
        if left:
            log(f"warning: processes left: {left[:20]}")

    def rows_for(self, bench):
        labels = {
            "heartline": self.hl.label,
            "supervisord": self.sup.label,
            "circus": self.circ_fast.label,
            "circus_default": self.circ_default.label,
        }
        if bench == "crash":
            order = ["heartline", "supervisord", "circus", "circus_default"]
        else:
            order = ["heartline", "supervisord", "circus_default", "circus"]
        return [(k, labels[k]) for k in order]

    def write(self):
        info = machine_info()
        self.results["_machine"] = info
        versions = dict(self.results.get("_versions") or {})
        versions.update(self.versions)
        self.results["_versions"] = versions
        with open(RESULTS_JSON, "w") as f:
            json.dump(self.results, f, indent=1, sort_keys=True)
        kept = kept_sections(RESULTS_MD)
        with open(RESULTS_MD, "w") as f:
            f.write(render(self.results, info, versions, self.rows_for))
            if kept:
                f.write("\n" + kept)
        log(f"wrote {os.path.relpath(RESULTS_MD, REPO_DIR)} ({self.budget.elapsed():.0f} s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="fewer samples, 10 s idle window (< 2 min)"
    )
    ap.add_argument("--only", choices=BENCHES, help="run one benchmark")
    ap.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help="comma-separated subset of {}".format(",".join(TOOLS)),
    )
    ap.add_argument(
        "--setup-only", action="store_true", help="install the peers and build the child, then exit"
    )
    args = ap.parse_args()
    tools_wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tools_wanted:
        if t not in TOOLS:
            ap.error(f"unknown tool {t!r}")
    benches = [args.only] if args.only else list(BENCHES)
    if set(benches) <= OWN_SECTION and not args.setup_only:
        return own_sections(benches, args.quick)

    os.makedirs(WORK_DIR, exist_ok=True)
    if not become_subreaper():
        log("warning: could not become a child sub-reaper")

    peer_err = None
    if "supervisord" in tools_wanted or "circus" in tools_wanted:
        peer_err = ensure_peers()
    build_child()
    if args.setup_only:
        log("peers: {}; child: {}".format(peer_err or "ok", os.path.relpath(CHILD_BIN, REPO_DIR)))
        return 1 if peer_err else 0

    run = Run("quick" if args.quick else "full", tools_wanted, peer_err)
    run.read_versions()
    run.warm_up()
    run.load_results()
    if "crash" in benches:
        run.crash()
    if "startup" in benches or "idle" in benches:
        run.startup_idle("startup" in benches, "idle" in benches)
    if "status" in benches:
        run.status()
    run.finish()
    run.write()
    return own_sections([b for b in benches if b in OWN_SECTION], args.quick)


def own_sections(benches, quick):
    """The benchmarks that write their own section of RESULTS.md; 1 if one failed."""
    rc = 0
    if "herding" in benches:
        rc |= herding(quick)
    if "rolling" in benches:
        rc |= lab_script("rolling.py", "heartline rolling and ansible-playbook", quick)
    if "singleton" in benches:
        rc |= lab_script("singleton.py", "singleton failover, heartline and an etcdctl loop", quick)
    return rc


def herding(quick):
    """The placement simulation: it writes its own section of RESULTS.md."""
    import herding as sim  # imports heartline: only when wanted

    log("herding (placement simulation) ...")
    try:
        res = sim.run(quick=quick)
    except Exception as e:
        log(f"   herding failed: {type(e).__name__}: {one_line(e)}")
        return 1
    hl = [round(row["heartline"]["p95_ratio"], 2) for row in res["rows"].values()]
    log(f"   -> heartline p95 / ideal p95 at ages {list(res['rows'])} s: {hl}")
    return 0


def lab_script(script, what, quick):
    """A benchmark on lab hosts (rolling.py: `heartline rolling` beside ansible-playbook;
    singleton.py: singleton failover beside an `etcdctl lock` loop), under the project's .venv,
    where heartline.testing is: it writes its own section of RESULTS.md."""
    py = VENV_PY if os.path.exists(VENV_PY) else sys.executable
    argv = [py, os.path.join(BENCH_DIR, script)] + (["--quick"] if quick else [])
    log(f"{script} ({what} on lab hosts) ...")
    proc = subprocess.Popen(argv)
    try:
        rc = proc.wait(900)
    except subprocess.TimeoutExpired:
        proc.terminate()  # its SIGTERM handler takes the lab down
        rc = proc.wait(120)
    if rc != 0:
        log(f"   {script} failed (exit {rc})")
        return 1
    return 0


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rc = main()
    finally:
        # whatever happened, leave no daemon or child of ours behind
        TRACKER.sweep()
    sys.exit(rc)
