"""The clock, injected: what the supervisor, the heartbeat receiver and the lease code read.

Two readings: ``monotonic()`` for deadlines and durations (it is the event loop's ``time()``:
the supervisor schedules its timers on the loop and compares them with heartbeats stamped from
another thread, so both must read one clock), and ``wall()`` for what people see (when a
program started) and what outlives the process (the state file). ``heartline.testing`` has a
virtual clock, with an event loop whose time it is, for tests that run hours of back-off in
milliseconds.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (the event loop's time)."""

    def wall(self) -> float:
        """Seconds since the epoch."""


class SystemClock:
    """The real clocks: ``time.monotonic`` (asyncio's loop time) and ``time.time``."""

    monotonic = staticmethod(time.monotonic)
    wall = staticmethod(time.time)


SYSTEM_CLOCK: Clock = SystemClock()
