"""An injectable clock, so back-off and deadlines can be tested in virtual time."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What time-dependent code needs: a monotonic reading and wall time for records."""

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class MonotonicClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()
