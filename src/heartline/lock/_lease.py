"""A grant's lease: its fencing token, and the state a holder may rely on at each moment.

::

             renewal (HELD again, proven for longer)
            +-----------------------------------+
            v                                   |
    grant -> HELD --(end of proof within margin)--> SUSPECT --(end of proof)--> LOST
             |  \\                                    |  \\
             |   +----(server or backend says so)----|---+--------------------> LOST
             +-------------(release)-----------------+------------------------> RELEASED

LOST and RELEASED are final: no renewal brings a lease back. The state follows from the
lease's proven end (``valid_until``, moved on by each confirmed renewal), its ``margin`` and the
clock, plus what the backend learned (a loss) or did (a release); so it is exact whenever it is
read. Listeners hear of a change when it is noticed: a renewal, a loss or a release at once;
a change that only time made (HELD -> SUSPECT -> LOST) when the owner of the lease's timer (the
backend's lease thread) calls :meth:`Lease.poll` at :meth:`Lease.next_change`.

The clock is injected, so the state machine is tested in virtual time.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

from heartline.errors import LockLost

#: A thread that wakes this much later than it asked to was not running meanwhile: its process
#: was frozen (SIGSTOP) or its machine paused. Far beyond any scheduling delay.
STALL = 0.25


def frozen_for(late: float) -> str | None:
    """What to say of a lease that ran out while the thread keeping it woke ``late`` seconds
    after it meant to (its wake-up was due before the lease's end); None if it was on time."""
    if late < STALL:
        return None
    return f"the lease ran out while this process was frozen (for at least {late:.1f}s)"


def stop_grace(ttl: float) -> float:
    """TERM -> KILL grace for work done under a lease of ``ttl``: long enough for a clean
    exit, short enough to fit in one lease."""
    return max(0.05, min(5.0, ttl / 4))


def suspect_margin(ttl: float) -> float:
    """How long before its proven end a lease turns SUSPECT: the time its holder needs to stop
    its work (a TERM, the grace, a KILL) and a little more, so the work is gone before the
    lease can end on the server. At most 0.35 TTL, so with a renewal due every TTL/3 a lease
    turns SUSPECT only when its renewals are late."""
    return stop_grace(ttl) + min(0.5, ttl / 10)


class LeaseState(enum.Enum):
    """What a holder may assume about its lease (each member's docstring says it)."""

    def __new__(cls, value: str, doc: str) -> LeaseState:
        member = object.__new__(cls)
        member._value_ = value
        member.__doc__ = doc
        return member

    HELD = (
        "held",
        "The server counts this holder in until ``valid_until`` at least, and that is more "
        "than the margin away: work under the lock may go on, and new work may start.",
    )
    SUSPECT = (
        "suspect",
        "Renewals are late: the lease is proven only until ``valid_until``, which is within "
        "the margin. It may still be held (a renewal can make it HELD again), but the holder "
        "must not start anything new under it and must begin stopping what it does, so that "
        "all of it is gone by ``valid_until``.",
    )
    LOST = (
        "lost",
        "Final. The server no longer counts this holder in, or nothing proves it does: "
        "another holder may have the lock now. Stop at once; anything done from here on "
        "may overlap with the next holder (the fencing token lets a resource refuse it).",
    )
    RELEASED = (
        "released",
        "Final. This holder gave the lock back; the next waiter may have it.",
    )


HELD, SUSPECT, LOST, RELEASED = (LeaseState.HELD, LeaseState.SUSPECT, LeaseState.LOST,
                                 LeaseState.RELEASED)  # fmt: skip

Listener = Callable[[LeaseState], None]


class Lease:
    """One grant: its fencing token, and its :class:`LeaseState`.

    ``valid_until`` is a ``time.monotonic()`` deadline that the backend moves forward each time
    the server confirms a renewal. It is computed from the moment the renewal was *sent*, so it
    always ends before the server's own deadline (which starts when the request arrived). Past
    it, nothing proves the server still counts us as the holder, so the lease is lost even if
    no message said so (a frozen or partitioned holder learns it this way).
    """

    def __init__(
        self,
        name: str,
        token: int,
        *,
        limit: int,
        ttl: float,
        valid_until: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.token = token
        self.limit = limit
        self.ttl = ttl
        self.valid_until = valid_until
        #: SUSPECT starts this long before ``valid_until``.
        self.margin = suspect_margin(ttl)
        self._clock = clock
        self._released = False
        self._lost: LockLost | None = None
        self._final: LeaseState | None = None  # LOST or RELEASED once reached
        self._reported = HELD  # the state listeners last heard of
        self._mutex = threading.Lock()
        self._listeners: list[Listener] = []
        # Changes wait here to be told in order, by one thread at a time, none of them holding
        # the mutex while a listener runs: (state, the one listener it is for, or None for all)
        self._queue: list[tuple[LeaseState, Listener | None]] = []
        self._telling = False

    # --- reading ----------------------------------------------------------------------------
    def state_at(self, now: float) -> LeaseState:
        """The state at monotonic time ``now``."""
        final = self._final
        if final is not None:
            return final
        until = self.valid_until
        if now >= until:
            return LOST
        if now >= until - self.margin:
            return SUSPECT
        return HELD

    @property
    def state(self) -> LeaseState:
        return self.state_at(self._clock())

    @property
    def suspect_at(self) -> float:
        """When the lease turns SUSPECT unless a renewal comes first (monotonic)."""
        return self.valid_until - self.margin

    def next_change(self) -> float | None:
        """When :meth:`poll` next has something to tell (monotonic, perhaps already past);
        None once the state is final."""
        with self._mutex:
            if self._final is not None:
                return None
            return self.suspect_at if self._reported is HELD else self.valid_until

    @property
    def released(self) -> bool:
        """This holder gave the lease back (whatever its state was then)."""
        return self._released

    @property
    def lost(self) -> bool:
        return self.state is LOST

    @property
    def loss(self) -> LockLost | None:
        """The loss the backend (or a :meth:`poll`) recorded; None while none was, even if
        the clock already says LOST (:attr:`lost_error` covers both)."""
        return self._lost

    @property
    def lost_error(self) -> LockLost | None:
        if self._lost is None and self.lost:
            return LockLost(
                f"lock {self.name!r}: the lease (token {self.token}) ran out before it was renewed",
                name=self.name,
            )
        return self._lost

    # --- what the backend learns --------------------------------------------------------------
    def renewed(self, sent_at: float) -> None:
        """The server confirmed a renewal that was sent at ``sent_at`` (monotonic). Too late
        once ``valid_until`` has passed: a lost lease stays lost."""
        with self._mutex:
            if self._final is not None or sent_at + self.ttl <= self.valid_until:
                return
            if self._clock() >= self.valid_until:
                return
            self.valid_until = sent_at + self.ttl
            self._reported = HELD
            self._queue.append((HELD, None))
        self._tell()

    def mark_lost(self, reason: str) -> None:
        """The backend knows the lease is gone; listeners hear LOST once."""
        with self._mutex:
            if self._final is not None:
                return
            self._lost = LockLost(f"lock {self.name!r} lost (token {self.token}): {reason}",
                                  name=self.name)  # fmt: skip
            self._lose()
        self._tell()

    def mark_released(self) -> None:
        """The holder gave the lease back. A lease whose proven end had already passed stays
        LOST (with the error saying so), whoever noticed it first."""
        with self._mutex:
            self._released = True
            if self._final is not None:
                return
            if self._clock() >= self.valid_until:
                self._lost = LockLost(
                    f"lock {self.name!r}: the lease (token {self.token}) ran out before it was "
                    "renewed",
                    name=self.name,
                )
                self._lose()
            else:
                self._final = self._reported = RELEASED
                self._queue.append((RELEASED, None))
        self._tell()

    def _lose(self) -> None:  # with the mutex held
        self._final = self._reported = LOST
        self._queue.append((LOST, None))

    def poll(self, now: float | None = None, *, late: float = 0.0, expired: str = "") -> LeaseState:
        """Tell listeners what time changed, and return the state at ``now``.

        The owner of the lease's timer calls this at :meth:`next_change`. When the proven end
        has passed, the lease is marked lost: because the caller was frozen (it woke ``late``
        seconds after it meant to, see :func:`frozen_for`), or for the backend's ``expired``
        reason.
        """
        now = self._clock() if now is None else now
        state = self.state_at(now)
        if state is LOST and self._final is None:
            self.mark_lost(frozen_for(late) or expired or "the lease ran out before it was renewed")
            return self.state_at(now)
        if state is SUSPECT:
            with self._mutex:
                if self._reported is not HELD or self._final is not None:
                    return state
                self._reported = SUSPECT
                self._queue.append((SUSPECT, None))
            self._tell()
        return state

    # --- listening --------------------------------------------------------------------------
    def on_state(self, callback: Listener, *, current: bool = False) -> None:
        """Call ``callback(state)`` on every change of state, and with HELD again on every
        renewal that moves ``valid_until`` on. It runs in whichever thread noticed the change
        (usually a backend's), one change at a time and in order; it must be quick and must
        not call into the backend (its thread may be the one that would answer). ``current``
        also tells it the state as of now, first."""
        with self._mutex:
            self._listeners.append(callback)
            if current:
                self._queue.append((self.state_at(self._clock()), callback))
        if current:
            self._tell()

    def on_lost(self, callback: Callable[[LockLost], None]) -> None:
        """Call ``callback(error)`` once, when the lease is known to be LOST (at once if it is
        already)."""

        def relay(state: LeaseState) -> None:
            if state is LOST and self._lost is not None:
                callback(self._lost)

        with self._mutex:
            lost = self._lost
            if lost is None:
                self._listeners.append(relay)
        if lost is not None:
            callback(lost)

    def on_renewed(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` each time a renewal moves ``valid_until`` on."""
        self.on_state(lambda state: callback() if state is HELD else None)

    def _tell(self) -> None:
        with self._mutex:
            if self._telling:
                return  # the thread telling now tells this too, after what came before
            self._telling = True
        try:
            while True:
                with self._mutex:
                    if not self._queue:
                        self._telling = False
                        return
                    state, only = self._queue.pop(0)
                    listeners = [only] if only is not None else list(self._listeners)
                for listener in listeners:
                    listener(state)
        except BaseException:
            # A listener failed: its error goes to the thread that noticed the change (as it
            # would without the queue); the changes still queued are told next time.
            with self._mutex:
                self._telling = False
            raise

    def __repr__(self) -> str:
        return f"<Lease {self.name!r} token={self.token} {self.state.value}>"


__all__ = ["Lease", "LeaseState", "frozen_for", "stop_grace", "suspect_margin"]
