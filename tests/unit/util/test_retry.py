"""The retry object the lock backends share (``heartline._util.Retry``), in virtual time:
the clock is a number the test moves, and the sleep moves it."""

from __future__ import annotations

import pytest

from heartline._util import Retry


class VirtualTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def make(
    t: VirtualTime, *, first: float = 0.05, cap: float = 1.0, deadline: float | None = None
) -> Retry:
    return Retry(first=first, cap=cap, deadline=deadline, clock=t.clock, sleep=t.sleep)


def test_delays_double_up_to_the_cap() -> None:
    """Each pause sleeps twice the one before, never more than the cap; attempts count them."""
    t = VirtualTime()
    r = make(t)
    for _ in range(7):
        assert r.pause()
    assert t.slept == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert r.attempts == 7


def test_a_pause_never_sleeps_past_the_deadline_and_then_says_stop() -> None:
    """With a deadline, the last pause is cut to it, and the next one refuses without sleeping."""
    t = VirtualTime()
    r = make(t, first=0.5, cap=2.0, deadline=t.now + 1.2)
    assert r.pause() and r.pause()
    assert t.slept == [0.5, 0.7]
    assert r.expired() and r.left() == pytest.approx(0.0)
    assert not r.pause()
    assert t.slept == [0.5, 0.7]


def test_fits_says_whether_a_whole_delay_ends_before_the_deadline() -> None:
    """fits() is what a loop checks to give up rather than sleep into its deadline."""
    t = VirtualTime()
    r = make(t, first=0.4, cap=0.4, deadline=t.now + 1.0)
    assert r.fits()
    r.pause()
    assert r.fits()  # 0.6 left
    r.pause()
    assert not r.fits()  # 0.2 left, the delay is 0.4
    assert not r.expired()


def test_most_limits_one_pause_and_grow_false_keeps_the_delay() -> None:
    """A pause may be shortened for one caller's own limit, and need not count as a failure."""
    t = VirtualTime()
    r = make(t, first=0.2, cap=1.0)
    r.pause(most=0.05)
    r.pause(grow=False)
    assert t.slept == [0.05, 0.4]
    assert r.attempts == 1 and r.delay == 0.4


def test_restart_begins_a_new_series_with_a_new_deadline() -> None:
    """After a success the next failure waits the first delay again, under its own deadline."""
    t = VirtualTime()
    r = make(t, first=0.1, cap=1.0)
    for _ in range(3):
        r.pause()
    assert r.left() is None and not r.expired()
    r.restart(deadline=t.now + 30)
    assert r.delay == 0.1 and r.attempts == 0
    assert r.left() == pytest.approx(30)
    t.now += 31
    assert r.expired() and not r.pause()


def test_next_delay_hands_out_delays_without_sleeping() -> None:
    """A loop that schedules its next try (rather than sleeping) gets the same series."""
    t = VirtualTime()
    r = make(t, first=0.05, cap=0.3)
    assert [r.next_delay() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    assert t.slept == [] and r.attempts == 5


@pytest.mark.parametrize(("first", "cap"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_nonsense_delays_are_refused(first: float, cap: float) -> None:
    """A first delay of zero (a busy loop) or above the cap is a programming error."""
    with pytest.raises(ValueError, match="first"):
        Retry(first=first, cap=cap)
