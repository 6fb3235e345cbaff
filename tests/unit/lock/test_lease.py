"""The lease's state machine (``heartline.lock.Lease``): HELD, SUSPECT, LOST, RELEASED and the one
listener hook, in virtual time (the lease reads a clock the test moves)."""

from __future__ import annotations

import pytest

from heartline.errors import LockLost
from heartline.lock import Lease, LeaseState
from heartline.lock._lease import STALL, stop_grace, suspect_margin

HELD, SUSPECT, LOST, RELEASED = (
    LeaseState.HELD,
    LeaseState.SUSPECT,
    LeaseState.LOST,
    LeaseState.RELEASED,
)
TTL = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lease_at(clock: Clock, *, ttl: float = TTL) -> tuple[Lease, list[LeaseState]]:
    """A lease granted now (proven for a whole TTL) and the states its listener heard."""
    lease = Lease("db", 7, limit=1, ttl=ttl, valid_until=clock.now + ttl, clock=clock)
    heard: list[LeaseState] = []
    lease.on_state(heard.append)
    return lease, heard


def test_every_state_says_what_a_holder_may_assume() -> None:
    """Each state carries its own docstring: the contract a holder (runner, singleton, chaos
    undo) programs against."""
    for state in LeaseState:
        assert state.__doc__ and len(state.__doc__) > 40, state
    assert "must not start" in (SUSPECT.__doc__ or "")
    assert (LOST.__doc__ or "").startswith("Final.") and (RELEASED.__doc__ or "").startswith(
        "Final."
    )
    assert [s.value for s in LeaseState] == ["held", "suspect", "lost", "released"]


def test_time_alone_takes_a_lease_from_held_through_suspect_to_lost() -> None:
    """Without renewals: HELD until the margin before the proven end, SUSPECT until the end,
    then LOST; the listener hears each change once when the timer's owner polls at
    next_change(), and the loss names the lock and the token."""
    clock = Clock()
    lease, heard = lease_at(clock)
    assert lease.state is HELD and lease.margin == suspect_margin(TTL) == 3.0
    assert lease.next_change() == lease.suspect_at == clock.now + TTL - 3.0
    clock.now = lease.suspect_at - 0.001
    assert lease.poll() is HELD and heard == []
    clock.now = lease.suspect_at
    assert lease.poll() is SUSPECT and lease.poll() is SUSPECT
    assert heard == [SUSPECT]
    assert not lease.lost and lease.lost_error is None
    assert lease.next_change() == lease.valid_until
    clock.now = lease.valid_until
    assert lease.state is LOST  # exact whenever read, before anyone polls
    assert lease.lost and lease.loss is None
    assert lease.poll() is LOST
    assert heard == [SUSPECT, LOST]
    assert lease.next_change() is None
    err = lease.loss
    assert isinstance(err, LockLost) and err is lease.lost_error
    assert "'db'" in str(err) and "token 7" in str(err) and "ran out" in str(err)


def test_a_renewal_makes_a_suspect_lease_held_again() -> None:
    """A renewal that comes while SUSPECT moves the proven end on: HELD again, heard as HELD,
    and the next change is the new SUSPECT moment."""
    clock = Clock()
    lease, heard = lease_at(clock)
    clock.now = lease.suspect_at + 1
    lease.poll()
    lease.renewed(sent_at=clock.now - 0.1)
    assert lease.state is HELD and lease.valid_until == clock.now - 0.1 + TTL
    assert heard == [SUSPECT, HELD]
    assert lease.next_change() == lease.suspect_at


def test_every_renewal_is_heard_and_an_older_one_is_not() -> None:
    """Each renewal that moves the end on is told (HELD again: the runner passes it to its
    guard); one sent before the newest confirmed one changes nothing and is not told."""
    clock = Clock()
    lease, heard = lease_at(clock)
    clock.now += 3
    lease.renewed(sent_at=clock.now)
    lease.renewed(sent_at=clock.now - 1)
    assert heard == [HELD]
    assert lease.valid_until == clock.now + TTL


def test_no_renewal_brings_a_lost_lease_back() -> None:
    """LOST is final: a renewal answered after the proven end passed (the server heard us
    late, or we were frozen) leaves the lease LOST, and so does one after a reported loss."""
    clock = Clock()
    lease, heard = lease_at(clock)
    clock.now = lease.valid_until + 0.5
    lease.renewed(sent_at=lease.valid_until - 0.2)
    assert lease.state is LOST and lease.valid_until == 1000.0 + TTL
    lease.mark_lost("the server says so")
    lease.renewed(sent_at=clock.now)
    assert lease.state is LOST and heard == [LOST]
    assert "the server says so" in str(lease.lost_error)


def test_a_loss_the_backend_reports_is_told_once_and_on_lost_hears_it() -> None:
    """mark_lost ends a HELD lease at once (an admin's break): LOST, told once, with the reason;
    on_lost registered before or after the loss hears the same error exactly once."""
    clock = Clock()
    lease, heard = lease_at(clock)
    before: list[LockLost] = []
    lease.on_lost(before.append)
    lease.mark_lost("broken by an admin")
    lease.mark_lost("again")
    after: list[LockLost] = []
    lease.on_lost(after.append)
    assert heard == [LOST] and len(before) == 1 and after == before
    assert "broken by an admin" in str(before[0]) and before[0].name == "db"


def test_a_release_is_final_and_nothing_after_it_is_a_loss() -> None:
    """A released lease is RELEASED: no loss, no renewal, no time changes it."""
    clock = Clock()
    lease, heard = lease_at(clock)
    lease.mark_released()
    lease.mark_lost("a renewal crossing the release")
    lease.renewed(sent_at=clock.now + 1)
    clock.now += 2 * TTL
    assert lease.poll() is RELEASED and lease.state is RELEASED
    assert lease.released and not lease.lost and lease.lost_error is None
    assert heard == [RELEASED]


def test_releasing_a_lease_that_already_ran_out_leaves_it_lost() -> None:
    """A lease whose proven end passed before its release (nobody polled in between) was lost,
    not released: the state never goes from LOST to anything else."""
    clock = Clock()
    lease, heard = lease_at(clock)
    clock.now = lease.valid_until + 1
    assert lease.state is LOST
    lease.mark_released()
    assert lease.released and lease.state is LOST and heard == [LOST]


def test_a_poll_that_wakes_late_says_the_process_was_frozen() -> None:
    """The timer's owner woke long after it meant to (the process was stopped): the loss says
    the lease ran out while this process was frozen; on time, it gives the backend's reason."""
    clock = Clock()
    frozen, _ = lease_at(clock)
    on_time, _ = lease_at(clock)
    clock.now += TTL + 5
    frozen.poll(late=STALL + 4.0, expired="no answer from the server")
    on_time.poll(late=0.01, expired="no answer from the server")
    assert "frozen (for at least 4.2s)" in str(frozen.lost_error)
    assert "no answer from the server" in str(on_time.lost_error)


def test_a_listener_added_later_can_be_told_the_state_first() -> None:
    """on_state(current=True) tells the new listener the state as of now, then the changes."""
    clock = Clock()
    lease, _ = lease_at(clock)
    clock.now = lease.suspect_at + 0.5
    late: list[LeaseState] = []
    lease.on_state(late.append, current=True)
    lease.mark_released()
    assert late == [SUSPECT, RELEASED]


def test_a_listener_that_changes_the_lease_does_not_reorder_what_others_hear() -> None:
    """Changes are told in the order they happened, to every listener, even when a listener
    itself causes a change (a holder that releases on SUSPECT)."""
    clock = Clock()
    lease = Lease("db", 7, limit=1, ttl=TTL, valid_until=clock.now + TTL, clock=clock)
    first: list[LeaseState] = []
    second: list[LeaseState] = []

    def release_on_suspect(state: LeaseState) -> None:
        first.append(state)
        if state is SUSPECT:
            lease.mark_released()

    lease.on_state(release_on_suspect)
    lease.on_state(second.append)
    clock.now = lease.suspect_at
    lease.poll()
    assert first == second == [SUSPECT, RELEASED]


def test_a_failing_listener_does_not_silence_the_lease() -> None:
    """A listener that raises: the error reaches the thread that noticed the change, and the
    next change is still told."""
    clock = Clock()
    lease = Lease("db", 7, limit=1, ttl=TTL, valid_until=clock.now + TTL, clock=clock)
    heard: list[LeaseState] = []

    def fussy(state: LeaseState) -> None:
        heard.append(state)
        if state is SUSPECT:
            raise RuntimeError("listener bug")

    lease.on_state(fussy)
    clock.now = lease.suspect_at
    with pytest.raises(RuntimeError, match="listener bug"):
        lease.poll()
    lease.mark_lost("later")
    assert heard == [SUSPECT, LOST]


@pytest.mark.parametrize("ttl", [0.2, 0.5, 1.0, 3.0, 10.0, 60.0, 3600.0])
def test_the_margin_fits_a_stop_inside_the_lease(ttl: float) -> None:
    """The SUSPECT margin leaves a holder the grace for TERM -> KILL and a little more, and
    begins after the next renewal is due (every TTL/3), so a lease whose renewals come on time
    is never SUSPECT."""
    margin = suspect_margin(ttl)
    assert stop_grace(ttl) < margin <= 0.35 * ttl + 1e-9
    assert ttl - margin > ttl / 3
