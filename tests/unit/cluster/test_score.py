"""Placement's pure rules: filters, held load, the score, ties and the stale fallback."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from heartline.cluster import Hold, HostView, NoFit, Request, assess, charged, choose
from heartline.cluster._score import other_load

G = 1 << 30


def host(name: str, **kw: object) -> HostView:
    base: dict[str, object] = {
        "age": 0.5, "interval": 2.0, "cpus": 4, "runnable": 0,
        "mem_available": 8 * G, "mem_total": 16 * G,
    }  # fmt: skip
    base.update(kw)
    return HostView(name=name, **base)  # type: ignore[arg-type]


def hold(age: float, cpus: float = 1.0, mem: int = 0) -> Hold:
    return Hold(id=f"h{age}", host="x", cpus=cpus, mem=mem, age=age)


def test_the_least_loaded_host_per_cpu_wins() -> None:
    """The score is the load per CPU after placing: (3+1)/4 and (1+1)/2 are both 1.0, and
    (2+1)/4 = 0.75 beats them."""
    views = [host("a", runnable=3), host("b", runnable=1, cpus=2), host("c", runnable=2)]
    d = choose(views, Request(), random.Random(1))
    assert d.host == "c"
    assert {c.host: c.verdict for c in d.candidates} == {
        "a": "higher score", "b": "higher score", "c": "chosen",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("view", "req", "why"),
    [
        (host("a"), Request(group="web"), "not in group web"),
        (host("a", groups=frozenset({"db"})), Request(group="web"), "not in group web"),
        (host("a", labels=frozenset({"ssd"})), Request(labels=("ssd", "gpu")), "no label gpu"),
        (host("a", age=None), Request(), "never reported"),
        (host("a", age=4.01), Request(), "unresponsive (report 4.0s old)"),
        (host("a", cap_cpus=2.0), Request(cpus=3), "declares 2 cpus, 3 needed"),
        (host("a", cap_mem=1 * G), Request(mem=2 * G), "declares 1.0G, 2.0G needed"),
        (host("a", mem_available=1 * G), Request(mem=2 * G), "1.0G free, 2.0G needed"),
        (
            host("a", mem_available=3 * G, holds=(hold(0.1, mem=2 * G),)),
            Request(mem=2 * G),
            "1.0G free, 2.0G needed",
        ),
    ],
)
def test_each_filter_excludes_with_its_reason(view: HostView, req: Request, why: str) -> None:
    """A host that cannot take the request is left out, and says why."""
    c = assess(view, req)
    assert c.excluded == why and c.score is None


def test_a_host_exactly_two_intervals_old_still_answers() -> None:
    """The unresponsive line is strictly beyond two intervals."""
    assert assess(host("a", age=4.0), Request()).excluded == ""
    assert host("a", age=4.0).state == "up"
    assert host("a", age=4.0001).state == "unresponsive"


def test_holds_count_while_they_live_and_the_report_s_own_holds_are_not_counted_twice() -> None:
    """Every hold claims its CPUs and memory for as long as it lives; the placed commands a
    report counted (``report_held``) come off its runnable count, so the load is the host's
    other load plus the holds now, however old the report."""
    assert charged(host("a", age=30.0, holds=(hold(0.2, cpus=2), hold(60.0))))[0] == 3.0
    assert charged(host("a", holds=(hold(30, mem=G),)))[1] == G
    # The report saw 5 runnable, 3 of them placed commands; one of those ended since (its
    # hold is gone) and one was placed after the report: 2 other + 3 holds now.
    v = host("a", runnable=5, report_held=3.0, holds=(hold(40.0), hold(35.0), hold(0.1)))
    assert other_load(v) == 2.0
    assert assess(v, Request()).score == pytest.approx((2 + 3 + 1) / 4 + 0.25 * 0.5)
    # A hold the report counted whose command had not started yet: never below zero.
    assert other_load(host("a", runnable=0, report_held=1.0)) == 0.0
    # The report's own figure (the lower of its last two samples) when it gives one.
    assert other_load(host("a", runnable=5, report_held=1.0, report_other=0.0)) == 0.0


def test_a_stale_report_misses_neither_new_commands_nor_ended_ones() -> None:
    """Host a's report (30 s old) saw 4 placed commands that have all ended; b's saw none,
    but 3 were placed there since. a is the idle one now, and is chosen."""
    a = host("a", age=3.0, interval=2.0, runnable=4, report_held=4.0)
    b = host("b", age=0.5, interval=2.0, runnable=0, holds=(hold(0.3), hold(0.2), hold(0.1)))
    assert choose([a, b], Request(), random.Random(0)).host == "a"


def test_holds_spread_a_burst_that_stale_reports_would_herd() -> None:
    """Twelve decisions in a row on the same (stale) reports: each hold is seen by the next
    decision, so three equal hosts get four each."""
    views = [host(n, age=1.0) for n in "abc"]
    rng = random.Random(7)
    placed: Counter[str] = Counter()
    for i in range(12):
        d = choose(views, Request(), rng)
        placed[d.host] += 1
        views = [
            HostView(**{**v.__dict__, "holds": (*v.holds, hold(0.01 * i))}) if v.name == d.host
            else v
            for v in views
        ]  # fmt: skip
    assert sorted(placed.values()) == [4, 4, 4]


def test_without_holds_the_same_burst_herds() -> None:
    """The same burst with holds ignored (argmin on the report alone) sends every job to one
    host: the behaviour the holds exist to prevent."""
    views = [host("a", runnable=0), host("b", runnable=1), host("c", runnable=1)]
    assert {choose(views, Request(), random.Random(i)).host for i in range(12)} == {"a"}


def test_exact_ties_are_broken_at_random_not_by_order() -> None:
    """Equal hosts: the winner is drawn, so independent choosers do not all pick the first."""
    views = [host(n) for n in "abcd"]
    winners = Counter(choose(views, Request(), random.Random(i)).host for i in range(400))
    assert set(winners) == set("abcd") and min(winners.values()) > 60
    d = choose(views, Request(), random.Random(3))
    assert sorted(c.verdict for c in d.candidates) == ["chosen", *["tie, lost the draw"] * 3]


def test_a_stale_best_host_falls_back_to_the_power_of_two_choices() -> None:
    """When the best host's report is older than 1.5 intervals, two fitting hosts are drawn
    at random and the better one wins: the stale idle-looking host no longer takes them all."""
    views = [host("a", age=3.5, runnable=0), *(host(n, runnable=2) for n in "bcd")]
    winners = Counter()
    for i in range(300):
        d = choose(views, Request(), random.Random(i))
        winners[d.host] += 1
        assert d.rule == "power of two (reports stale)"
    # a wins whenever it is drawn (half the draws), the rest spread over b, c, d
    assert 100 < winners["a"] < 200 and all(winners[n] > 20 for n in "bcd")
    fresh = [host("a", age=2.9, runnable=0), *(host(n, runnable=2) for n in "bcd")]
    assert choose(fresh, Request(), random.Random(0)).rule == "lowest score"


def test_no_fit_lists_every_reason() -> None:
    """When nothing fits, the error says why for each host."""
    with pytest.raises(NoFit, match=r"a: unresponsive .*; b: never reported"):
        choose([host("a", age=10.0), host("b", age=None)], Request(), random.Random(0))


def test_memory_and_cpu_pressure_break_near_ties() -> None:
    """Same load per CPU: the host with more free memory, then less CPU pressure, wins."""
    a = host("a", mem_available=2 * G)
    b = host("b", mem_available=12 * G)
    assert choose([a, b], Request(), random.Random(0)).host == "b"
    c = host("c", psi_cpu=40.0)
    d = host("d", psi_cpu=1.0)
    assert choose([c, d], Request(), random.Random(0)).host == "d"


def test_a_job_needing_more_cpus_than_a_host_has_is_not_placed_there() -> None:
    """Without declared cpus, the CPUs the host's report counts bound what fits."""
    small, big = host("small", cpus=2), host("big", cpus=8)
    assert assess(small, Request(cpus=4)).excluded == "has 2 cpus, 4 needed"
    assert choose([small, big], Request(cpus=4), random.Random(0)).host == "big"
    assert not assess(small, Request(cpus=2)).excluded
    declared = host("declared", cpus=2, cap_cpus=16)
    assert not assess(declared, Request(cpus=4)).excluded  # the declared figure wins


@pytest.mark.parametrize(
    ("runnable", "held", "cpus", "need"),
    [
        c
        for c in itertools.product([0, 1, 5], [0.0, 1.0, 2.5], [1, 2, 8], [0.5, 1.0, 4.0])
        if c[3] <= c[2]
    ],
)
def test_the_score_is_the_documented_formula(
    runnable: int, held: float, cpus: int, need: float
) -> None:
    """score = (runnable + held + need) / cpus + 0.25 * memory used after (no PSI here)."""
    v = host("a", runnable=runnable, cpus=cpus, holds=(hold(0.1, cpus=held),) if held else ())
    c = assess(v, Request(cpus=need))
    expected = (runnable + held + need) / cpus + 0.25 * (8 * G) / (16 * G)
    assert c.score == pytest.approx(expected, abs=1e-6)
