"""run.py's part of benchmarks/RESULTS.md: the head (machine, versions) and one table per
benchmark, each row a tool, with its goal and its ratio to heartline."""

from __future__ import annotations

from typing import NamedTuple

GOALS = {
    "crash_p50_ms": 3.0,
    "startup_s": 1.0,
    "rss_mb": 35.0,
    "cpu_pct": 0.3,
    "fds_per_child": 3.0,
    "status_p50_ms": 80.0,
}


class Table(NamedTuple):
    title: str
    bench: str  # the results section it shows
    cols: list[tuple[str, str, str, int]]  # heading, key, unit, digits
    goal_key: str  # in GOALS
    main: str  # the key the goal and the ratio to heartline apply to
    unit: str  # of the goal
    intro: list[str]
    show_notes: bool = True


SAME_RUN_AS_3A = "Same run as 3a."

TABLES = [
    Table(
        "1. Crash-to-restart latency",
        "crash",
        [
            ("p50", "p50_ms", " ms", 2),
            ("p90", "p90_ms", " ms", 2),
            ("p99", "p99_ms", " ms", 2),
            ("samples", "n", "", 0),
        ],
        "crash_p50_ms",
        "p50_ms",
        " ms",
        [
            "Child: `benchmarks/child.c` (writes `S <ns>`, sleeps 50 ms, "
            "writes `E <ns>`, `_exit(1)`). Sample = next `S` minus previous "
            "`E` (CLOCK_MONOTONIC); the first restart is dropped as warm-up. "
            "Goal applies to p50; the ratio compares p50.",
            "",
            'Settings: heartline `restart = "always"`, zero backoff, no '
            "crash-loop limit; supervisord `autorestart=true startsecs=0 "
            "startretries=1000000`; circus `respawn=true max_retry=-1 "
            "warmup_delay=0` with the `check_delay` shown in the row label "
            "(circus has no SIGCHLD handling: it reaps and respawns only "
            "every `check_delay`; its config-file default is 5 s).",
        ],
    ),
    Table(
        "2. 500 programs: startup",
        "startup",
        [
            ("all running after (median)", "seconds", " s", 3),
            ("min", "min_s", " s", 3),
            ("max", "max_s", " s", 3),
            ("runs", "n", "", 0),
            ("last status call took", "last_call_s", " s", 3),
        ],
        "startup_s",
        "seconds",
        " s",
        [
            "Time from launching the daemon in the foreground until the "
            "tool's own status API reports all 500 programs running "
            "(`/bin/sleep 3600` each, run from a copy at "
            "`benchmarks/work/bin/sleepbench` so leftovers can be found by "
            "executable path). The figure is the moment the first status "
            "reply showing 500/500 was received. Status is polled back to "
            "back with 20 ms pauses: heartline via `heartline -c CONFIG "
            "status --json` (so each poll includes one CLI start-up), "
            "supervisord via XML-RPC `supervisor.getAllProcessInfo` over its "
            "unix socket (state `RUNNING`), circus via its zmq `status` "
            "command from a client started before circusd (all watchers "
            "`active`). `last status call took` is the duration of that final "
            "status call (for the last run), included in the figure. "
            "Each tool runs with default program settings; "
            "note that supervisord's default `startsecs=1` holds a program "
            "in STARTING for 1 s before reporting RUNNING."
        ],
    ),
    Table(
        "3a. 500 programs idle: daemon RSS",
        "idle",
        [
            ("RSS", "rss_mb", " MB", 1),
            ("threads", "threads", "", 0),
            ("descendants", "descendants", "", 0),
            ("helper procs", "helpers", "", 0),
            ("helper RSS", "helper_rss_mb", " MB", 1),
        ],
        "rss_mb",
        "rss_mb",
        " MB",
        [
            "With the 500 programs of benchmark 2 running, after a 2 s "
            "settle: daemon RSS (`VmRSS`), CPU over an idle window "
            "(utime+stime from `/proc/PID/stat`), and file "
            "descriptors per child = (fds with 500 programs - fds of "
            "a daemon with no programs) / 500. Only the daemon "
            "process is counted (supervisord and circusd are each "
            "one process; circusd has zmq I/O threads, included). "
            "`descendants` counts all live processes below the "
            "daemon (500 expected); `helper procs` are those that are "
            "not the 500 programs (e.g. a process the daemon forked "
            "for itself). Their RSS and CPU are shown separately and "
            "are not part of the daemon figures or the goals."
        ],
    ),
    Table(
        "3b. 500 programs idle: daemon CPU",
        "idle",
        [
            ("CPU", "cpu_pct", " %", 3),
            ("CPU (schedstat)", "cpu_pct_schedstat", " %", 3),
            ("helper CPU", "helper_cpu_pct", " %", 3),
            ("window", "window_s", " s", 0),
        ],
        "cpu_pct",
        "cpu_pct",
        " %",
        [
            SAME_RUN_AS_3A + " `CPU (schedstat)` sums per-thread on-CPU ns from "
            "`/proc/PID/task/*/schedstat`, finer than clock ticks."
        ],
        show_notes=False,
    ),
    Table(
        "3c. 500 programs idle: file descriptors per child",
        "idle",
        [
            ("fds/child", "fds_per_child", "", 2),
            ("fds at 500", "fds_500", "", 0),
            ("fds empty", "fds_base", "", 0),
        ],
        "fds_per_child",
        "fds_per_child",
        "",
        [SAME_RUN_AS_3A],
        show_notes=False,
    ),
    Table(
        "4. Status from a cold start",
        "status",
        [("p50", "p50_ms", " ms", 1), ("p90", "p90_ms", " ms", 1), ("runs", "n", "", 0)],
        "status_p50_ms",
        "p50_ms",
        " ms",
        [
            "Wall time of one run of the tool's status CLI against a daemon "
            "running 10 programs (new process each run; one unmeasured "
            "warm-up run first): `heartline -c CONFIG status`, "
            "`supervisorctl -c CONFIG status`, `circusctl --endpoint "
            "ipc://... status`. The goal applies to p50."
        ],
    ),
]


def fmt(v, unit, digits=1):
    if v is None:
        return "n/a"
    return ("%." + str(digits) + "f%s") % (v, unit)


def ratio(v, ref):
    if v is None or ref is None:
        return "n/a"
    if ref == 0:
        return "n/a (heartline 0)"
    return "%.2fx" % (v / ref)


def goal_cell(v, goal, unit):
    if v is None:
        return f"<= {goal:g}{unit}"
    return "<= {:g}{} ({})".format(goal, unit, "met" if v <= goal else "missed")


def head(results, info, versions):
    return [
        "# heartline benchmark results",
        "",
        "Generated by `python3 benchmarks/run.py{}` on {}.".format(
            results.get("_args", ""), info["date"]
        ),
        "",
        "Machine: {} cores (nproc), {}, {}, kernel {}, {}; harness Python {}.".format(
            info["nproc"],
            info["cpu"] or "cpu unknown",
            info["memory"],
            info["kernel"],
            info["os"],
            info["python"],
        ),
        "",
        "Versions: "
        + "; ".join(
            v if v.lower().startswith(k) else f"{k} {v}" for k, v in sorted(versions.items())
        )
        + ".",
        "",
        "Ratios are `tool / heartline` for the same figure (lower is "
        "better everywhere). Percentiles use linear interpolation. "
        "Cells read `failed: ...` when a tool did not complete a "
        "benchmark.",
        "",
    ]


def table(t, b, rows):
    """The lines of table ``t`` over the results section ``b``; ``rows`` lists the row keys
    and labels in order."""
    L = ["## " + t.title, "", "Mode: {}, measured {}.".format(b["mode"], b["date"]), ""]
    L.extend(t.intro)
    L.append("")
    cells = b.get("rows", {})
    hl = cells.get("heartline")
    ref = hl.get(t.main) if isinstance(hl, dict) and "error" not in hl else None
    L.append("| tool | " + " | ".join(c[0] for c in t.cols) + " | goal | vs heartline |")
    L.append("|---" * (len(t.cols) + 3) + "|")
    when = "{}, {}".format(b["mode"], b["date"])
    row_notes = []
    for key, label in rows:
        r = cells.get(key)
        if not isinstance(r, dict):
            continue
        if r.get("_when") and r["_when"] != when:
            label += " (kept from an earlier run: {})".format(r["_when"])
        if r.get("note"):
            row_notes.append("{}: {}".format(label, r["note"]))
        if "error" in r:
            L.append(
                "| {} | {} |".format(
                    label, " | ".join([r["error"].replace("|", "\\|")] + [""] * (len(t.cols) + 1))
                )
            )
            continue
        vals = [fmt(r.get(k), unit, digits) for _, k, unit, digits in t.cols]
        L.append(
            "| {} | {} | {} | {} |".format(
                label,
                " | ".join(vals),
                goal_cell(r.get(t.main), GOALS[t.goal_key], t.unit),
                ratio(r.get(t.main), ref),
            )
        )
    notes = list(b.get("notes", [])) + row_notes if t.show_notes else []
    if notes:
        L.append("")
        for n in notes:
            L.append("- " + n)
    L.append("")
    return L


def render(results, info, versions, rows_for):
    """RESULTS.md up to the sections other scripts keep; ``rows_for(bench)`` gives the
    (key, label) of each row of a benchmark's table, in order."""
    L = head(results, info, versions)
    for t in TABLES:
        b = results.get(t.bench)
        if b:
            L.extend(table(t, b, rows_for(t.bench)))
    L.append("## Notes")
    L.append("")
    for n in results.get("_notes", []):
        L.append("- " + n)
    L.append("")
    return "\n".join(L)
