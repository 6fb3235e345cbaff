"""Placement, as pure functions: which hosts can take a request, how good each is, which wins.

Inputs are plain values (each host's latest report and its age, the holds charged on it,
what the config says of it, the request); the caller supplies the random source. Nothing here
reads a clock or the network, so every rule below is unit-tested exhaustively.

The rules, in order:

1. **Filter.** A host is a candidate only if it is in the requested group, has every requested
   label, answers (its report is at most ``UNRESPONSIVE_AFTER`` intervals old), fits the
   declared capacity (``cpus``, ``mem`` in ``[cluster.hosts.NAME]``; without a declared
   ``cpus``, the CPUs its report counts), and has the requested
   memory free after what holds already claim (MemAvailable minus held memory).
2. **Charge holds** (Schedule::Load's holds). A hold is what a placement charged on the host,
   for as long as its command runs. A host's load now is its other load, as its last report
   saw it, plus every hold on it now: the report says how many CPUs holds claimed when it was
   sampled (``report_held``), so ``max(runnable - report_held, 0)`` is the load that is not
   placed commands, and the holds themselves are current to the moment (a hold ends with its
   command). So a stale report neither misses a command placed since nor counts one that
   ended since; only the host's other load is as old as the report.
3. **Score** (lower wins): the load per CPU the host would have with this job::

       score = (max(runnable - report_held, 0) + held_cpus + need_cpus) / cpus
               + 0.25 * memory_used_after / mem_total
               + 0.25 * psi_cpu_some_avg10 / 100

   The first term decides; the others break near-ties towards a host with memory and CPU
   time to spare. Exact ties go to a random one among them, never the first in a list (with
   stale data, "first wins" sends every chooser to the same host).
4. **Stale reports.** If the best host's report is older than ``STALE_AFTER`` intervals
   (it missed a beat: maybe because it is overloaded), the decision falls back to the power
   of two choices: two fitting hosts drawn at random, the better of the two.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from heartline.errors import NoHostFits

#: A report older than this many intervals: the host is unresponsive, never chosen.
UNRESPONSIVE_AFTER = 2.0
#: A best host whose report is older than this many intervals: power of two choices.
STALE_AFTER = 1.5
_TIE = 1e-9


@dataclass(frozen=True)
class Request:
    cpus: float = 1.0
    mem: int = 0
    labels: tuple[str, ...] = ()
    group: str | None = None


@dataclass(frozen=True)
class Hold:
    """A placement's charge on a host, for as long as its command runs."""

    id: str
    host: str
    cpus: float
    mem: int
    #: Seconds since the hold was written (as of the decision).
    age: float
    who: str = ""
    command: str = ""


@dataclass(frozen=True)
class HostView:
    """One host as a decision sees it."""

    name: str
    #: Seconds since the host's report was written; None when it never reported.
    age: float | None
    interval: float = 2.0
    cpus: int = 1
    runnable: int = 0
    mem_available: int = 0
    mem_total: int = 0
    psi_cpu: float | None = None
    labels: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    cap_cpus: float | None = None
    cap_mem: int | None = None
    holds: tuple[Hold, ...] = ()
    #: CPUs the holds on this host claimed when its report was sampled.
    report_held: float = 0.0
    #: The host's own load as its report gives it (None: runnable less report_held).
    report_other: float | None = None

    @property
    def state(self) -> str:
        if self.age is None:
            return "unknown"
        if self.age > UNRESPONSIVE_AFTER * self.interval:
            return "unresponsive"
        return "up"


def charged(view: HostView) -> tuple[float, int]:
    """(CPUs, bytes) the host's holds claim now."""
    # Memory stays claimed while the command runs: MemAvailable would show it only once the
    # command has touched its memory.
    return sum(h.cpus for h in view.holds), sum(h.mem for h in view.holds)


def other_load(view: HostView) -> float:
    """The host's load as its report saw it, less the placed commands it counted (the
    report's own figure when it gives one: the lower of its last two samples)."""
    if view.report_other is not None:
        return max(view.report_other, 0.0)
    return max(view.runnable - view.report_held, 0.0)


@dataclass(frozen=True)
class Candidate:
    host: str
    #: Empty when the host can take the request; else why not.
    excluded: str
    runnable: int
    held_cpus: float
    held_mem: int
    cpus: int
    age: float | None
    score: float | None
    #: How the decision used it: "chosen", "higher score", "not drawn", or the exclusion.
    verdict: str = ""


def assess(view: HostView, req: Request) -> Candidate:
    """Filter and score one host."""
    held_cpus, held_mem = charged(view)

    def out(why: str) -> Candidate:
        return Candidate(view.name, why, view.runnable, held_cpus, held_mem, view.cpus,
                         view.age, None, why)  # fmt: skip

    if req.group is not None and req.group not in view.groups:
        return out(f"not in group {req.group}")
    missing = [lab for lab in req.labels if lab not in view.labels]
    if missing:
        return out("no label " + ", ".join(missing))
    if view.state == "unknown":
        return out("never reported")
    if view.state == "unresponsive":
        return out(f"unresponsive (report {view.age:.1f}s old)")
    if view.cap_cpus is not None and req.cpus > view.cap_cpus:
        return out(f"declares {view.cap_cpus:g} cpus, {req.cpus:g} needed")
    if view.cap_cpus is None and req.cpus > max(view.cpus, 1):
        return out(f"has {view.cpus} cpus, {req.cpus:g} needed")
    if view.cap_mem is not None and req.mem > view.cap_mem:
        return out(f"declares {_size(view.cap_mem)}, {_size(req.mem)} needed")
    free = view.mem_available - held_mem
    if req.mem and req.mem > free:
        return out(f"{_size(max(free, 0))} free, {_size(req.mem)} needed")
    cpus = max(view.cpus, 1)
    value = (other_load(view) + held_cpus + req.cpus) / cpus
    if view.mem_total > 0:
        used_after = view.mem_total - (view.mem_available - held_mem - req.mem)
        value += 0.25 * min(max(used_after / view.mem_total, 0.0), 1.0)
    if view.psi_cpu is not None:
        value += 0.25 * min(max(view.psi_cpu, 0.0), 100.0) / 100
    return Candidate(view.name, "", view.runnable, held_cpus, held_mem, view.cpus, view.age,
                     round(value, 6))  # fmt: skip


@dataclass(frozen=True)
class Decision:
    host: str
    #: "lowest score", or "power of two (reports stale)".
    rule: str
    candidates: tuple[Candidate, ...] = field(default_factory=tuple)


class NoFit(NoHostFits):
    """No host can take the request; ``candidates`` say why each was left out."""

    def __init__(self, candidates: Sequence[Candidate]) -> None:
        self.candidates = tuple(candidates)
        super().__init__(f"no host can take it: {summary(candidates)}")


def summary(candidates: Iterable[Candidate]) -> str:
    parts = [f"{c.host}: {c.excluded}" for c in candidates if c.excluded]
    return "; ".join(parts) if parts else "no hosts"


def choose(views: Sequence[HostView], req: Request, rng: random.Random) -> Decision:
    """The host for ``req``; raises :class:`NoFit` when none can take it."""
    assessed = [assess(v, req) for v in views]
    fit = [c for c in assessed if not c.excluded]
    if not fit:
        raise NoFit(assessed)
    by_name = {v.name: v for v in views}
    best = min(c.score for c in fit if c.score is not None)
    tied = [c for c in fit if c.score is not None and c.score <= best + _TIE]
    winner = rng.choice(tied)
    rule = "lowest score"
    view = by_name[winner.host]
    if len(fit) > 1 and view.age is not None and view.age > STALE_AFTER * view.interval:
        a, b = rng.sample(fit, 2)
        winner = a if (a.score or 0.0) <= (b.score or 0.0) else b
        drawn = {a.host, b.host}
        rule = "power of two (reports stale)"
    else:
        drawn = {c.host for c in fit}

    def verdict(c: Candidate) -> Candidate:
        if c.excluded:
            return c
        if c.host == winner.host:
            v = "chosen"
        elif c.host not in drawn:
            v = "not drawn"
        elif c.score is not None and c.score <= (winner.score or 0.0) + _TIE:
            v = "tie, lost the draw"
        else:
            v = "higher score"
        return Candidate(**{**c.__dict__, "verdict": v})

    return Decision(winner.host, rule, tuple(verdict(c) for c in assessed))


def _size(n: int) -> str:
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n}B"
