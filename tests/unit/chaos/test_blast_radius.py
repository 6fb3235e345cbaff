"""Picking what a fault hits, within the blast radius."""

from __future__ import annotations

import random

import pytest

from heartline.chaos import BlastRadius, FaultSpec
from heartline.chaos._faults import Member, pick
from heartline.chaos._places import Place
from heartline.errors import BlastRadiusRefused


def group(n: int, *, kinds: int = 1, down: int = 0) -> list[Member]:
    return [Member(place=Place(), label=f"m{i}", pid=1000 + i, kind=f"job{i % kinds}",
                   healthy=i >= down) for i in range(n)]  # fmt: skip


def fault(pick_: str = "all", count: int | None = None) -> FaultSpec:
    return FaultSpec(name="f", kind="kill", target="t", pick=pick_, count=count)


def test_all_within_the_caps() -> None:
    """pick = all hits every member when the caps allow it (and hitting the last healthy one
    is allowed)."""
    got = pick(fault(), group(3, down=1), 1, BlastRadius(allow_last=True), random.Random(1))
    assert [m.label for m in got] == ["m0", "m1", "m2"]


def test_max_targets_refuses_too_many() -> None:
    """More members than max_targets at once is refused (exit 24), naming the cap."""
    with pytest.raises(BlastRadiusRefused, match="max_targets = 2") as e:
        pick(fault(), group(3), 1, BlastRadius(max_targets=2, allow_last=True),
             random.Random(1))  # fmt: skip
    assert e.value.exit_code == 24


def test_max_percent_of_the_group() -> None:
    """50 % of 4 is 2: two pass, three are refused."""
    blast = BlastRadius(max_percent=50)
    assert len(pick(fault("one", 2), group(4), 1, blast, random.Random(1))) == 2
    with pytest.raises(BlastRadiusRefused, match="max_percent"):
        pick(fault("one", 3), group(4), 1, blast, random.Random(1))


def test_never_the_last_healthy_one() -> None:
    """Hitting every healthy member is refused unless allow_last; hitting a sick one is fine."""
    two_down = group(3, down=2)  # only m2 healthy
    with pytest.raises(BlastRadiusRefused, match="last healthy"):
        pick(fault(), two_down, 1, BlastRadius(), random.Random(1))
    got = pick(fault(), two_down, 1, BlastRadius(allow_last=True), random.Random(1))
    assert len(got) == 3
    single = group(1)
    with pytest.raises(BlastRadiusRefused):
        pick(fault(), single, 1, BlastRadius(), random.Random(1))


def test_one_is_random_and_repeatable_with_a_seed() -> None:
    """pick = one hits one member; the same seed picks the same one."""
    a = [pick(fault("one"), group(5), 1, BlastRadius(), random.Random(7))[0].label
         for _ in range(3)]  # fmt: skip
    assert len(set(a)) == 1
    seen = {pick(fault("one"), group(5), 1, BlastRadius(), random.Random(s))[0].label
            for s in range(30)}  # fmt: skip
    assert len(seen) > 1


def test_turn_takes_one_kind_per_round() -> None:
    """pick = turn hits the round's kind (a job) on every host, the seed's "in turn"."""
    g = group(6, kinds=3)
    blast = BlastRadius()
    rounds = [sorted(m.kind for m in pick(fault("turn"), g, r, blast, random.Random(0)))
              for r in (1, 2, 3, 4)]  # fmt: skip
    assert rounds == [["job0", "job0"], ["job1", "job1"], ["job2", "job2"], ["job0", "job0"]]
