"""lockd's lock table (``heartline.lockd.Table``): pure FIFO queues and semaphores.

No I/O, no clock: tokens come from an injected counter and times are plain numbers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from heartline.lockd import Grant, LimitMismatch, Table, Waiter, Who

SESSIONS = ("s1", "s2", "s3", "s4")
NAMES = ("a", "b", "c")


def who(session: str) -> Who:
    return Who(session, f"host-{session}", 100, "")


def waiter(name: str, session: str, req_id: int, since: float = 0.0) -> Waiter:
    return Waiter(name, req_id, who(session), since)


def new_table(start: int = 1) -> Table:
    return Table(itertools.count(start).__next__)


def test_first_request_is_granted_with_the_injected_token() -> None:
    """An unheld lock is granted at once, with the token the injected counter hands out."""
    t = new_table(start=41)
    g = t.acquire("a", 1, waiter("a", "s1", 1), try_only=False, now=5.0)
    assert g is not None
    assert (g.name, g.token, g.limit, g.who.session, g.since) == ("a", 41, 1, "s1", 5.0)
    assert t.holders("a") == [g]
    assert list(t.grants_of("s1")) == [g]


def test_waiters_are_granted_in_arrival_order() -> None:
    """A mutex held by one session queues the others and grants them one by one, first come
    first served."""
    t = new_table()
    first = t.acquire("a", 1, waiter("a", "s1", 1), try_only=False, now=0)
    assert first is not None
    for i, s in enumerate(("s2", "s3", "s4"), start=2):
        assert t.acquire("a", 1, waiter("a", s, i), try_only=False, now=i) is None
    order = []
    token = first.token
    for _ in range(3):
        dropped, promoted = t.release("a", token, now=10)
        assert dropped is not None and dropped.token == token
        assert len(promoted) == 1
        w, g = promoted[0]
        assert g.who == w.who
        order.append(w.who.session)
        token = g.token
    assert order == ["s2", "s3", "s4"]
    t.release("a", token, now=11)
    assert t.entries == {}


def test_newcomer_never_passes_a_waiter() -> None:
    """With a semaphore of 2 full and a waiter queued, a freed place goes to the waiter, and a
    newcomer (blocking or try-lock) arriving while someone waits is queued or refused, never
    granted ahead."""
    t = new_table()
    g1 = t.acquire("a", 2, waiter("a", "s1", 1), try_only=False, now=0)
    g2 = t.acquire("a", 2, waiter("a", "s2", 2), try_only=False, now=0)
    assert g1 and g2
    assert t.acquire("a", 2, waiter("a", "s3", 3), try_only=False, now=1) is None
    # A try-lock while s3 waits: refused, and not queued.
    assert t.acquire("a", 2, waiter("a", "s4", 4), try_only=True, now=2) is None
    assert [w.who.session for w in t.entries["a"].waiters] == ["s3"]
    # A blocking newcomer goes behind s3.
    assert t.acquire("a", 2, waiter("a", "s4", 5), try_only=False, now=3) is None
    _, promoted = t.release("a", g1.token, now=4)
    assert [w.who.session for w, _ in promoted] == ["s3"]
    _, promoted = t.release("a", g2.token, now=5)
    assert [w.who.session for w, _ in promoted] == ["s4"]


def test_try_lock_on_free_lock_is_granted_and_busy_lock_leaves_no_entry() -> None:
    """A try-lock gets a free lock; on a busy one it is refused and leaves nothing behind
    (and on an unknown lock it leaves no empty entry either)."""
    t = new_table()
    g = t.acquire("a", 1, waiter("a", "s1", 1), try_only=True, now=0)
    assert g is not None
    assert t.acquire("a", 1, waiter("a", "s2", 2), try_only=True, now=0) is None
    assert not t.entries["a"].waiters
    t.frozen = True
    assert t.acquire("new", 1, waiter("new", "s2", 3), try_only=True, now=0) is None
    assert "new" not in t.entries


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_semaphore_grants_exactly_limit_holders(limit: int) -> None:
    """A lock with limit N has at most N holders; the (N+1)th waits."""
    t = new_table()
    grants = [
        t.acquire("a", limit, waiter("a", f"s{i}", i), try_only=False, now=0)
        for i in range(limit + 2)
    ]
    assert all(g is not None for g in grants[:limit])
    assert grants[limit:] == [None, None]
    assert len(t.holders("a")) == limit
    assert len(t.entries["a"].waiters) == 2


def test_limit_mismatch_raises_while_in_use_and_is_free_after() -> None:
    """Asking for a different limit than the lock's current holders use raises LimitMismatch
    (naming both limits); once the lock is free any limit is accepted."""
    t = new_table()
    g = t.acquire("a", 2, waiter("a", "s1", 1), try_only=False, now=0)
    assert g is not None
    with pytest.raises(LimitMismatch, match=r"limit 2.*limit 3"):
        t.acquire("a", 3, waiter("a", "s2", 2), try_only=False, now=0)
    with pytest.raises(LimitMismatch):
        t.acquire("a", 1, waiter("a", "s2", 3), try_only=True, now=0)
    assert t.entries["a"].limit == 2 and not t.entries["a"].waiters
    t.release("a", g.token, now=1)
    g3 = t.acquire("a", 3, waiter("a", "s2", 4), try_only=False, now=2)
    assert g3 is not None and g3.limit == 3


def test_cancel_removes_one_request_or_all_of_a_session() -> None:
    """cancel with a request id removes that waiter only; without, every waiter of the
    session for that lock; other sessions' places are kept, and the queue order stays."""
    t = new_table()
    g = t.acquire("a", 1, waiter("a", "s1", 1), try_only=False, now=0)
    assert g is not None
    for rid, s in [(2, "s2"), (3, "s3"), (4, "s2"), (5, "s4")]:
        t.acquire("a", 1, waiter("a", s, rid), try_only=False, now=rid)
    gone = t.cancel("a", "s2", 4)
    assert [w.req_id for w in gone] == [4]
    assert [w.req_id for w in t.entries["a"].waiters] == [2, 3, 5]
    gone = t.cancel("a", "s3")
    assert [w.req_id for w in gone] == [3]
    assert [w.req_id for w in t.entries["a"].waiters] == [2, 5]
    assert t.cancel("a", "nobody") == []
    assert t.cancel("unknown", "s2") == []
    _, promoted = t.release("a", g.token, now=9)
    assert [w.req_id for w, _ in promoted] == [2]


def test_cancel_of_the_last_waiter_forgets_an_unheld_entry() -> None:
    """A lock whose only waiter cancels (while frozen, so nobody holds it) disappears."""
    t = new_table()
    t.frozen = True
    assert t.acquire("a", 1, waiter("a", "s1", 1), try_only=False, now=0) is None
    assert t.cancel("a", "s1", 1)
    assert t.entries == {}


def test_release_of_unknown_token_or_lock_changes_nothing() -> None:
    """Releasing a token nobody holds, or a lock nobody uses, drops nothing and grants
    nothing."""
    t = new_table()
    g = t.acquire("a", 1, waiter("a", "s1", 1), try_only=False, now=0)
    assert g is not None
    assert t.release("a", g.token + 100, now=1) == (None, [])
    assert t.release("zzz", g.token, now=1) == (None, [])
    assert t.holders("a") == [g]


def test_drop_session_releases_its_grants_and_promotes_the_next() -> None:
    """Ending a session releases every grant it had (across locks), forgets its waiting
    places, and grants freed places to the next waiters in order."""
    t = new_table()
    ga = t.acquire("a", 1, waiter("a", "s1", 1), try_only=False, now=0)
    gb = t.acquire("b", 1, waiter("b", "s1", 2), try_only=False, now=0)
    assert ga and gb
    t.acquire("a", 1, waiter("a", "s2", 3), try_only=False, now=1)
    t.acquire("a", 1, waiter("a", "s3", 4), try_only=False, now=2)
    gc = t.acquire("c", 1, waiter("c", "s3", 5), try_only=False, now=3)
    assert gc is not None
    t.acquire("c", 1, waiter("c", "s1", 6), try_only=False, now=4)  # s1 waits for c too
    released, granted = t.drop_session("s1", now=5)
    assert sorted(g.token for g in released) == sorted([ga.token, gb.token])
    assert [(w.req_id, g.name) for w, g in granted] == [(3, "a")]
    assert "b" not in t.entries
    assert not t.entries["c"].waiters
    assert [g.who.session for g in t.holders("a")] == ["s2"]
    assert list(t.grants_of("s1")) == []


def test_frozen_table_grants_nothing_until_thaw() -> None:
    """While frozen, free locks are not granted (requests queue, try-locks are refused, a
    release promotes nobody); thaw grants the queue in arrival order up to the limit."""
    t = new_table()
    g = t.acquire("a", 2, waiter("a", "s1", 1), try_only=False, now=0)
    assert g is not None
    t.frozen = True
    assert t.acquire("a", 2, waiter("a", "s2", 2), try_only=False, now=1) is None
    assert t.acquire("b", 1, waiter("b", "s2", 3), try_only=True, now=1) is None
    assert t.acquire("b", 1, waiter("b", "s3", 4), try_only=False, now=1) is None
    assert t.acquire("a", 2, waiter("a", "s3", 5), try_only=False, now=2) is None
    assert t.acquire("a", 2, waiter("a", "s4", 6), try_only=False, now=3) is None
    assert t.release("a", g.token, now=4)[1] == []
    assert t.drop_session("s9", now=4) == ([], [])
    granted = t.thaw(now=5)
    assert not t.frozen
    assert [(g.name, w.req_id) for w, g in granted] == [("a", 2), ("a", 5), ("b", 4)]
    assert [w.req_id for w in t.entries["a"].waiters] == [6]
    tokens = [g.token for _, g in granted]
    assert tokens == sorted(tokens)


def test_restore_puts_grants_back_and_they_count_against_the_limit() -> None:
    """Grants restored from the journal are held again: they block new requests up to the
    limit, can be released (promoting waiters), and belong to their old session."""
    t = new_table(start=100)
    old = [Grant("a", 7, 2, who("old1"), 1.0), Grant("a", 9, 2, who("old2"), 2.0)]
    for g in old:
        t.restore(g)
    assert t.holders("a") == old
    assert t.entries["a"].limit == 2
    assert list(t.grants_of("old2")) == [old[1]]
    assert t.acquire("a", 2, waiter("a", "s1", 1), try_only=False, now=3) is None
    released, promoted = t.drop_session("old1", now=4)
    assert released == [old[0]]
    assert [(w.req_id, g.token) for w, g in promoted] == [(1, 100)]


# --- a state machine over random operations ---------------------------------------------------


@dataclass
class ModelLock:
    limit: int
    holders: list[int] = field(default_factory=list)  # tokens in grant order
    waiters: list[int] = field(default_factory=list)  # request ids in arrival order


class TableMachine(RuleBasedStateMachine):
    """Random acquires, try-locks, releases, cancels, session ends, freezes and thaws against
    a tiny reference model of a strict-FIFO semaphore."""

    def __init__(self) -> None:
        super().__init__()
        self.counter = itertools.count(1)
        self.table = Table(self.counter.__next__)
        self.model: dict[str, ModelLock] = {}
        self.req_ids = itertools.count(1)
        self.arrival: dict[int, tuple[str, str]] = {}  # req id -> (name, session)
        self.session_of: dict[int, str] = {}  # token -> session
        self.grant_log: list[tuple[str, int]] = []  # (name, token) in grant order
        self.clock = 0.0

    # --- helpers --------------------------------------------------------------------------
    def _tick(self) -> float:
        self.clock += 1.0
        return self.clock

    def _record_grant(self, g: Grant, req_id: int | None) -> None:
        self.grant_log.append((g.name, g.token))
        self.session_of[g.token] = g.who.session
        self.model[g.name].holders.append(g.token)

    def _promote_model(self, name: str) -> list[int]:
        """The request ids the model says must be granted now, in order."""
        m = self.model.get(name)
        out: list[int] = []
        if m is None:
            return out
        while not self.table.frozen and m.waiters and len(m.holders) + len(out) < m.limit:
            out.append(m.waiters.pop(0))
        return out

    def _check_promoted(self, name: str, promoted: list[tuple[Waiter, Grant]]) -> None:
        expected = self._promote_model(name)
        assert [w.req_id for w, _ in promoted] == expected, "grants out of arrival order"
        for w, g in promoted:
            assert g.who == w.who and g.name == name
            self._record_grant(g, w.req_id)
        self._forget(name)

    def _forget(self, name: str) -> None:
        m = self.model.get(name)
        if m is not None and not m.holders and not m.waiters:
            del self.model[name]

    # --- rules ----------------------------------------------------------------------------
    @rule(
        name=st.sampled_from(NAMES),
        session=st.sampled_from(SESSIONS),
        limit=st.integers(1, 3),
        try_only=st.booleans(),
    )
    def acquire(self, name: str, session: str, limit: int, try_only: bool) -> None:
        rid = next(self.req_ids)
        now = self._tick()
        m = self.model.get(name)
        if m is not None and m.limit != limit:
            with pytest.raises(LimitMismatch):
                self.table.acquire(name, limit, waiter(name, session, rid, now),
                                   try_only=try_only, now=now)  # fmt: skip
            return
        g = self.table.acquire(name, limit, waiter(name, session, rid, now),
                               try_only=try_only, now=now)  # fmt: skip
        if m is None:
            m = self.model[name] = ModelLock(limit)
        may_grant = not self.table.frozen and not m.waiters and len(m.holders) < limit
        if may_grant:
            assert g is not None, "a free lock with nobody waiting was not granted"
            assert g.who.session == session and g.limit == limit and g.since == now
            self._record_grant(g, rid)
        else:
            assert g is None, "granted past a waiter, past the limit, or while frozen"
            if not try_only:
                m.waiters.append(rid)
                self.arrival[rid] = (name, session)
        self._forget(name)

    @precondition(lambda self: any(m.holders for m in self.model.values()))
    @rule(data=st.data())
    def release_held(self, data: st.DataObject) -> None:
        held = [(n, t) for n, m in self.model.items() for t in m.holders]
        name, token = data.draw(st.sampled_from(held))
        dropped, promoted = self.table.release(name, token, now=self._tick())
        assert dropped is not None and dropped.token == token
        self.model[name].holders.remove(token)
        self._check_promoted(name, promoted)

    @rule(name=st.sampled_from(NAMES), token=st.integers(0, 10_000))
    def release_unknown(self, name: str, token: int) -> None:
        m = self.model.get(name)
        if m is not None and token in m.holders:
            return
        assert self.table.release(name, token, now=self._tick()) == (None, [])

    @rule(name=st.sampled_from(NAMES), session=st.sampled_from(SESSIONS), one=st.booleans())
    def cancel(self, name: str, session: str, one: bool) -> None:
        m = self.model.get(name)
        mine = [r for r in (m.waiters if m else []) if self.arrival[r][1] == session]
        rid = mine[0] if (one and mine) else None
        gone = self.table.cancel(name, session, rid)
        expected = [rid] if rid is not None else mine
        assert [w.req_id for w in gone] == expected
        if m is not None:
            m.waiters = [r for r in m.waiters if r not in expected]
            # A cancel never grants: when not frozen, whoever waits waits for a full lock.
            self._forget(name)

    @rule(session=st.sampled_from(SESSIONS))
    def drop_session(self, session: str) -> None:
        released, granted = self.table.drop_session(session, now=self._tick())
        expected_released = {
            t for m in self.model.values() for t in m.holders if self.session_of[t] == session
        }
        assert {g.token for g in released} == expected_released
        by_name: dict[str, list[tuple[Waiter, Grant]]] = {}
        for w, g in granted:
            by_name.setdefault(g.name, []).append((w, g))
        for name in list(self.model):
            m = self.model[name]
            m.holders = [t for t in m.holders if self.session_of[t] != session]
            m.waiters = [r for r in m.waiters if self.arrival[r][1] != session]
            self._check_promoted(name, by_name.pop(name, []))
        assert not by_name, f"grants for locks nobody waited on: {by_name}"

    @precondition(lambda self: not self.table.frozen)
    @rule()
    def freeze(self) -> None:
        self.table.frozen = True

    @precondition(lambda self: self.table.frozen)
    @rule()
    def thaw(self) -> None:
        granted = self.table.thaw(now=self._tick())
        assert not self.table.frozen
        by_name: dict[str, list[tuple[Waiter, Grant]]] = {}
        for w, g in granted:
            by_name.setdefault(g.name, []).append((w, g))
        for name in list(self.model):
            self._check_promoted(name, by_name.pop(name, []))
        assert not by_name

    # --- invariants -----------------------------------------------------------------------
    @invariant()
    def table_matches_model(self) -> None:
        assert set(self.table.entries) == set(self.model), "empty entries must be removed"
        for name, entry in self.table.entries.items():
            m = self.model[name]
            assert entry.limit == m.limit
            assert list(entry.holders) == m.holders
            assert [w.req_id for w in entry.waiters] == m.waiters

    @invariant()
    def holders_within_limit_and_no_idle_waiters(self) -> None:
        for entry in self.table.entries.values():
            assert not entry.empty()
            assert len(entry.holders) <= entry.limit
            if entry.waiters and not self.table.frozen:
                assert len(entry.holders) == entry.limit, "someone waits for a free place"

    @invariant()
    def waiters_are_in_arrival_order(self) -> None:
        for entry in self.table.entries.values():
            arrivals = [(w.since, w.req_id) for w in entry.waiters]
            assert arrivals == sorted(arrivals), "a waiter is behind someone who came later"

    @invariant()
    def tokens_strictly_increase_in_grant_order(self) -> None:
        tokens = [t for _, t in self.grant_log]
        assert all(a < b for a, b in itertools.pairwise(tokens))
        for entry in self.table.entries.values():
            held = list(entry.holders)
            assert held == sorted(held)
            assert all(entry.holders[t].token == t for t in held)


TableMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_table_state_machine = TableMachine.TestCase
test_table_state_machine.__doc__ = (
    "After every random operation the table matches a strict-FIFO semaphore model: holders <= "
    "limit, tokens strictly increase in grant order, waiters stay in arrival order, empty "
    "entries are removed and freed places go to waiters in arrival order."
)
