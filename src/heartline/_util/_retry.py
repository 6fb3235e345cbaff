"""One retry policy for every loop that tries again: a doubling delay, a cap, a deadline.

The clock and the sleep are injected, so a loop built on it is tested in virtual time, and a
loop that must wake up early (a backend being closed) passes a sleep it can interrupt, such as
``threading.Event().wait``.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Retry:
    """Delays between attempts: ``first``, doubled after each one up to ``cap``.

    ``deadline`` (on ``clock``'s scale, None for none) bounds the whole series: :meth:`pause`
    never sleeps past it, and :meth:`fits` says whether a whole delay still fits before it.
    The object is not thread-safe; each retrying loop owns one.
    """

    def __init__(
        self,
        *,
        first: float,
        cap: float,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"retry delays: need 0 < first <= cap, got {first:g} and {cap:g}")
        self.first = first
        self.cap = cap
        self.deadline = deadline
        self.clock = clock
        self._sleep = sleep
        self.delay = first
        #: Delays handed out since the start (or the last :meth:`restart`): the failed
        #: attempts so far, for a loop that pauses once per failure.
        self.attempts = 0

    def restart(self, *, deadline: float | None = None) -> None:
        """Start a new series (after a success): the first delay again, and a new deadline."""
        self.delay = self.first
        self.attempts = 0
        self.deadline = deadline

    def left(self) -> float | None:
        """Seconds until the deadline (negative once past), or None without one."""
        return None if self.deadline is None else self.deadline - self.clock()

    def expired(self) -> bool:
        """The deadline has come."""
        left = self.left()
        return left is not None and left <= 0

    def fits(self) -> bool:
        """A whole delay still ends before the deadline."""
        left = self.left()
        return left is None or self.delay <= left

    def next_delay(self) -> float:
        """The delay to wait now (not cut to the deadline); the next one doubles."""
        delay = self.delay
        self.delay = min(self.delay * 2, self.cap)
        self.attempts += 1
        return delay

    def pause(self, *, most: float | None = None, grow: bool = True) -> bool:
        """Sleep the current delay, but no longer than ``most`` nor past the deadline.

        False, without sleeping, once the deadline has come. ``grow`` False sleeps without
        moving on to the next delay (a pause that was not for a failed attempt).
        """
        left = self.left()
        if left is not None and left <= 0:
            return False
        delay = self.next_delay() if grow else self.delay
        if most is not None:
            delay = min(delay, most)
        if left is not None:
            delay = min(delay, left)
        if delay > 0:
            self._sleep(delay)
        return True

    def __repr__(self) -> str:
        return f"<Retry delay={self.delay:g}s attempts={self.attempts} left={self.left()}>"


__all__ = ["Retry"]
