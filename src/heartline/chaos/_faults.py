"""From a fault and its target to the concrete actions: which processes or hosts it hits (the
members, picked within the blast radius), and for each, what to run where to apply it and to
undo it.

A member is one thing the fault can hit: a program's main process on a host, a pidfile's
process on a host, a host. An action is what hits it: either instant (a signal; nothing to
undo) or a lease run by a dead-man agent in the member's place (see ``_agent``).
"""

from __future__ import annotations

import json
import math
import random
import secrets
import shlex
from dataclasses import dataclass

from heartline.chaos._places import LOCAL, Place, default_socket, lab_place, open_lab
from heartline.chaos._spec import BlastRadius, Experiment, FaultSpec, TargetSpec
from heartline.errors import BlastRadiusRefused, ChaosErrored

# A bounded hog: its own deadline ends it even if nobody ever kills it.
_HOG = r"""
import os, sys, time
kind, amount, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
if kind == "cpu":
    for _ in range(amount - 1):
        if os.fork() == 0:
            break
    while time.monotonic() < deadline:
        for _ in range(10000):
            pass
else:
    block = bytearray(amount)
    for i in range(0, amount, 4096):
        block[i] = 1
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
"""

# Fill the file system under a directory, refusing one bigger than the limit: the fault is for
# a size-limited mount made for the experiment, never for a machine's real disk by mistake.
_FILL = r"""
import os, sys
path, limit, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
st = os.statvfs(path)
size = st.f_blocks * st.f_frsize
if size > limit:
    sys.stderr.write("%s is on a file system of %d bytes, more than the fault's limit %d: fill "
                     "only a size-limited mount made for the experiment (or raise `limit`)\n"
                     % (path, size, limit))
    sys.exit(3)
target = os.path.join(path, name)
with open(target, "wb") as f:
    chunk = b"\0" * (1 << 20)
    try:
        while True:
            f.write(chunk)
            f.flush()
    except OSError:
        pass
    try:
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    except OSError:
        pass
"""


@dataclass(frozen=True)
class Member:
    """One thing a fault can hit."""

    place: Place
    #: What it is, for people: "web (pid 4242) on lab2", "lab3".
    label: str
    #: For processes: the pid as the place sees it; for hosts: the host's name.
    pid: int | None = None
    host: str = ""
    #: Members of a kind (a pidfile's job) are hit together when the fault picks "turn".
    kind: str = ""
    healthy: bool = True
    #: When its process started: wall-clock seconds for programs (the daemon's record),
    #: CLOCK_BOOTTIME seconds for pidfiles' processes (from /proc); None for hosts.
    since: float | None = None


@dataclass(frozen=True)
class Action:
    member: Member
    #: What was done, for people and the report.
    detail: str
    #: Instant: a signal, sent by the controller (nothing to undo).
    signal: int | None = None
    #: A lease: the agent runs these in the member's place.
    apply: list[str] | None = None
    input: str | None = None
    hold: list[str] | None = None
    undo: list[str] | None = None
    place: Place | None = None
    #: Undo after this long (a crash's restart), else after the fault's ``for``.
    undo_after: float | None = None
    #: A lab host (or "backend") the controller crashes itself: its moment is then known to
    #: the millisecond (a command would start Python first); the agent holds only the boot.
    crash: str | None = None


def _place_for(exp: Experiment, t: TargetSpec, host: str, *, net_only: bool = False) -> Place:
    if t.via == "lab":
        assert exp.lab_dir is not None
        return lab_place(exp.lab_dir, host, net_only=net_only)
    if t.via == "ssh":
        return Place(kind="ssh", host=host)
    return Place()


def members(exp: Experiment, t: TargetSpec, *, socket: str | None = None) -> list[Member]:
    """Every member of target ``t`` as things stand now."""
    hosts = list(t.hosts) or [LOCAL]
    out: list[Member] = []
    if t.kind == "program":
        for h in hosts:
            place = _place_for(exp, t, h)
            for status in _program_status(place, t.programs, t.socket or socket):
                pid = status.get("pid")
                where = "" if place.kind == LOCAL else f" on {place.label}"
                out.append(
                    Member(
                        place=place,
                        label=f"{status['name']} (pid {pid}){where}",
                        pid=pid if isinstance(pid, int) else None,
                        kind=str(status["name"]),
                        healthy=status.get("state") == "running",
                        since=_number(status.get("started")),
                    )
                )
    elif t.kind == "pidfiles":
        assert t.dir is not None
        for h in hosts:
            place = _place_for(exp, t, h)
            for job, pid, alive, since in _pidfiles(place, t.dir):
                where = "" if place.kind == LOCAL else f" on {place.label}"
                out.append(
                    Member(
                        place=place,
                        label=f"{job} (pid {pid}){where}",
                        pid=pid,
                        kind=job,
                        healthy=alive,
                        since=since,
                    )
                )
    elif t.kind == "hosts":
        up = _lab_up(exp) if t.via == "lab" else None
        for h in hosts:
            out.append(
                Member(
                    place=_place_for(exp, t, h),
                    label=h if h != LOCAL else "this machine",
                    host=h,
                    kind=h,
                    healthy=up is None or h in up,
                )
            )
    elif t.kind == "backend":
        out.append(Member(place=Place(), label="the lab's lock server", host="backend"))
    else:
        out.append(Member(place=Place(), label=f"the proxy on {t.listen}", host=str(t.listen)))
    return out


def _lab_up(exp: Experiment) -> set[str]:
    assert exp.lab_dir is not None
    status = open_lab(exp.lab_dir).status()
    return {h["name"] for h in status["hosts"] if h["state"] == "up"}


def _program_status(
    place: Place, names: tuple[str, ...], socket: str | None
) -> list[dict[str, object]]:
    from heartline.errors import HeartlineError

    if place.kind == LOCAL:
        from heartline.api import Client

        try:
            with Client(socket or default_socket()) as c:
                return [dict(p) for p in c.status(names)["programs"]]
        except HeartlineError as e:
            raise ChaosErrored(f"programs {', '.join(names)}: {e}") from None
    cmd = place.heartline()
    if socket:
        cmd += ["-s", socket]
    done = place.run([*cmd, "status", "--json", *names])
    if done.returncode != 0:
        raise ChaosErrored(f"{place.label}: heartline status: {done.stderr.strip()[:200]}")
    try:
        return list(json.loads(done.stdout)["programs"])
    except (ValueError, KeyError, TypeError):
        raise ChaosErrored(f"{place.label}: heartline status --json gave no programs") from None


_LIST_PIDFILES = r"""
import glob, json, os, sys
out = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*", "*.pid")) +
                   glob.glob(os.path.join(sys.argv[1], "*.pid"))):
    try:
        pid = int(open(path).read().split()[0])
    except (OSError, ValueError, IndexError):
        continue
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        alive = fields[0] != b"Z"
        since = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        alive, since = False, None
    parent = os.path.basename(os.path.dirname(path))
    job = parent if os.path.dirname(path) != sys.argv[1].rstrip("/") else \
        os.path.basename(path)[:-4]
    out.append([job, pid, alive, since])
print(json.dumps(out))
"""


def _pidfiles(place: Place, directory: str) -> list[tuple[str, int, bool, float | None]]:
    done = place.run([place.python, "-I", "-S", "-c", _LIST_PIDFILES, directory])
    if done.returncode != 0:
        raise ChaosErrored(
            f"{place.label}: cannot read pidfiles in {directory}: {done.stderr.strip()[:200]}"
        )
    try:
        return [(str(j), int(p), bool(a), _number(t)) for j, p, a, t in json.loads(done.stdout)]
    except (ValueError, TypeError):
        raise ChaosErrored(f"{place.label}: unreadable pidfile listing") from None


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def replaced(before: list[Member], now: list[Member]) -> dict[str, float | None]:
    """For each killed member (by label), when its successor started (its place's clock:
    see Member.since), or None while it has none: the same program or job on the same
    place, a different pid, running."""
    out: dict[str, float | None] = {}
    for m in before:
        found = [
            n.since
            for n in now
            if n.place == m.place and n.kind == m.kind and n.pid != m.pid and n.healthy
        ]
        out[m.label] = next((x for x in found if x is not None), None)
    return out


def pick(
    fault: FaultSpec,
    found: list[Member],
    round_no: int,
    blast: BlastRadius,
    rng: random.Random,
) -> list[Member]:
    """The members ``fault`` hits in round ``round_no`` (1-based), checked against the blast
    radius: at most ``max_targets``, at most ``max_percent`` of the group, and never the last
    healthy one unless allowed."""
    candidates = [m for m in found if m.pid is not None or m.host]
    if not candidates:
        raise ChaosErrored(
            f"fault {fault.name}: target {fault.target} has nothing to hit "
            "(no running process, no host)"
        )
    if fault.pick == "one":
        chosen = rng.sample(candidates, min(fault.count or 1, len(candidates)))
    elif fault.pick == "turn":
        kinds = sorted({m.kind for m in candidates})
        kind = kinds[(round_no - 1) % len(kinds)]
        chosen = [m for m in candidates if m.kind == kind]
    else:
        chosen = list(candidates)
        if fault.count is not None:
            chosen = rng.sample(chosen, min(fault.count, len(chosen)))
    check_blast(fault, chosen, found, blast)
    return chosen


def check_blast(
    fault: FaultSpec, chosen: list[Member], group: list[Member], blast: BlastRadius
) -> None:
    n, size = len(chosen), len(group)
    if blast.max_targets is not None and n > blast.max_targets:
        raise BlastRadiusRefused(
            f"fault {fault.name} would hit {n} targets at once, more than blast_radius."
            f'max_targets = {blast.max_targets} (pick = "one", set count, or raise the cap)'
        )
    allowed = math.floor(size * blast.max_percent / 100 + 1e-9)
    if n > allowed:
        raise BlastRadiusRefused(
            f"fault {fault.name} would hit {n} of {size} targets in {fault.target} "
            f"({100 * n / size:.0f}%), more than blast_radius.max_percent = "
            f"{blast.max_percent:g}% allows ({allowed})"
        )
    healthy = [m for m in group if m.healthy]
    if not blast.allow_last and healthy and all(m in chosen for m in healthy):
        raise BlastRadiusRefused(
            f"fault {fault.name} would hit the last healthy target of {fault.target} "
            f"({', '.join(m.label for m in healthy)}); set blast_radius.allow_last = true if "
            "that is the experiment"
        )


def actions(
    exp: Experiment,
    fault: FaultSpec,
    chosen: list[Member],
    run_id: str,
    allow_host_crash: tuple[str, ...] = (),
) -> list[Action]:
    """What to do to each chosen member."""
    t = exp.targets[fault.target]
    tag = f"hlchaos_{run_id.replace('-', '_')}_{secrets.token_hex(2)}"
    out: list[Action] = []
    for m in chosen:
        kind = fault.kind
        if kind in ("kill", "term", "signal"):
            import signal as signals

            name = signals.Signals(fault.signal).name
            out.append(Action(m, f"{name} {m.label}", signal=fault.signal))
        elif kind == "stop":
            assert m.pid is not None
            out.append(
                Action(
                    m,
                    f"SIGSTOP {m.label} for {fault.duration:g}s",
                    place=m.place,
                    apply=["kill", "-STOP", str(m.pid)],
                    undo=["kill", "-CONT", str(m.pid)],
                )
            )
        elif kind == "crash":
            out.append(_crash(exp, fault, t, m, allow_host_crash))
        elif kind == "backend-kill":
            assert exp.lab_dir is not None
            lab = ["lab", "--dir", exp.lab_dir]
            hl = Place().heartline()
            out.append(
                Action(
                    m,
                    "SIGKILL the lab's lock server",
                    place=Place(),
                    undo=[*hl, *_lab_cmd(lab, "boot", "backend")]
                    if fault.restart_after is not None
                    else None,
                    undo_after=fault.restart_after,
                    crash="backend",
                )
            )
        elif kind in ("partition", "drop-port"):
            out.append(_nft(exp, fault, t, m, tag))
        elif kind in ("cpu", "memory"):
            amount = fault.workers if kind == "cpu" else fault.size
            what = f"{amount} busy loops" if kind == "cpu" else f"{amount} bytes held"
            out.append(
                Action(
                    m,
                    f"{what} on {m.label} for {fault.duration:g}s",
                    place=m.place,
                    hold=[
                        m.place.python,
                        "-I",
                        "-S",
                        "-c",
                        _HOG,
                        kind,
                        str(amount),
                        str(fault.duration + exp.run.lease),
                    ],
                )
            )
        elif kind == "disk-full":
            assert fault.path is not None
            name = f".{tag}.fill"
            out.append(
                Action(
                    m,
                    f"fill {fault.path} on {m.label} for {fault.duration:g}s",
                    place=m.place,
                    apply=[
                        m.place.python,
                        "-I",
                        "-S",
                        "-c",
                        _FILL,
                        fault.path,
                        str(fault.limit),
                        name,
                    ],
                    undo=["rm", "-f", "--", f"{fault.path.rstrip('/')}/{name}"],
                )
            )
        else:
            out.append(Action(m, f"toxic {fault.toxic!r} on {m.label} for {fault.duration:g}s"))
    return out


def _lab_cmd(lab: list[str], verb: str, host: str) -> list[str]:
    return [lab[0], verb, host, *lab[1:]]


def _crash(
    exp: Experiment, fault: FaultSpec, t: TargetSpec, m: Member, allowed: tuple[str, ...]
) -> Action:
    if t.via == "lab":
        assert exp.lab_dir is not None
        hl = Place().heartline()
        lab = ["lab", "--dir", exp.lab_dir]
        again = f", booted again after {fault.restart_after:g}s" if fault.restart_after else ""
        return Action(
            m,
            f"crash {m.host} (its pid namespace killed){again}",
            place=Place(),
            undo=[*hl, *_lab_cmd(lab, "boot", m.host)] if fault.restart_after is not None else None,
            undo_after=fault.restart_after,
            crash=m.host,
        )
    if m.host not in allowed:
        raise BlastRadiusRefused(
            f"fault {fault.name} would crash the kernel of {m.label}: name it on the command "
            f"line to confirm (`--allow-host-crash {m.host}`)"
        )
    # The crash comes a second after ssh has returned, so the controller sees it applied.
    script = "nohup sh -c 'sleep 1; echo c > /proc/sysrq-trigger' >/dev/null 2>&1 &"
    return Action(
        m, f"crash the kernel of {m.label} (sysrq c)", place=m.place, apply=["sh", "-c", script]
    )


def _nft(exp: Experiment, fault: FaultSpec, t: TargetSpec, m: Member, tag: str) -> Action:
    assert exp.lab_dir is not None
    lab = open_lab(exp.lab_dir)
    if fault.kind == "partition":
        assert fault.other is not None
        if fault.other == "backend":
            others = [lab.state.gateway]
            what = "the lab's backend"
        else:
            names = [h for h in exp.targets[fault.other].hosts if h != m.host]
            others = [lab.address(h) for h in names]
            what = ", ".join(names)
        if not others:
            raise ChaosErrored(f"fault {fault.name}: nothing to cut {m.host} from")
        addrs = ", ".join(others)
        rules = (
            f"chain input {{ type filter hook input priority -10; policy accept; "
            f"ip saddr {{ {addrs} }} drop; }}\n"
            f"chain output {{ type filter hook output priority -10; policy accept; "
            f"ip daddr {{ {addrs} }} drop; }}"
        )
        detail = f"partition {m.host} from {what} for {fault.duration:g}s"
    else:
        rules = (
            f"chain input {{ type filter hook input priority -10; policy accept; "
            f"tcp dport {fault.port} drop; }}"
        )
        detail = f"drop TCP to port {fault.port} on {m.host} for {fault.duration:g}s"
    script = f"table inet {tag} {{\n{rules}\n}}\n"
    place = lab_place(exp.lab_dir, m.host, net_only=True)
    return Action(
        m,
        detail,
        place=place,
        apply=["nft", "-f", "-"],
        input=script,
        undo=["nft", "delete", "table", "inet", tag],
    )


def describe(action: Action) -> str:
    """The exact commands, for --dry-run."""
    if action.signal is not None:
        return f"{action.detail}: kill({action.member.pid}, {action.signal})"
    parts = []
    place = action.place.label if action.place else "this machine"
    if action.crash:
        what = "its lock server" if action.crash == "backend" else f"{action.crash}'s init"
        parts.append(f"crash: SIGKILL to {what} (from this process)")
    if action.apply:
        parts.append(f"apply on {place}: {shlex.join(action.apply)}")
    if action.hold:
        parts.append(f"hold on {place}: {shlex.join(action.hold[:4])} ...")
    if action.undo:
        parts.append(f"undo: {shlex.join(action.undo)}")
    return f"{action.detail}: " + "; ".join(parts) if parts else action.detail
