"""Turn API answers into text for people."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from heartline._util import format_duration

if TYPE_CHECKING:
    from heartline.api import ProgramStatus, StopResult


def to_json(doc: Any) -> str:
    return json.dumps(doc, indent=2) + "\n"


def _row(p: ProgramStatus) -> list[str]:
    exit_ = p.get("last_exit")
    exit_text = exit_["text"] if exit_ else ""
    info = p.get("detail") or exit_text
    one = p.get("singleton")
    if one is not None and p["state"] not in ("standby", "stopped"):
        # Where a singleton runs is its standbys' detail; the holder says it holds it.
        held = f"singleton here, token {one['token']}" if one.get("token") else "singleton"
        info = f"{held}; {info}" if info and info != exit_text else held
    uptime = p.get("uptime")
    return [
        p["name"],
        p["state"],
        _pids(p),
        format_duration(uptime) if uptime is not None else "-",
        str(p["restarts"]),
        exit_text or "-",
        info if info != exit_text else "",
    ]


def _pids(p: ProgramStatus) -> str:
    """The main pid, and how many of the program's processes run outside its group."""
    others = p.get("others") or []
    main = str(p["pid"]) if p.get("pid") else "-"
    return f"{main} +{len(others)}" if others else main


def status_table(programs: list[ProgramStatus]) -> str:
    if not programs:
        return "no programs configured\n"
    header = ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST EXIT", "INFO"]
    rows = [header] + [_row(p) for p in programs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return "-"  # pragma: no cover


_SORT_KEYS = {
    "cpu": "cpu_pct", "rss": "rss", "read": "read_bps", "write": "write_bps", "fds": "fds",
    "restarts": "restarts",
}  # fmt: skip


def top_table(doc: dict[str, Any], *, sort: str = "cpu", tree: bool = False) -> str:
    """The `heartline top` table: one row per program (and its processes with ``tree``)."""
    progs = list(doc["programs"])
    if sort == "name":
        progs.sort(key=lambda p: p["name"])
    else:
        key = _SORT_KEYS[sort]
        progs.sort(key=lambda p: (p.get(key) is None, -(p.get(key) or 0)))
    header = ["NAME", "STATE", "PID", "CPU%", "RSS", "READ/s", "WRITE/s", "FDS", "RESTARTS"]
    rows = [header]

    def cells(name: str, state: str, pid: Any, f: dict[str, Any], restarts: str) -> list[str]:
        cpu = f.get("cpu_pct")
        return [
            name, state, str(pid) if pid else "-", "-" if cpu is None else f"{cpu:.1f}",
            _size(f.get("rss")), _size(f.get("read_bps")), _size(f.get("write_bps")),
            "-" if f.get("fds") is None else str(f["fds"]), restarts,
        ]  # fmt: skip

    for p in progs:
        rows.append(cells(p["name"], p["state"], p["pid"], p, str(p["restarts"])))
        if tree:
            for depth, proc in _tree_order(p.get("processes", [])):
                rows.append(cells("  " * depth + proc["name"], "", proc["pid"], proc, ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    window = doc.get("window")
    title = f"heartline top: {len(progs)} programs" + (
        f", rates over {window:.1f}s" if window else ""
    )
    lines = [title, ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def _tree_order(procs: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Processes parent first, each child under its parent, indented one step deeper."""
    by_pid = {p["pid"]: p for p in procs}
    children: dict[int, list[dict[str, Any]]] = {}
    roots = []
    for p in sorted(procs, key=lambda p: p["pid"]):
        if p.get("ppid") in by_pid and p["ppid"] != p["pid"]:
            children.setdefault(p["ppid"], []).append(p)
        else:
            roots.append(p)
    out: list[tuple[int, dict[str, Any]]] = []
    stack = [(1, r) for r in reversed(roots)]
    seen: set[int] = set()
    while stack:
        depth, p = stack.pop()
        if p["pid"] in seen:
            continue
        seen.add(p["pid"])
        out.append((depth, p))
        stack.extend((depth + 1, c) for c in reversed(children.get(p["pid"], [])))
    return out


def control_lines(
    *, stopped: list[StopResult] | None = None, started: list[ProgramStatus] | None = None
) -> str:
    """What `stop` did to each program, or where `start`/`restart` left each."""
    out = []
    for r in stopped or []:
        how = "killed with SIGKILL after the grace period" if r["killed"] else "stopped"
        out.append(f"{r['name']}: {how}")
    for p in started or []:
        pid = f" (pid {p['pid']})" if p.get("pid") else ""
        detail = f": {p['detail']}" if p.get("detail") else ""
        out.append(f"{p['name']}: {p['state']}{pid}{detail}")
    return "\n".join(out) + "\n"


def systemd_unit_text(exe: str, config: str) -> str:
    return f"""\
# heartline.service: runs the heartline supervisor under systemd.
# Install: heartline systemd-unit -c {config} > /etc/systemd/system/heartline.service
#          systemctl daemon-reload && systemctl enable --now heartline
[Unit]
Description=heartline process supervisor
Documentation=https://pypi.org/project/heartline/
After=network.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exe} up -c {config}
ExecReload={exe} -c {config} reload
# heartline stops its programs itself on SIGTERM (stop signal to each group, SIGKILL after
# stop_timeout). KillMode=process leaves its programs alone when the daemon itself crashes,
# so the restarted daemon re-adopts them without restarting any; if it does not come back
# within a minute, heartline's fd holder stops them so none runs unsupervised.
KillMode=process
Restart=always
RestartSec=1s
WatchdogSec=30s
TimeoutStopSec=120s
# Three descriptors per program in the daemon and three in its fd holder.
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def locks_table(locks: Any) -> str:
    """`heartline locks`: one block per lock, holders then waiters in queue order."""
    import time as _time

    if not locks:
        return "no lock is held or waited for\n"
    now = _time.time()
    lines = []
    for info in locks:
        limit = f" (limit {info.limit})" if info.limit != 1 else ""
        lines.append(f"{info.name}{limit}: {len(info.holders)} holder(s), "
                     f"{len(info.waiters)} waiter(s)")  # fmt: skip
        for h in info.holders:
            label = f"  {h.label}" if h.label else ""
            away = "" if h.connected else "  (not reconnected since the server restarted)"
            lines.append(f"  held    {h.host}:{h.pid}  since {_ago(now - h.since)}  "
                         f"token {h.token}{label}{away}")  # fmt: skip
        for n, w in enumerate(info.waiters, 1):
            label = f"  {w.label}" if w.label else ""
            lines.append(f"  wait #{n} {w.host}:{w.pid}  for {_ago(now - w.since)}{label}")
    return "\n".join(lines) + "\n"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
