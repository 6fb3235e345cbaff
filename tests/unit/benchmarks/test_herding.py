"""benchmarks/herding.py's simulator: processor sharing, the report model, the ideal and GNU
parallel placers, and heartline's rule (its real ``choose``) against argmin on old reports."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import herding
from _common import percentile
from herding import Cluster, IdealPlacer, Job, ParallelPlacer, Reports, Workload, simulate


def jobs(*spec: tuple[float, float], chooser: int = 0) -> tuple[Job, ...]:
    """Jobs from (arrival, length) pairs."""
    return tuple(Job(i, chooser, at, length) for i, (at, length) in enumerate(spec))


def ideal(cluster: Cluster) -> IdealPlacer:
    return IdealPlacer(random.Random(0))


def test_jobs_share_a_host_cpus_equally() -> None:
    # 4 jobs of 10 s on 2 CPUs: each runs at half speed, all end at 20 s.
    work = Workload((2,), jobs(*[(0.0, 10.0)] * 4))
    slowdown, _ = simulate(work, ideal)
    assert slowdown == pytest.approx([2.0] * 4)


def test_a_job_runs_at_full_speed_while_cpus_are_free() -> None:
    work = Workload((2,), jobs((0.0, 10.0), (0.0, 10.0)))
    assert simulate(work, ideal)[0] == pytest.approx([1.0, 1.0])


def test_speed_changes_when_jobs_come_and_go() -> None:
    # 1 CPU: A (4 s) alone for 1 s, then with B (1 s) at half speed until B ends at 3 s,
    # then alone again: A ends at 5 s.
    work = Workload((1,), jobs((0.0, 4.0), (1.0, 1.0)))
    slowdown, _ = simulate(work, ideal)
    assert slowdown == pytest.approx([5.0 / 4.0, 2.0 / 1.0])


def test_runnable_history_is_what_reports_sample() -> None:
    cluster = Cluster((1,))
    cluster.start(0, Job(0, 0, 0.0, 4.0))
    cluster.advance(1.0)
    cluster.start(0, Job(1, 0, 1.0, 1.0))
    t, host, jid = cluster.next_completion() or (0.0, 0, 0)
    assert t == pytest.approx(3.0)
    assert (host, jid) == (0, 1)
    cluster.advance(t)
    assert cluster.finish(host, jid) == [(0, 1)]
    assert [cluster.runnable_at(0, x) for x in (-1.0, 0.5, 2.0, 4.0)] == [0, 1, 2, 1]


def test_ideal_takes_the_lowest_load_per_cpu_now() -> None:
    cluster = Cluster((4, 1))
    placer = IdealPlacer(random.Random(0))
    for i in range(3):  # (r + 1) / cpus: 0.25, 0.5, 0.75 on host 0 beat 1.0 on host 1
        placer.arrive(Job(i, 0, 0.0, 10.0 + i), cluster)
    assert [cluster.runnable(h) for h in (0, 1)] == [3, 0]
    placer.arrive(Job(3, 0, 0.0, 1.0), cluster)  # a tie at 1.0: either host
    placer.arrive(Job(4, 0, 0.0, 1.0), cluster)  # then 5 / 4 or 2 / 1 loses to 1 / 1 or 4 / 4
    assert [cluster.runnable(h) for h in (0, 1)] == [4, 1]


def test_ideal_sees_jobs_that_just_ended() -> None:
    cluster = Cluster((1, 1))
    cluster.start(0, Job(0, 0, 0.0, 1.0))
    cluster.start(0, Job(1, 0, 0.0, 1.0))
    cluster.start(1, Job(2, 0, 0.0, 10.0))
    t, host, jid = cluster.next_completion() or (0.0, 0, 0)
    assert t == pytest.approx(2.0)
    cluster.advance(t)
    assert sorted(cluster.finish(host, jid)) == [(0, 0), (0, 1)]
    # Host 0 had two jobs a moment ago and has none now: the ideal placer goes there.
    IdealPlacer(random.Random(0)).arrive(Job(3, 0, t, 5.0), cluster)
    assert [cluster.runnable(h) for h in (0, 1)] == [1, 1]


def test_periodic_reports_are_between_lag_and_lag_plus_interval_old() -> None:
    cluster = Cluster((1,) * 4)
    reports = Reports(cluster, 10.0, 10.0, random.Random(1))
    ages = [reports.read(h, 100.0 + k * 0.37)[1] for h in range(4) for k in range(200)]
    assert all(10.0 <= a < 20.0 for a in ages)
    assert max(ages) > 18.0 and min(ages) < 12.0
    exact = Reports(cluster, 10.0, 10.0, random.Random(1), exact=True)
    assert exact.read(0, 100.0)[1] == pytest.approx(10.0)


def test_reports_show_the_state_at_their_sample_time() -> None:
    cluster = Cluster((1,))
    cluster.advance(5.0)
    cluster.start(0, Job(0, 0, 5.0, 100.0))
    cluster.advance(30.0)
    reports = Reports(cluster, 10.0, 10.0, random.Random(1), exact=True)
    assert reports.read(0, 14.0)[0] == 0  # sampled at 4 s
    assert reports.read(0, 16.0)[0] == 1  # sampled at 6 s


def test_gnu_parallel_fills_its_own_slots_and_queues_the_rest() -> None:
    # One client, two hosts with 2 cores: 4 slots; the 5th job waits for the first to end.
    work = Workload((2, 2), jobs((0.0, 10.0), (0.0, 10.0), (0.0, 10.0), (0.0, 1.0), (0.0, 1.0)))
    slowdown, _ = simulate(work, lambda c: ParallelPlacer(c.cpus, 1, random.Random(0)))
    # Each host runs two jobs at full speed: the 1 s job ends at 1 s, then the fifth runs.
    assert slowdown[:4] == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert slowdown[4] == pytest.approx(2.0)


def test_gnu_parallel_clients_do_not_see_each_other() -> None:
    cluster = Cluster((2, 2))
    placer = ParallelPlacer(cluster.cpus, 2, random.Random(0))
    for i in range(8):
        placer.arrive(Job(i, i % 2, 0.0, 10.0), cluster)
    # Each client filled its own 4 slots: 8 jobs on 4 CPUs, none waiting.
    assert [cluster.runnable(h) for h in (0, 1)] == [4, 4]
    assert not any(placer.queue)


def test_workload_is_fixed_by_its_seed() -> None:
    a, b = herding.make_workload(3), herding.make_workload(3)
    assert a == b
    assert len(a.jobs) == herding.N_JOBS
    assert a != herding.make_workload(4)
    assert 0.6 < a.offered_load() < 1.0
    bursts: dict[float, set[int]] = {}
    for j in a.jobs:
        bursts.setdefault(j.arrival, set()).add(j.chooser)
    assert all(len(who) == 1 for who in bursts.values())
    assert max(sum(1 for j in a.jobs if j.arrival == t) for t in bursts) > 1


def test_heartline_beats_argmin_on_30_s_old_reports() -> None:
    work = herding.make_workload(0)

    def p95(name: str, age: float) -> float:
        slowdown, placer = simulate(work, herding.placer_for(name, 0, age))
        if name == "heartline-lagged":
            rules = placer.stats.rules  # type: ignore[attr-defined]
            # Both of heartline's rules and its holds were at work.
            assert rules["lowest score"] > 0
            assert rules["power of two (reports stale)"] > 0
            assert placer.stats.with_holds > 0  # type: ignore[attr-defined]
        return percentile(slowdown, 95)

    best = p95("ideal", 0.0)
    hl, argmin = p95("heartline", 30.0), p95("argmin", 30.0)
    assert best <= hl < argmin / 2
    # With holds current to the moment, reports exactly 30 s old cost heartline nothing.
    assert hl <= best * 1.05
    # Lagging reports (older than 1.5 intervals): the stale fallback fires, still far ahead.
    assert p95("heartline-lagged", 30.0) < argmin / 2
