"""Time to detect, time to recover and availability, from probe samples: pure functions.

A lane's state is a step function: each sample holds from the moment it was taken until the
next one. The system is healthy at a moment when every watched lane's latest sample says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Sample = tuple[float, bool, str]


def _events(
    samples: Mapping[str, Sequence[Sample]], watched: Iterable[str]
) -> list[tuple[float, str, bool]]:
    out = [(t, lane, ok) for lane in watched for (t, ok, _) in samples.get(lane, ())]
    out.sort(key=lambda e: e[0])
    return out


def measure(
    samples: Mapping[str, Sequence[Sample]],
    watched: Sequence[str],
    *,
    applied: float,
    ended: float,
) -> tuple[float | None, float | None]:
    """(time to detect, time to recover), in seconds after ``applied``; None when it did not
    happen. Detected: the first failing sample of a watched lane taken at or after
    ``applied``. Recovered: the first moment after that, and not before the fault ``ended``,
    when every watched lane's latest sample passes."""
    state: dict[str, bool] = {}
    detected: float | None = None
    for t, lane, ok in _events(samples, watched):
        state[lane] = ok
        if t < applied:
            continue
        if detected is None:
            if not ok:
                detected = t
            continue
        if t >= ended and len(state) == len(watched) and all(state.values()):
            return detected - applied, t - applied
    return (detected - applied if detected is not None else None), None


def availability(
    samples: Mapping[str, Sequence[Sample]], watched: Sequence[str], start: float, end: float
) -> float | None:
    """The share of [start, end] during which every watched lane passed (None: no samples)."""
    if end <= start:
        return None
    state: dict[str, bool] = {}
    good = 0.0
    last = start
    seen = False
    for t, lane, ok in _events(samples, watched):
        if t > start:
            if seen and all(state.values()) and len(state) == len(watched):
                good += min(t, end) - max(last, start)
            last = max(t, start)
        if t >= end:
            break
        state[lane] = ok
        seen = True
    if not seen:
        return None
    if all(state.values()) and len(state) == len(watched) and last < end:
        good += end - last
    return max(0.0, min(1.0, good / (end - start)))


def percentiles(values: Iterable[float]) -> dict[str, float] | None:
    """p50, p95 and max (nearest rank), or None for no values."""
    xs = sorted(v for v in values if v is not None and math.isfinite(v))
    if not xs:
        return None

    def rank(p: float) -> float:
        return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]

    return {"p50": rank(50), "p95": rank(95), "max": xs[-1]}


def transitions(lane: Sequence[Sample]) -> list[list[object]]:
    """A lane's state changes only: [[t, ok, detail], ...] (the first sample always)."""
    out: list[list[object]] = []
    for t, ok, detail in lane:
        if not out or out[-1][1] != ok or (not ok and out[-1][2] != detail):
            out.append([round(t, 4), ok, detail])
    return out


def steady_since(lane_samples: Sequence[Sequence[Sample]], now: float) -> float | None:
    """How long every lane has been passing without a break, up to ``now`` (None: not now)."""
    since = -math.inf
    for samples in lane_samples:
        if not samples or not samples[-1][1]:
            return None
        start = samples[-1][0]
        for t, ok, _ in reversed(samples):
            if not ok:
                break
            start = t
        since = max(since, start)
    return now - since if since != -math.inf else None
