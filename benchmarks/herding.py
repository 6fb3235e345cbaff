#!/usr/bin/env python3
"""Placement under stale load reports: a simulation of herding, heartline's rule beside others.

    python3 benchmarks/herding.py [--quick] [--no-write] [--seeds N]
    python3 benchmarks/run.py --only herding [--quick]

No network, no processes: a discrete-event simulation with fixed seeds, bounded by its job
count. 1000 CPU-bound jobs arrive in bursts from several independent choosers and are placed on
16 hosts, each of which shares its CPUs among the jobs it runs (processor sharing: r jobs on c
CPUs run at min(1, c/r) each). The choosers see every host's runnable count as the host
reported it, some seconds ago; each rule below places the same jobs, and a job's slowdown is
its completion time (from its arrival) divided by its length on an idle CPU.

Placers:

- ideal: knows every host's current runnable count, takes the lowest (r + 1) / cpus;
- heartline: ``heartline.cluster._score.choose`` itself, with the holds the backend keeps (every
  placement writes a hold that later choosers see at once; it ends when its job ends);
- argmin: the lowest (r + 1) / cpus on the reports alone, no holds, no stale fallback; ties
  broken at random, and (a second column) to the first host in the list;
- random: a host drawn uniformly;
- GNU parallel: each chooser is one long-running ``parallel -S h00,...,h15`` with the default
  ``--jobs 100%`` (as many slots on each host as it has cores); see ParallelPlacer.

The report model (Reports) and the reasons for it are in the section this script writes to
benchmarks/RESULTS.md (between section markers, which run.py keeps); figures also go to
benchmarks/work/herding.json.
"""

from __future__ import annotations

import argparse
import bisect
import concurrent.futures
import datetime
import heapq
import json
import math
import os
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO_DIR, WORK_DIR, percentile
from _sections import RESULTS_MD, write_section

try:
    from heartline.cluster import _score
except ImportError:  # run by a Python without heartline installed: take it from the checkout
    sys.path.insert(0, os.path.join(REPO_DIR, "src"))
    from heartline.cluster import _score
from heartline.cluster._score import Decision, Hold, HostView, Request, choose

RESULTS_JSON = os.path.join(WORK_DIR, "herding.json")

#: CPUs of the 16 hosts: 8 with 4, 4 with 8, 4 with 2 (72 in all).
HOST_CPUS = (4,) * 8 + (8,) * 4 + (2,) * 4
N_JOBS = 1000
CHOOSERS = 4
#: Offered load: the mean demand of the arrivals over the cluster's CPUs.
LOAD = 0.8
MEAN_LENGTH = 30.0  # seconds, exponential, clipped to [MIN_LENGTH, MAX_LENGTH]
MIN_LENGTH, MAX_LENGTH = 1.0, 300.0
BURST = (1, 8)  # jobs per burst, uniform
AGES = (0.0, 2.0, 10.0, 30.0)
SEEDS = {"quick": 4, "full": 12}
PLACERS = ("ideal", "heartline", "argmin", "argmin-first", "random", "parallel")
#: Placers that read no reports: one run per seed serves every age.
AGELESS = ("ideal", "random", "parallel")
#: Variants that say where heartline's gap to the ideal comes from.
DIAGNOSTICS = ("heartline-lagged", "heartline-lagged-nofallback", "argmin-lagged")
LABELS = {
    "ideal": "ideal",
    "heartline": "heartline (holds)",
    "argmin": "argmin, random ties",
    "argmin-first": "argmin, first wins",
    "random": "random",
    "parallel": "GNU parallel",
    "heartline-lagged": "heartline, reports lagging",
    "heartline-lagged-nofallback": "heartline, reports lagging, no stale fallback",
    "argmin-lagged": "argmin, reports lagging",
}
GOAL = 1.05  # heartline's p95 slowdown over the ideal placer's, at every age
_DONE = 1e-7  # CPU-seconds of work left that count as finished (jobs last >= 1 s)


def interval_for(age: float) -> float:
    """The report interval modelled for a report lag of ``age`` seconds."""
    return max(2.0, age)


# --------------------------------------------------------------------------------------------
# the workload


@dataclass(frozen=True)
class Job:
    id: int
    chooser: int
    arrival: float
    length: float


@dataclass(frozen=True)
class Workload:
    cpus: tuple[int, ...]
    jobs: tuple[Job, ...]  # by arrival; the jobs of one burst share it, in order

    def offered_load(self) -> float:
        span = self.jobs[-1].arrival - self.jobs[0].arrival
        return sum(j.length for j in self.jobs) / (sum(self.cpus) * span) if span > 0 else math.inf


def make_workload(
    seed: int,
    *,
    cpus: Sequence[int] = HOST_CPUS,
    n_jobs: int = N_JOBS,
    choosers: int = CHOOSERS,
    load: float = LOAD,
    mean_length: float = MEAN_LENGTH,
    burst: tuple[int, int] = BURST,
) -> Workload:
    """Bursts at Poisson times, each from a chooser drawn uniformly (so each chooser's bursts
    are an independent Poisson stream), with the rate that offers ``load`` of the CPUs."""
    rng = random.Random(f"workload-{seed}")
    mean_burst = (burst[0] + burst[1]) / 2
    burst_rate = load * sum(cpus) / mean_length / mean_burst
    jobs: list[Job] = []
    t = 0.0
    while len(jobs) < n_jobs:
        t += rng.expovariate(burst_rate)
        who = rng.randrange(choosers)
        for _ in range(min(rng.randint(*burst), n_jobs - len(jobs))):
            length = min(max(rng.expovariate(1 / mean_length), MIN_LENGTH), MAX_LENGTH)
            jobs.append(Job(len(jobs), who, t, length))
    return Workload(tuple(cpus), tuple(jobs))


# --------------------------------------------------------------------------------------------
# the hosts


class Cluster:
    """The hosts' true state: processor sharing on each, and each host's runnable count over
    time (what its reports sample).

    All the jobs of a host run at the same speed, so a host keeps one count of the CPU-seconds
    each of its jobs has received (``served``) and each job the count at which it is done."""

    def __init__(self, cpus: Sequence[int]) -> None:
        self.cpus = tuple(cpus)
        self.now = 0.0
        self.served = [0.0] * len(cpus)
        self._speed = [0.0] * len(cpus)
        #: Per host: job id -> the host's ``served`` at which the job is done.
        self.running: list[dict[int, float]] = [{} for _ in cpus]
        #: Per host: (done at, job id) of its jobs, a heap.
        self._due: list[list[tuple[float, int]]] = [[] for _ in cpus]
        #: Per host: the times its runnable count changed, and the count from then on.
        self._times: list[list[float]] = [[0.0] for _ in cpus]
        self._counts: list[list[int]] = [[0] for _ in cpus]

    def runnable(self, host: int) -> int:
        return len(self.running[host])

    def runnable_at(self, host: int, t: float) -> int:
        """The host's runnable count at time ``t`` (0 before the start)."""
        i = bisect.bisect_right(self._times[host], t) - 1
        return self._counts[host][i] if i >= 0 else 0

    def speed(self, host: int) -> float:
        """CPU-seconds per second each job on ``host`` gets now."""
        return self._speed[host]

    def left(self, host: int, jid: int) -> float:
        """CPU-seconds of work job ``jid`` still needs."""
        return self.running[host][jid] - self.served[host]

    def start(self, host: int, job: Job) -> None:
        done_at = self.served[host] + job.length
        self.running[host][job.id] = done_at
        heapq.heappush(self._due[host], (done_at, job.id))
        self._record(host)

    def next_completion(self) -> tuple[float, int, int] | None:
        """(time, host, job id) of the next job to finish if nothing else changes."""
        best: tuple[float, int, int] | None = None
        for host, due in enumerate(self._due):
            if due:
                done_at, jid = due[0]
                t = self.now + (done_at - self.served[host]) / self._speed[host]
                if best is None or t < best[0]:
                    best = (t, host, jid)
        return best

    def advance(self, t: float) -> None:
        dt = t - self.now
        if dt < 0:
            raise ValueError(f"time runs backwards: {t} < {self.now}")
        for host, speed in enumerate(self._speed):
            if speed:
                self.served[host] += speed * dt
        self.now = t

    def finish(self, host: int, jid: int) -> list[tuple[int, int]]:
        """End job ``jid`` on ``host`` and every other job whose work is done; returns
        (host, job id) of each."""
        self.served[host] = max(self.served[host], self.running[host][jid])
        ended = []
        for h, due in enumerate(self._due):
            gone = False
            while due and due[0][0] - self.served[h] <= _DONE:
                _, j = heapq.heappop(due)
                del self.running[h][j]
                ended.append((h, j))
                gone = True
            if gone:
                self._record(h)
        return ended

    def _record(self, host: int) -> None:
        """The host's runnable count changed: note it, and its jobs' new speed."""
        r = len(self.running[host])
        self._speed[host] = min(1.0, self.cpus[host] / r) if r else 0.0
        times, counts = self._times[host], self._counts[host]
        if times[-1] == self.now:
            counts[-1] = r
        else:
            times.append(self.now)
            counts.append(r)


class Reports:
    """What the choosers see of each host.

    Periodic (the model of the tables): every host samples its runnable count every
    ``interval`` seconds, each at its own phase, and a sample is seen ``lag`` seconds after it
    was taken. At time t a host's report is its state at its latest sample time s <= t - lag,
    and the report's age t - s is in [lag, lag + interval).

    Exact (``exact=True``, a check of the model): the report is the state at t - lag, its age
    exactly ``lag``."""

    def __init__(
        self,
        cluster: Cluster,
        lag: float,
        interval: float,
        rng: random.Random,
        *,
        exact: bool = False,
    ) -> None:
        self.cluster = cluster
        self.lag = lag
        self.interval = interval
        self.exact = exact
        self.phase = [rng.uniform(0.0, interval) for _ in cluster.cpus]

    def sampled(self, host: int, t: float) -> float:
        if self.exact:
            return t - self.lag
        k = math.floor((t - self.lag - self.phase[host]) / self.interval)
        return self.phase[host] + k * self.interval

    def read(self, host: int, t: float) -> tuple[int, float]:
        """(runnable, age) of the host's report as seen at ``t``."""
        s = self.sampled(host, t)
        return self.cluster.runnable_at(host, s), t - s


# --------------------------------------------------------------------------------------------
# the placers


class Placer(Protocol):
    def arrive(self, job: Job, cluster: Cluster) -> None:
        """Place ``job`` (now, or later from a queue) with cluster.start."""

    def finished(self, job: Job, host: int, cluster: Cluster) -> None:
        """``job`` ended on ``host``."""


def lowest(scores: Sequence[float], rng: random.Random | None) -> int:
    """The index of the lowest score: ties to a random one with ``rng``, else to the first."""
    best = min(scores)
    tied = [i for i, s in enumerate(scores) if s <= best + 1e-12]
    return rng.choice(tied) if rng is not None else tied[0]


class IdealPlacer:
    """The current runnable count of every host: the lowest (r + 1) / cpus, random ties."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def arrive(self, job: Job, cluster: Cluster) -> None:
        scores = [(cluster.runnable(h) + 1) / c for h, c in enumerate(cluster.cpus)]
        cluster.start(lowest(scores, self.rng), job)

    def finished(self, job: Job, host: int, cluster: Cluster) -> None:
        pass


class RandomPlacer:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def arrive(self, job: Job, cluster: Cluster) -> None:
        cluster.start(self.rng.randrange(len(cluster.cpus)), job)

    def finished(self, job: Job, host: int, cluster: Cluster) -> None:
        pass


class ArgminPlacer:
    """The lowest (r + 1) / cpus on the reports alone: Schedule::Load without holds."""

    def __init__(self, reports: Reports, rng: random.Random | None) -> None:
        self.reports = reports
        self.rng = rng

    def arrive(self, job: Job, cluster: Cluster) -> None:
        t = cluster.now
        scores = [(self.reports.read(h, t)[0] + 1) / c for h, c in enumerate(cluster.cpus)]
        cluster.start(lowest(scores, self.rng), job)

    def finished(self, job: Job, host: int, cluster: Cluster) -> None:
        pass


@dataclass
class HeartlineStats:
    decisions: int = 0
    #: Decisions by the rule that made them ("lowest score", "power of two (reports stale)").
    rules: Counter[str] = field(default_factory=Counter)
    #: Decisions in which holds charged CPUs on at least one host.
    with_holds: int = 0
    #: CPUs charged by holds, summed over the hosts and the decisions.
    held_cpus: float = 0.0

    def add(self, other: HeartlineStats) -> None:
        self.decisions += other.decisions
        self.rules.update(other.rules)
        self.with_holds += other.with_holds
        self.held_cpus += other.held_cpus

    def as_dict(self) -> dict[str, object]:
        n = self.decisions
        return {
            "decisions": n,
            "rules": dict(self.rules),
            "with_holds": self.with_holds,
            "held_cpus_mean": self.held_cpus / n if n else 0.0,
        }


class HeartlinePlacer:
    """heartline's own ``choose`` on the reports plus the holds: each placement writes a hold
    on its host that every later decision sees (the backend writes it under the placement lock
    before the next chooser reads); a hold ends when its job ends.

    ``fallback=False`` (a diagnostic) turns off the power-of-two fallback for stale reports
    by setting ``_score.STALE_AFTER`` to infinity around each call."""

    def __init__(
        self, reports: Reports, rngs: Sequence[random.Random], *, fallback: bool = True
    ) -> None:
        self.reports = reports
        self.rngs = rngs
        self.fallback = fallback
        self.names = [f"h{h:02d}" for h in range(len(reports.cluster.cpus))]
        self.index = {n: h for h, n in enumerate(self.names)}
        #: Per host: job id -> when its hold was written.
        self.holds: list[dict[int, float]] = [{} for _ in self.names]
        self.stats = HeartlineStats()
        self._views: tuple[float, list[HostView]] | None = None

    def views(self, t: float) -> list[HostView]:
        """Every host as a decision at ``t`` sees it (the jobs of one burst share ``t``: the
        views are built once and the chosen host's is rebuilt after each placement)."""
        if self._views is not None and self._views[0] == t:
            return self._views[1]
        views = [self.view(h, t) for h in range(len(self.names))]
        self._views = (t, views)
        return views

    def view(self, h: int, t: float) -> HostView:
        runnable, age = self.reports.read(h, t)
        name = self.names[h]
        holds = tuple(
            Hold(id=str(jid), host=name, cpus=1.0, mem=0, age=t - at)
            for jid, at in self.holds[h].items()
        )
        # The report also says how many CPUs holds claimed when it was sampled. Every job here
        # is placed by heartline and holds for its whole life, so those are exactly the jobs
        # the report counted.
        return HostView(
            name=name,
            age=age,
            interval=self.reports.interval,
            cpus=self.reports.cluster.cpus[h],
            runnable=runnable,
            holds=holds,
            report_held=float(runnable),
        )

    def decide(self, views: Sequence[HostView], rng: random.Random) -> Decision:
        if self.fallback:
            return choose(views, Request(cpus=1.0), rng)
        saved = _score.STALE_AFTER
        _score.STALE_AFTER = math.inf
        try:
            return choose(views, Request(cpus=1.0), rng)
        finally:
            _score.STALE_AFTER = saved

    def arrive(self, job: Job, cluster: Cluster) -> None:
        t = cluster.now
        decision = self.decide(self.views(t), self.rngs[job.chooser])
        held = sum(c.held_cpus for c in decision.candidates)
        st = self.stats
        st.decisions += 1
        st.rules[decision.rule] += 1
        st.held_cpus += held
        st.with_holds += held > 0
        host = self.index[decision.host]
        self.holds[host][job.id] = t
        cluster.start(host, job)
        if self._views is not None:
            self._views[1][host] = self.view(host, t)

    def finished(self, job: Job, host: int, cluster: Cluster) -> None:
        del self.holds[host][job.id]
        self._views = None


class ParallelPlacer:
    """GNU parallel, one long-running ``parallel -S h00,...,h15`` per chooser, fed job lines
    as they come, default ``--jobs 100%`` (one slot per core of each host, per client).

    Its ``start_more_jobs`` walks the sshlogins in the order of a Perl hash (random per
    process, fixed for its life) and starts at most one waiting job on each that has a free
    slot of this client's; it repeats while jobs wait and slots are free, on every new job and
    on every job's end. A client knows only its own jobs: it neither sees the others' nor
    the hosts' load (``--load`` is off by default). A job that finds all the client's slots
    full waits in the client's queue; the wait counts in its slowdown."""

    def __init__(self, cpus: Sequence[int], clients: int, rng: random.Random) -> None:
        self.cpus = tuple(cpus)
        hosts = list(range(len(cpus)))
        self.order = [rng.sample(hosts, len(hosts)) for _ in range(clients)]
        self.slots = [[0] * len(cpus) for _ in range(clients)]
        self.queue: list[deque[Job]] = [deque() for _ in range(clients)]

    def arrive(self, job: Job, cluster: Cluster) -> None:
        self.queue[job.chooser].append(job)
        self.start_more(job.chooser, cluster)

    def finished(self, job: Job, host: int, cluster: Cluster) -> None:
        self.slots[job.chooser][host] -= 1
        self.start_more(job.chooser, cluster)

    def start_more(self, client: int, cluster: Cluster) -> None:
        queue, slots = self.queue[client], self.slots[client]
        started = True
        while queue and started:
            started = False
            for host in self.order[client]:
                if not queue:
                    break
                if slots[host] < self.cpus[host]:
                    slots[host] += 1
                    cluster.start(host, queue.popleft())
                    started = True


# --------------------------------------------------------------------------------------------
# one run


def simulate(work: Workload, make: Callable[[Cluster], Placer]) -> tuple[list[float], Placer]:
    """Run every job of ``work`` through the placer ``make`` builds on a fresh cluster; the
    slowdown of each job, by job id, and the placer."""
    cluster = Cluster(work.cpus)
    placer = make(cluster)
    jobs = work.jobs
    slowdown = [math.nan] * len(jobs)
    i = 0
    while True:
        nxt = cluster.next_completion()
        if i < len(jobs) and (nxt is None or jobs[i].arrival <= nxt[0]):
            cluster.advance(jobs[i].arrival)
            placer.arrive(jobs[i], cluster)
            i += 1
            continue
        if nxt is None:
            break
        t, host, jid = nxt
        cluster.advance(t)
        for h, j in cluster.finish(host, jid):
            job = jobs[j]
            slowdown[j] = (t - job.arrival) / job.length
            placer.finished(job, h, cluster)
    left = sum(1 for s in slowdown if math.isnan(s))
    if left:
        raise RuntimeError(f"{left} of {len(jobs)} jobs never finished")
    return slowdown, placer


def placer_for(name: str, seed: int, age: float) -> Callable[[Cluster], Placer]:
    """How to build placer ``name`` on a cluster. Its random sources derive from (seed, name,
    age); the report phases from (seed, age) only, so every placer sees the same reports."""

    def rng(*tag: object) -> random.Random:
        return random.Random("/".join(map(str, (seed, name, age, *tag))))

    def reports(cluster: Cluster, exact: bool = True) -> Reports:
        phases = random.Random(f"phases/{seed}/{age}")
        return Reports(cluster, age, interval_for(age), phases, exact=exact)

    def heartline(cluster: Cluster, *, exact: bool = True, fallback: bool = True) -> Placer:
        rngs = [rng(k) for k in range(CHOOSERS)]
        return HeartlinePlacer(reports(cluster, exact), rngs, fallback=fallback)

    makers: dict[str, Callable[[Cluster], Placer]] = {
        "ideal": lambda c: IdealPlacer(rng()),
        "random": lambda c: RandomPlacer(rng()),
        "argmin": lambda c: ArgminPlacer(reports(c), rng()),
        "argmin-first": lambda c: ArgminPlacer(reports(c), None),
        "heartline": heartline,
        "parallel": lambda c: ParallelPlacer(c.cpus, CHOOSERS, rng()),
        "heartline-lagged": lambda c: heartline(c, exact=False),
        "heartline-lagged-nofallback": lambda c: heartline(c, exact=False, fallback=False),
        "argmin-lagged": lambda c: ArgminPlacer(reports(c, exact=False), rng()),
    }
    return makers[name]


def one_seed(
    seed: int,
) -> tuple[float, dict[tuple[str, float], list[float]], dict[float, HeartlineStats]]:
    """Every placer at every age on workload ``seed``: (offered load, slowdowns by (placer,
    age), heartline's stats by age)."""
    work = make_workload(seed)
    out: dict[tuple[str, float], list[float]] = {}
    stats: dict[float, HeartlineStats] = {}
    for name in PLACERS + DIAGNOSTICS:
        got: list[float] = []
        for age in AGES:
            if name not in AGELESS or not got:
                got, placer = simulate(work, placer_for(name, seed, age))
                if isinstance(placer, HeartlinePlacer) and name == "heartline":
                    stats[age] = placer.stats
            out[(name, age)] = got
    return work.offered_load(), out, stats


def measure(seeds: int, workers: int | None = None) -> dict[str, Any]:
    """Every placer at every age on ``seeds`` workloads, in ``workers`` processes (one per
    core by default); slowdowns pooled over the seeds, and the spread of the per-seed p95
    ratios. The figures do not depend on the number of processes."""
    t0 = time.perf_counter()
    workers = max(1, min(workers or os.cpu_count() or 1, seeds))
    if workers == 1:
        results = [one_seed(seed) for seed in range(seeds)]
    else:
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(one_seed, range(seeds)))
    pooled: dict[tuple[str, float], list[float]] = {}
    per_seed: dict[tuple[str, float], list[float]] = {}
    stats = {age: HeartlineStats() for age in AGES}
    for _load, slowdowns, seed_stats in results:
        for key, got in slowdowns.items():
            pooled.setdefault(key, []).extend(got)
            per_seed.setdefault(key, []).append(percentile(got, 95))
        for age, st in seed_stats.items():
            stats[age].add(st)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for age in AGES:
        ideal = summary(pooled[("ideal", age)])
        for name in PLACERS + DIAGNOSTICS:
            s = summary(pooled[(name, age)])
            ratios = [
                p / i for p, i in zip(per_seed[(name, age)], per_seed[("ideal", age)], strict=True)
            ]
            s["p95_ratio"] = s["p95"] / ideal["p95"]
            s["mean_ratio"] = s["mean"] / ideal["mean"]
            s["p95_ratio_min"], s["p95_ratio_max"] = min(ratios), max(ratios)
            rows.setdefault(f"{age:g}", {})[name] = s
    return {
        "seeds": seeds,
        "workers": workers,
        "jobs": N_JOBS,
        "host_cpus": list(HOST_CPUS),
        "offered_load": [round(r[0], 3) for r in results],
        "rows": rows,
        "heartline": {f"{age:g}": st.as_dict() for age, st in stats.items()},
        "wall_s": time.perf_counter() - t0,
    }


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": sum(values) / len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
    }


# --------------------------------------------------------------------------------------------
# RESULTS.md


def _r(x: float) -> str:
    return f"{x:.2f}"


def render(res: dict[str, Any], mode: str, when: str) -> str:
    rows = res["rows"]
    ages = list(rows)
    cpus = Counter(res["host_cpus"])
    mix = ", ".join(f"{n} with {c}" for c, n in sorted(cpus.items(), key=lambda kv: -kv[1]))
    loads = res["offered_load"]
    main = [p for p in PLACERS if p != "ideal"]
    L = [
        "<!-- section: herding -->",
        "## 8. Placement: herding under stale reports",
        "",
        f"Generated by `python3 benchmarks/herding.py{' --quick' if mode == 'quick' else ''}` "
        f"on {when} ({mode}: {res['seeds']} seeds, wall time {res['wall_s']:.1f} s). A "
        "simulation: no network, no processes, fixed seeds. heartline's column calls "
        "`heartline.cluster._score.choose` itself.",
        "",
        f"Model: {len(res['host_cpus'])} hosts with {sum(res['host_cpus'])} CPUs ({mix}); "
        f"{res['jobs']} CPU-bound jobs per seed, 1 CPU each, lengths exponential with mean "
        f"{MEAN_LENGTH:g} s (clipped to {MIN_LENGTH:g}-{MAX_LENGTH:g} s); bursts of "
        f"{BURST[0]}-{BURST[1]} jobs at Poisson times from {CHOOSERS} independent choosers, at "
        f"the rate that offers {LOAD:.0%} of the CPUs (measured {min(loads):.2f}-"
        f"{max(loads):.2f}). A burst's jobs are placed one after another at the same instant. "
        "Each host shares its CPUs among its jobs (processor sharing: r jobs on c CPUs run at "
        "min(1, c/r) each); slowdown = (end - arrival) / length. Every placer gets the same "
        "jobs; the slowdowns of all seeds are pooled.",
        "",
        "Reports: every decision sees every host's report exactly A seconds old (the host's "
        "state at t - A; the placed jobs' holds it counted come with it). The hosts report "
        "every I = max(2 s, A), so A is a report at its oldest, just before the next one: "
        "hosts stay up for heartline (age <= 2 I) and, having missed no beat, never stale "
        "(age <= 1.5 I). 8c also runs a harsher model, reports lagging: each seen A seconds "
        "after it was taken, so its age is uniform in [A, A + I) and, when A >= 2 s, about "
        "half of them look stale, which makes heartline fall back to the power of two choices.",
        "",
        "Placers: **ideal** knows every host's current runnable count and takes the lowest "
        "(r + 1) / cpus (random ties). **heartline**: `choose` on the reports with holds; every "
        "placement adds a hold on its host that all later choosers see at once (as the backend "
        "writes it under the placement lock), removed when the job ends; a host's load is its "
        "report's runnable count less the holds that report counted, plus the holds now. "
        "**argmin**: the lowest "
        "(r + 1) / cpus on the reports alone (Schedule::Load without holds or fallback), ties "
        "to a random host or to the first in the list. **random**: a host drawn uniformly. "
        "**GNU parallel**: each chooser is one long-running `parallel -S h00,...,h15` with the "
        "default `--jobs 100%` (a slot per core of each host, counted per client): its "
        "`start_more_jobs` walks the hosts in its own fixed order (a Perl hash's, random per "
        "process) and starts at most one waiting job per host with a free slot, again while "
        "jobs wait and slots are free; it knows nothing of the other clients' jobs or of the "
        "hosts' load (`--load` is off by default); a job waits in its client's queue while all "
        "of that client's slots are full, and the wait counts in its slowdown.",
        "",
        "### 8a. p95 slowdown relative to the ideal placer",
        "",
        "Each cell: p95 slowdown of the placer / p95 slowdown of the ideal placer, on the same "
        "jobs (1.00 = as good as ideal). Ideal, random and GNU parallel read no reports: their "
        "figures are the same at every age.",
        "",
        "| report age A | ideal p95 | "
        + " | ".join(LABELS[p] for p in main)
        + " | heartline per seed | goal: heartline <= 1.05 |",
        "|---" * (len(main) + 4) + "|",
    ]
    for age in ages:
        r = rows[age]
        hl = r["heartline"]
        L.append(
            f"| {age} s | {_r(r['ideal']['p95'])} | "
            + " | ".join(_r(r[p]["p95_ratio"]) for p in main)
            + f" | {_r(hl['p95_ratio_min'])}-{_r(hl['p95_ratio_max'])} | "
            + ("met" if hl["p95_ratio"] <= GOAL else "missed")
            + " |"
        )
    L += [
        "",
        "### 8b. Mean slowdown relative to the ideal placer",
        "",
        "| report age A | ideal mean | " + " | ".join(LABELS[p] for p in main) + " |",
        "|---" * (len(main) + 2) + "|",
    ]
    for age in ages:
        r = rows[age]
        L.append(
            f"| {age} s | {_r(r['ideal']['mean'])} | "
            + " | ".join(_r(r[p]["mean_ratio"]) for p in main)
            + " |"
        )
    L += [
        "",
        "### 8c. heartline's rules at work, and where its gap to the ideal comes from",
        "",
        "Decisions by rule, and how many had holds charging CPUs (on any host), over all "
        "seeds. The last three columns are p95 ratios to the ideal placer with reports "
        "lagging (seen A seconds after they were taken, so A to A + I old): heartline, "
        "heartline with the power-of-two fallback turned off (`_score.STALE_AFTER` set to "
        "infinity), and argmin.",
        "",
        "| report age A | interval I | power of two | lowest score | with holds charged | "
        "held CPUs per decision (mean) | heartline, lagging | heartline, lagging, no "
        "fallback | argmin, lagging |",
        "|---" * 9 + "|",
    ]
    for age in ages:
        st = res["heartline"][age]
        n = st["decisions"] or 1
        po2 = st["rules"].get("power of two (reports stale)", 0)
        low = st["rules"].get("lowest score", 0)
        r = rows[age]
        L.append(
            f"| {age} s | {interval_for(float(age)):g} s | {po2 / n:.0%} | {low / n:.0%} | "
            f"{st['with_holds'] / n:.0%} | {st['held_cpus_mean']:.1f} | "
            f"{_r(r['heartline-lagged']['p95_ratio'])} | "
            f"{_r(r['heartline-lagged-nofallback']['p95_ratio'])} | "
            f"{_r(r['argmin-lagged']['p95_ratio'])} |"
        )
    L += ["", *notes(res), "", "<!-- /section -->"]
    return "\n".join(L) + "\n"


def notes(res: dict[str, Any]) -> list[str]:
    """The reading of the figures: which goals are met, and why not where not."""
    rows = res["rows"]
    missed = [a for a in rows if rows[a]["heartline"]["p95_ratio"] > GOAL]
    out = [
        "- Reference figures measured elsewhere, at 30 s old reports: argmin 2.72, random "
        "2.46, heartline with holds 1.03 (p95 relative to ideal), under a model not given "
        "here; this model's figures differ (its host mix, for one, punishes random, which "
        "sends as much to a 2-CPU host as to an 8-CPU one).",
        "- Held CPUs per decision is the CPUs of the jobs running (all placed here): a hold "
        "lives as long as its job. Since every job in this model is placed through heartline, "
        "its holds know the placed load to the moment and only load from elsewhere (none "
        "here) would be as old as the reports: this is the best case for holds, and the "
        "reason heartline matches the ideal placer here.",
    ]
    lagged = [a for a in rows if rows[a]["heartline-lagged"]["p95_ratio"] > GOAL]
    if lagged:
        out.append(
            "- With reports lagging, heartline misses the goal at "
            + ", ".join(f"{a} s" for a in lagged)
            + ": there the best host's report is often older than 1.5 intervals although no "
            "host missed a beat, and the power-of-two fallback picks the better of two random "
            "hosts rather than the best (compare the column without the fallback). The "
            "fallback is kept: in a real cluster a report that old means its host missed a "
            "beat, and its last report may show it idler than it is."
        )
    if missed:
        out.append(
            f"- heartline misses the goal (p95 <= {GOAL:.2f} x ideal) at report age "
            + ", ".join(f"{a} s" for a in missed)
            + "."
        )
    else:
        out.append(f"- heartline meets the goal (p95 <= {GOAL:.2f} x ideal) at every age.")
    return out


def run(*, quick: bool = False, seeds: int | None = None, write: bool = True) -> dict[str, Any]:
    """Measure, save the figures to benchmarks/work/herding.json and write section 8 of
    RESULTS.md (or print it)."""
    mode = "quick" if quick else "full"
    res = measure(seeds or SEEDS[mode])
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    os.makedirs(WORK_DIR, exist_ok=True)
    with open(RESULTS_JSON, "w") as f:
        json.dump(res, f, indent=1)
    text = render(res, mode, when)
    if write:
        write_section(text, name="herding")
        print(
            f"[herding] wrote {os.path.relpath(RESULTS_MD, REPO_DIR)} ({res['wall_s']:.1f} s)",
            file=sys.stderr,
        )
    else:
        print(text)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help=f"{SEEDS['quick']} seeds, not {SEEDS['full']}"
    )
    ap.add_argument("--seeds", type=int, help="how many seeds (workloads) to pool")
    ap.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md")
    args = ap.parse_args()
    if args.seeds is not None and not 1 <= args.seeds <= 100:
        ap.error(f"--seeds {args.seeds}: give 1 to 100")
    run(quick=args.quick, seeds=args.seeds, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
