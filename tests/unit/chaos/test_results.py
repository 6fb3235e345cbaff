"""Time to detect, time to recover, availability and percentiles, from probe samples."""

from __future__ import annotations

import pytest

from heartline.chaos._results import (
    availability,
    measure,
    percentiles,
    steady_since,
    transitions,
)


def lane(*points: tuple[float, bool]) -> list[tuple[float, bool, str]]:
    return [(t, ok, "" if ok else "down") for t, ok in points]


def test_detect_and_recover_from_one_lane() -> None:
    """Detected at the first failing sample after the fault; recovered at the first passing
    one after that."""
    s = {"a": lane((0.0, True), (1.0, True), (1.1, False), (1.2, False), (1.3, True))}
    assert measure(s, ["a"], applied=1.05, ended=1.05) == pytest.approx((0.05, 0.25))


def test_recovery_needs_every_lane() -> None:
    """The system recovered when the last failing lane passes again, not the first."""
    s = {
        "a": lane((0.0, True), (1.1, False), (1.3, True)),
        "b": lane((0.05, True), (1.15, False), (1.55, True)),
    }
    assert measure(s, ["a", "b"], applied=1.0, ended=1.0) == pytest.approx((0.1, 0.55))
    assert measure(s, ["a"], applied=1.0, ended=1.0) == pytest.approx((0.1, 0.3))


def test_no_recovery_before_the_fault_ends() -> None:
    """A lane passing while a held fault still lasts is not a recovery."""
    s = {"a": lane((0.0, True), (1.1, False), (1.2, True), (1.5, False), (2.2, True))}
    assert measure(s, ["a"], applied=1.0, ended=2.0) == pytest.approx((0.1, 1.2))


def test_not_detected_and_not_recovered() -> None:
    """No failing sample: not detected; failing to the end: detected, not recovered."""
    ok = {"a": lane((0.0, True), (1.5, True))}
    assert measure(ok, ["a"], applied=1.0, ended=1.0) == (None, None)
    down = {"a": lane((0.0, True), (1.5, False), (2.0, False))}
    assert measure(down, ["a"], applied=1.0, ended=1.0) == (pytest.approx(0.5), None)


def test_failures_before_the_fault_do_not_count() -> None:
    """A lane that failed before the fault was applied is not this fault's detection."""
    s = {"a": lane((0.0, False), (0.5, True), (1.2, True))}
    assert measure(s, ["a"], applied=1.0, ended=1.0) == (None, None)


def test_availability_is_the_share_of_time_healthy() -> None:
    """Down for 0.3 s of a 1 s window: 70 %; all lanes must pass; no samples: None."""
    s = {"a": lane((0.0, True), (1.2, False), (1.5, True))}
    assert availability(s, ["a"], 1.0, 2.0) == pytest.approx(0.7)
    s2 = {**s, "b": lane((0.0, True), (1.6, False), (1.7, True))}
    assert availability(s2, ["a", "b"], 1.0, 2.0) == pytest.approx(0.6)
    assert availability({}, ["a"], 0.0, 1.0) is None
    assert availability(s, ["a"], 1.0, 1.0) is None


def test_percentiles_nearest_rank() -> None:
    """p50, p95 and max by nearest rank; nothing gives None."""
    assert percentiles([0.5, 0.1, 0.3, 0.2, 0.4]) == {"p50": 0.3, "p95": 0.5, "max": 0.5}
    assert percentiles([]) is None
    xs = [i / 100 for i in range(1, 101)]
    assert percentiles(xs) == {"p50": 0.5, "p95": 0.95, "max": 1.0}


def test_transitions_keep_changes_only() -> None:
    """The timeline keeps a lane's first sample and every change (of state or of the reason)."""
    s = [(0.0, True, ""), (0.1, True, ""), (0.2, False, "refused"), (0.3, False, "refused"),
         (0.4, False, "timeout"), (0.5, True, "")]  # fmt: skip
    assert transitions(s) == [[0.0, True, ""], [0.2, False, "refused"],
                              [0.4, False, "timeout"], [0.5, True, ""]]  # fmt: skip


def test_steady_since() -> None:
    """How long every lane has passed without a break; None while one fails."""
    a = lane((0.0, False), (0.1, True), (0.2, True))
    b = lane((0.0, True), (0.15, True))
    assert steady_since([a, b], 0.5) == pytest.approx(0.4)
    assert steady_since([a, lane((0.3, False))], 0.5) is None
