"""Cluster benchmarks: what a host's load report costs, and placement on lab hosts.

    python3 benchmarks/cluster.py [--quick] [--no-write] [--only report|lab]

lab (needs root: network namespaces): three lab hosts (`heartline.testing.lab_hosts`), and
from this machine, beside GNU parallel's `--sshlogin` over the same ssh_config:
- the time from starting `heartline place -- CMD` to CMD running on the host (CMD prints the
  wall clock, which the lab's hosts share with this machine), with heartline's shared ssh
  connection open, and with a fresh connection each time (`ssh_options =
  ["ControlPath=none"]`), next to `parallel -S lab1,lab2,lab3` running the same CMD;
- 30 CPU-bound jobs at once from 6 clients (5 each): how many land on each host with
  heartline's holds, with `place --print` then ssh (the reports alone, no holds), and with 6
  `parallel -S` clients.

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
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import HEARTLINE_BIN, WORK_DIR
from _procfs import sched_ns
from _sections import publish, section_text

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


# --- lab ---------------------------------------------------------------------------------

SPIN_SECS = 4
SPIN = f"timeout {SPIN_SECS} sh -c 'while :; do :; done'; hostname"


def hl_argv(config: str, *args: str) -> list[str]:
    return [HEARTLINE_BIN, "-c", config, *args]


#: The environment of every command run here, without PYTHONDONTWRITEBYTECODE (which would
#: make every run compile heartline from source, as no installed copy does).
CLI_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def started_at(argv: list[str]) -> float:
    """Seconds from starting ``argv`` to the remote command printing its clock."""
    t0 = time.time()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=CLI_ENV,
                         check=True)  # fmt: skip
    return float(out.stdout.split()[-1]) - t0


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


def bench_latency(lab: Any, samples: int) -> dict[str, float]:
    # Beside the benchmark's other scratch files, not in the lab's directory (which its
    # teardown removes only when it holds nothing but the lab's own).
    os.makedirs(WORK_DIR, exist_ok=True)
    fresh_cfg = os.path.join(WORK_DIR, "lab-fresh.toml")
    with open(lab.config) as f:
        text = f.read()
    with open(fresh_cfg, "w") as f:
        f.write(text.replace("[cluster]\n", '[cluster]\nssh_options = ["ControlPath=none"]\n', 1))
    date = ["date", "+%s.%N"]
    # Warm-up: the byte code written, and a shared connection to every host opened.
    for _ in range(2 * len(lab.hosts)):
        started_at(hl_argv(lab.config, "place", "--", *date))
    shared = [started_at(hl_argv(lab.config, "place", "--", *date)) for _ in range(samples)]
    fresh = [started_at(hl_argv(fresh_cfg, "place", "--", *date)) for _ in range(samples)]
    par_argv = ["parallel", "--no-notice", "-N0", "--ssh", f"ssh -F {lab.ssh_config}",
                "-S", ",".join(lab.hosts), *date, ":::", "1"]  # fmt: skip
    par = [started_at(par_argv) for _ in range(samples)]
    # A bare ssh, the floor under both: one connection, one command.
    bare = [started_at(["ssh", "-F", lab.ssh_config, lab.hosts[0], *date]) for _ in range(samples)]
    return {
        "samples": samples,
        "heartline_shared_ms": round(1000 * median(shared), 1),
        "heartline_fresh_ms": round(1000 * median(fresh), 1),
        "parallel_ms": round(1000 * median(par), 1),
        "ssh_ms": round(1000 * median(bare), 1),
    }


def run_clients(scripts: list[str], env: dict[str, str]) -> list[str]:
    procs = [subprocess.Popen(["sh", "-c", s], stdout=subprocess.PIPE, text=True, env=env,
                              start_new_session=True) for s in scripts]  # fmt: skip
    out = []
    try:
        for p in procs:
            out.append(p.communicate(timeout=300)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
    return out


def spread(outputs: list[str], hosts: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(hosts, 0)
    for o in outputs:
        for word in o.split():
            if word in counts:
                counts[word] += 1
    return counts


def bench_spread(lab: Any) -> dict[str, dict[str, int]]:
    env = {**CLI_ENV, "PATH": f"{os.path.dirname(HEARTLINE_BIN)}:{os.environ['PATH']}"}
    cfg, ssh = lab.config, lab.ssh_config
    place = f'heartline -c {cfg} place -- sh -c "{SPIN}" &'
    # The reports alone: each client asks where, then runs it there (no hold is charged).
    bare = f'h=$(heartline -c {cfg} place --print) && ssh -F {ssh} "$h" "{SPIN}" &'
    par = (f"parallel --no-notice -N0 --ssh 'ssh -F {ssh}' -S {','.join(lab.hosts)} "
           f"-j 100% \"{SPIN}\" ::: 1 2 3 4 5")  # fmt: skip
    out: dict[str, dict[str, int]] = {}
    for name, script in (("heartline", " ".join([place] * 5) + " wait"),
                         ("reports alone", " ".join([bare] * 5) + " wait"),
                         ("GNU parallel", par)):  # fmt: skip
        out[name] = spread(run_clients([script] * 6, env), lab.hosts)
        time.sleep(2 * 2.0 + 1)  # the hosts' reports show them idle again
    return out


def bench_lab(samples: int) -> dict[str, object]:
    from heartline.testing import lab_hosts, lab_unavailable

    why = lab_unavailable()
    if why is not None:
        return {"skipped": why}
    with lab_hosts(3) as lab:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            res = subprocess.run(hl_argv(lab.config, "hosts", "--json"), capture_output=True,
                                 text=True, check=False)  # fmt: skip
            if res.returncode == 0 and all(
                h["state"] == "up" for h in json.loads(res.stdout)["hosts"]
            ):
                break
            time.sleep(0.2)
        return {"latency": bench_latency(lab, samples), "spread": bench_spread(lab)}


def render(results: dict[str, object]) -> str:
    lines = ["## 9. Cluster: what a load report costs", ""]
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
    lab = results.get("lab")
    if isinstance(lab, dict) and "skipped" in lab:
        lines += ["## 10. Placement on lab hosts", "", f"Not run: {lab['skipped']}.", ""]
    elif isinstance(lab, dict):
        lat, spr = lab["latency"], lab["spread"]
        verdict = "met" if lat["heartline_shared_ms"] <= 150 else "missed"
        lines += [
            "## 10. Placement on lab hosts",
            "",
            "Three lab hosts on this machine (network, pid, mount and UTS namespaces, each with "
            "its own sshd and daemon reporting every 2 s to the lab's lockd), driven from the "
            "machine with the lab's ssh_config.",
            "",
            f"### 10a. From the command line to the command running there (median of "
            f"{lat['samples']})",
            "",
            "The command prints the wall clock as it starts; the lab's hosts share this "
            "machine's clock. heartline's figure covers its whole run: Python's start, reading "
            "the reports, the decision under the placement lock, the hold, and ssh.",
            "",
            "| | ms |",
            "| --- | ---: |",
            f"| `heartline place`, its shared ssh connection open | "
            f"**{lat['heartline_shared_ms']:.0f}** |",
            f"| `heartline place`, a fresh ssh connection each time | "
            f"{lat['heartline_fresh_ms']:.0f} |",
            f"| `parallel -S lab1,lab2,lab3` (a fresh connection) | {lat['parallel_ms']:.0f} |",
            f"| a bare `ssh host CMD` (a fresh connection) | {lat['ssh_ms']:.0f} |",
            "",
            f"Goal <= 150 ms with a connection open: **{verdict}**.",
            "",
            f"### 10b. 30 CPU-bound jobs ({SPIN_SECS} s each) at once from 6 clients",
            "",
            "Jobs per host (the even spread is 10 each):",
            "",
            "| placer | " + " | ".join(spr["heartline"]) + " | most - least |",
            "| --- |" + " ---: |" * (len(spr["heartline"]) + 1),
        ]
        for name, counts in spr.items():
            c = list(counts.values())
            lines.append(f"| {name} | " + " | ".join(str(x) for x in c)
                         + f" | {max(c) - min(c)} |")  # fmt: skip
        lines += [
            "",
            "heartline: 30 `heartline place` at once, each decision under the placement lock "
            "seeing the holds of those before it. Reports alone: `place --print` (which "
            "charges no hold) then ssh, as Schedule::Load without holds would place them. GNU "
            "parallel: 6 clients, each `parallel -S lab1,lab2,lab3 -j 100%` with 5 jobs, none "
            "knowing of the others. The lab's hosts share this machine's CPUs (no cgroups "
            "here), so where a job lands does not change how fast it runs in the lab: the "
            "slowdown against an ideal placer is not measurable here, and the spread is what "
            "placement decides (with 2 CPUs of its own per host, the most loaded host sets "
            "the makespan: most / 10 of the ideal).",
            "",
        ]
    return section_text(SECTION, lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--only", choices=["report", "lab"], default=None)
    args = ap.parse_args()
    results: dict[str, object] = {
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    }
    old = {}
    with contextlib.suppress(OSError, ValueError), open(RESULTS_JSON) as f:
        old = json.load(f)
    if args.only in (None, "report"):
        window = 20.0 if args.quick else 60.0
        log(f"report overhead over {window:g} s")
        results["report"] = bench_report(window)
        log(json.dumps(results["report"]))
    elif "report" in old:
        results["report"] = old["report"]
    if args.only in (None, "lab"):
        log("placement on lab hosts")
        results["lab"] = bench_lab(5 if args.quick else 20)
        log(json.dumps(results["lab"]))
    elif "lab" in old:
        results["lab"] = old["lab"]
    publish(render(results), SECTION, results, RESULTS_JSON, print_only=args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
