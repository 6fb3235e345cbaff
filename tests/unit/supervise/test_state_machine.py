"""The program state machine in virtual time: real Supervisor and Program, fake processes.

Every scenario runs its timers on a virtual clock (heartline.testing), so a watchdog of 10 s, a
stop timeout of 30 s or a five-minute cool-down take milliseconds, and each step is asserted at
the exact virtual moment it must happen. Invalid transitions raise (strict mode).
"""

from __future__ import annotations

import asyncio
import signal
import textwrap
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from heartline.config import parse_config
from heartline.supervise import Program, State, Supervisor, _states
from heartline.testing import FakeLauncher, FakeProcess, VirtualClock, run_until, virtual_loop

T0 = 1000.0  # the virtual clock's start


@dataclass
class World:
    clock: VirtualClock
    loop: asyncio.AbstractEventLoop
    launcher: FakeLauncher
    sup: Supervisor | None = None
    #: (program, old state, new state, virtual time) for every change.
    changes: list[tuple[str, State, State, float]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    _last: dict[str, State] = field(default_factory=dict)

    def start(self, programs: str, *, seats: FakeSeats | None = None) -> Supervisor:
        config = parse_config(textwrap.dedent(programs))
        sup = Supervisor(
            config.programs,
            loop=self.loop,
            log_dir=None,
            capture=False,
            launcher=self.launcher,
            clock=self.clock,
            rng=lambda: 0.5,  # no jitter: delays are exact
        )
        sup.seats = seats
        for name in sup.programs:
            self._last[name] = State.STOPPED
        sup.listeners.append(self._note)
        self.sup = sup
        self.run(sup.start(["all"]))
        return sup

    def _note(self, p: Program) -> None:
        old = self._last.get(p.spec.name, State.STOPPED)
        self.changes.append((p.spec.name, old, p.state, self.clock.now))
        self._last[p.spec.name] = p.state

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass (every timer due meanwhile runs)."""
        self.run(asyncio.sleep(seconds))

    def until(self, cond: Callable[[], bool], limit: float = 86400.0) -> float:
        """Run from timer to timer until ``cond``; the virtual time it became true."""
        return run_until(self.loop, cond, limit=limit)

    def prog(self, name: str = "app") -> Program:
        assert self.sup is not None
        return self.sup.programs[name]

    def transitions(self) -> set[tuple[State, State]]:
        return {(old, new) for _name, old, new, _t in self.changes if old is not new}


class FakeSeats:
    """The cluster's seat keeper, reduced to which singletons this host holds (the real one,
    over real backends, is tested in tests/integration/cluster/test_singleton_*)."""

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.token = 0

    def grant(self, name: str) -> None:
        self.held.add(name)
        self.token += 1

    def seat(self, name: str) -> str | None:
        return None if name in self.held else "runs on h9 (token 7)"

    def env(self, name: str) -> dict[str, str]:
        return {"HEARTLINE_LOCK_TOKEN": str(self.token)} if name in self.held else {}

    def info(self, name: str) -> Any:
        return {"lock": name, "holder": None, "token": None, "standby": [], "lease": 5.0}


@pytest.fixture
def world() -> Iterator[World]:
    clock = VirtualClock(start=T0)
    loop = virtual_loop(clock)
    w = World(clock, loop, FakeLauncher(loop))
    loop.set_exception_handler(lambda _loop, ctx: w.errors.append(ctx))
    _states.STRICT = True
    try:
        yield w
    finally:
        _states.STRICT = False
        if w.sup is not None:
            for p in w.sup.programs.values():
                for proc in w.launcher.spawned:
                    if proc.alive:
                        proc.die(signal.SIGKILL)
                p.close()
            w.sup.notify.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    assert w.errors == [], w.errors


BASE = """
    [programs.app]
    command = ["/bin/app"]
    backoff = { initial = "1s", max = "8s", factor = 2.0, jitter = 0.0, reset_after = "10s" }
    crash_loop = { max_starts = 4, window = "60s", cooldown = "5m" }
"""


def _signals(proc: FakeProcess) -> list[tuple[float, str]]:
    return [(round(t - T0, 6), signal.Signals(s).name) for t, s in proc.signals]


# --- scenarios (each a test, and together the whole transition table) ----------------------


def scenario_crash_backoff_fatal_cooldown(w: World) -> None:
    """running -> crash: an immediate restart, then back-off 1 s, 2 s; the crash-loop limit
    makes it fatal; after the five-minute cool-down it starts again."""
    w.start(BASE)
    p = w.prog()
    assert p.state is State.RUNNING and len(w.launcher.spawned) == 1
    w.launcher.last.exit(1)
    w.wait(0)
    assert p.state is State.RUNNING and len(w.launcher.spawned) == 2  # immediate restart
    w.launcher.last.exit(1)
    w.wait(0)
    assert p.state is State.BACKOFF and p.retry_at == pytest.approx(w.clock.now + 1.0)
    t = w.until(lambda: len(w.launcher.spawned) == 3)
    assert t == pytest.approx(T0 + 1.0, abs=0.002)
    w.launcher.last.exit(1)
    w.wait(0)
    assert p.state is State.BACKOFF and p.retry_at == pytest.approx(w.clock.now + 2.0)
    w.until(lambda: len(w.launcher.spawned) == 4)
    w.launcher.last.exit(1)
    w.wait(0)
    assert p.state is State.FATAL and "crash loop: 4 starts within 60s" in p.detail
    fatal_at = w.clock.now
    t = w.until(lambda: len(w.launcher.spawned) == 5)
    assert t == pytest.approx(fatal_at + 300.0, abs=0.002)
    assert p.state is State.RUNNING and p.restarts == 4


def scenario_watchdog_chain(w: World) -> None:
    """A program that stops beating: at the watchdog deadline it is asked for a report (it
    catches USR2), TERM follows report_wait later, it ignores TERM, so KILL follows
    stop_timeout later; the policy then restarts it at once (its first failure)."""
    w.launcher.behaviour = {"catches": frozenset({signal.SIGUSR2}),
                            "ignores": frozenset({signal.SIGTERM})}  # fmt: skip
    w.start(BASE + '    watchdog = "10s"\n    report_wait = "2s"\n    stop_timeout = "30s"\n')
    p = w.prog()
    first = w.launcher.last
    w.until(lambda: not first.alive)
    assert _signals(first) == [(10.0, "SIGUSR2"), (12.0, "SIGTERM"), (42.0, "SIGKILL")]
    w.wait(0)
    assert p.last_exit is not None and p.last_exit.reason == "watchdog"
    assert p.last_stop_killed is True
    assert len(w.launcher.spawned) == 2 and p.state is State.RUNNING and p.restarts == 1


def scenario_watchdog_without_report_handler(w: World) -> None:
    """A program that does not catch USR2 gets no report signal: TERM at the deadline."""
    w.launcher.behaviour = {"term_delay": 0.5}
    w.start(BASE + '    watchdog = "10s"\n    report_wait = "2s"\n')
    first = w.launcher.last
    w.until(lambda: not first.alive)
    assert _signals(first) == [(10.0, "SIGTERM")]
    w.wait(0)
    assert w.prog().last_stop_killed is False


def scenario_heartbeats_keep_it_running(w: World) -> None:
    """Beats every 5 s with a 10 s watchdog: an hour passes without a restart."""
    w.start(BASE + '    watchdog = "10s"\n')
    p = w.prog()
    for _ in range(720):
        w.wait(5)
        p.last_beat = w.clock.now  # what the notify receiver does for WATCHDOG=1
    assert len(w.launcher.spawned) == 1 and p.state is State.RUNNING


def scenario_operator_stop_graceful_and_killed(w: World) -> None:
    """stop: TERM; a program that takes 3 s stops then; one that ignores TERM is killed at
    stop_timeout, and the record says so. A stopped program is started again by hand."""
    w.launcher.behaviour = {"term_delay": 3.0}
    w.start(BASE + '    stop_timeout = "20s"\n')
    p = w.prog()
    began = w.clock.now
    result = w.run(p.stop())
    assert result["killed"] is False and w.clock.now == pytest.approx(began + 3.0, abs=0.002)
    assert p.state is State.STOPPED
    w.launcher.behaviour = {"ignores": frozenset({signal.SIGTERM})}
    p.start()
    w.wait(0)
    assert p.state is State.RUNNING
    began = w.clock.now
    result = w.run(p.stop())
    assert result["killed"] is True and w.clock.now == pytest.approx(began + 20.0, abs=0.002)
    assert p.state is State.STOPPED and p.last_stop_killed is True


def scenario_start_timeout_and_ready(w: World) -> None:
    """ready = notify: no READY=1 within start_timeout stops it (start-timeout); READY=1 in
    time makes it running."""
    w.start(BASE + '    ready = "notify"\n    start_timeout = "30s"\n')
    p = w.prog()
    first = w.launcher.last
    assert p.state is State.STARTING
    w.until(lambda: not first.alive)
    assert _signals(first) == [(30.0, "SIGTERM")]
    w.wait(0)
    assert p.last_exit is not None and p.last_exit.reason == "start-timeout"
    assert p.state is State.STARTING and len(w.launcher.spawned) == 2
    p.on_notify({"READY": "1"})
    assert p.state is State.RUNNING


def scenario_spawn_failures_go_fatal(w: World) -> None:
    """An exec that fails is retried no faster than once a second, and the third failure in a
    row is fatal with the reason."""
    w.launcher.fail = "/bin/app: No such file or directory"
    w.start(BASE)
    p = w.prog()
    assert p.state is State.BACKOFF
    t = w.until(lambda: p.state is State.FATAL)
    assert t == pytest.approx(T0 + 2.0, abs=0.003)
    assert "cannot start (3 tries): /bin/app: No such file" in p.detail
    assert p.restarts == 2


def scenario_clean_exit_stays_down_and_restarts_by_hand(w: World) -> None:
    """on-failure: exit 0 leaves it exited; start brings it back; stop from exited is stopped."""
    w.start(BASE)
    p = w.prog()
    w.launcher.last.exit(0)
    w.wait(0)
    assert p.state is State.EXITED and p.detail == "exited successfully"
    p.start()
    w.wait(0)
    assert p.state is State.RUNNING
    w.launcher.last.exit(0)
    w.wait(0)
    w.run(p.stop())
    assert p.state is State.STOPPED


def scenario_stop_during_backoff_and_fatal(w: World) -> None:
    """A stop while a restart is pending (back-off, fatal) cancels it: stopped, nothing runs."""
    w.start(BASE)
    p = w.prog()
    for _ in range(2):
        w.launcher.last.exit(1)
        w.wait(0)
    assert p.state is State.BACKOFF
    w.run(p.stop())
    assert p.state is State.STOPPED
    w.wait(3600)
    assert len(w.launcher.spawned) == 2
    p.start()
    w.wait(0)
    for _ in range(4):
        n = len(w.launcher.spawned)
        w.launcher.last.exit(1)
        w.until(lambda n=n: len(w.launcher.spawned) > n or p.state is State.FATAL)
    assert p.state is State.FATAL
    w.run(p.stop())
    assert p.state is State.STOPPED


def scenario_dependencies_wait(w: World) -> None:
    """requires: the dependent waits in starting until what it needs runs; stopped while
    waiting, it is stopped."""
    w.launcher.behaviour = {}
    w.start(
        BASE
        + """
    ready = "notify"
    [programs.web]
    command = ["/bin/web"]
    requires = ["app"]
    [programs.late]
    command = ["/bin/late"]
    requires = ["app"]
    """
    )
    web, late = w.prog("web"), w.prog("late")
    assert web.state is State.STARTING and web.pid is None and "waiting for app" in web.detail
    w.run(late.stop())
    assert late.state is State.STOPPED
    w.prog().on_notify({"READY": "1"})
    w.wait(0)
    assert web.state is State.RUNNING and late.state is State.STOPPED


def scenario_hang_under_restart_never_ends_exited(w: World) -> None:
    """restart = never: a program stopped for its missed watchdog ends exited, the exit
    recorded as the watchdog's (stopping -> exited)."""
    w.launcher.behaviour = {"term_delay": 1.0}
    w.start(BASE + '    watchdog = "5s"\n    restart = "never"\n')
    p = w.prog()
    w.until(lambda: p.state is State.EXITED)
    assert p.last_exit is not None and p.last_exit.reason == "watchdog"


def scenario_repeated_hangs_back_off_then_go_fatal(w: World) -> None:
    """A program that hangs every time: the first watchdog restart is immediate, the next ones
    back off (1 s, 2 s), and the crash-loop limit finally holds it in fatal."""
    w.start(BASE + '    watchdog = "5s"\n')
    p = w.prog()
    w.until(lambda: len(w.launcher.spawned) == 2)
    assert w.clock.now == pytest.approx(T0 + 5.0, abs=0.002)  # killed at 5 s, back at once
    w.until(lambda: p.state is State.BACKOFF)
    assert w.clock.now == pytest.approx(T0 + 10.0, abs=0.002)
    w.until(lambda: p.state is State.FATAL)
    assert p.last_exit is not None and p.last_exit.reason == "watchdog"
    assert "crash loop" in p.detail


def scenario_exits_before_it_is_ready(w: World) -> None:
    """ready = notify, and the program exits 0 before READY=1: exited (on-failure)."""
    w.start(BASE + '    ready = "notify"\n')
    p = w.prog()
    assert p.state is State.STARTING
    w.launcher.last.exit(0)
    w.wait(0)
    assert p.state is State.EXITED


SINGLETON = "[cluster]\n" + BASE + '    singleton = true\n    stop_timeout = "10s"\n'


def scenario_singleton_stands_by_until_granted_and_yields_in_time(w: World) -> None:
    """A singleton stands by until its host holds the lock, then runs with the token; when
    the lease is at risk it is stopped and SIGKILLed within the lease's margin (not after its
    10 s stop_timeout), and stands by again; an operator's stop ends its standing by."""
    seats = FakeSeats()
    w.start(SINGLETON, seats=seats)
    p = w.prog()
    assert p.state is State.STANDBY and p.detail == "runs on h9 (token 7)"
    assert w.launcher.spawned == []
    seats.grant("app")
    p.try_spawn()
    assert p.state is State.RUNNING and w.launcher.last.env["HEARTLINE_LOCK_TOKEN"] == "1"
    proc = w.launcher.last
    proc.ignores = frozenset({signal.SIGTERM})
    seats.held.discard("app")
    began = w.clock.now
    w.run(p.stand_by("its lease could not be renewed in time", kill_in=0.7))
    assert _signals(proc) == [(round(began - T0, 6), "SIGTERM"),
                              (round(began + 0.7 - T0, 6), "SIGKILL")]  # fmt: skip
    assert p.state is State.STANDBY and "renewed in time" in p.detail
    w.run(p.stop())
    assert p.state is State.STOPPED


def scenario_singleton_without_its_lock_never_restarts(w: World) -> None:
    """Whatever the restart policy says, a singleton whose lock this host lost stands by: in
    back-off, when its process ends (stopped by the fd holder while the daemon was frozen),
    before it was ready, and when its cool-down or an operator's start comes."""
    seats = FakeSeats()
    seats.grant("app")
    w.start(SINGLETON + '    ready = "notify"\n', seats=seats)
    p = w.prog()
    w.launcher.last.exit(1)  # immediate restart
    w.wait(0)
    w.launcher.last.exit(1)
    w.wait(0)
    assert p.state is State.BACKOFF
    seats.held.discard("app")
    w.run(p.stand_by("lost"))
    assert p.state is State.STANDBY and p.retry_at is None
    seats.grant("app")
    p.try_spawn()
    assert p.state is State.STARTING  # waits for READY=1
    seats.held.discard("app")
    w.launcher.last.die(signal.SIGTERM)
    w.wait(0)
    assert p.state is State.STANDBY
    seats.grant("app")
    p.try_spawn()
    p._became_ready()
    assert p.state is State.RUNNING
    seats.held.discard("app")
    w.launcher.last.exit(1)
    w.wait(0)
    assert p.state is State.STANDBY and len(w.launcher.spawned) == 4
    # exited, then started by hand without the lock
    seats.grant("app")
    p.try_spawn()
    w.launcher.last.exit(0)
    w.wait(0)
    assert p.state is State.EXITED
    seats.held.discard("app")
    p.start()
    assert p.state is State.STANDBY
    # fatal, then the cool-down ends without the lock
    seats.grant("app")
    p.try_spawn()
    while p.state is not State.FATAL:
        w.launcher.last.exit(1)
        w.until(lambda: (p.state in (State.FATAL, State.STARTING) and p.pid is not None)
                or p.state is State.FATAL)  # fmt: skip
    seats.held.discard("app")
    spawned = len(w.launcher.spawned)
    w.until(lambda: p.state is State.STANDBY)
    assert len(w.launcher.spawned) == spawned


SCENARIOS = [
    scenario_singleton_stands_by_until_granted_and_yields_in_time,
    scenario_singleton_without_its_lock_never_restarts,
    scenario_crash_backoff_fatal_cooldown,
    scenario_watchdog_chain,
    scenario_watchdog_without_report_handler,
    scenario_heartbeats_keep_it_running,
    scenario_operator_stop_graceful_and_killed,
    scenario_start_timeout_and_ready,
    scenario_spawn_failures_go_fatal,
    scenario_clean_exit_stays_down_and_restarts_by_hand,
    scenario_stop_during_backoff_and_fatal,
    scenario_dependencies_wait,
    scenario_hang_under_restart_never_ends_exited,
    scenario_repeated_hangs_back_off_then_go_fatal,
    scenario_exits_before_it_is_ready,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__.removeprefix("scenario_"))
def test_scenario(world: World, scenario: Callable[[World], None]) -> None:
    """Each scenario's docstring says what it checks."""
    scenario(world)


def test_the_scenarios_cover_the_transition_table() -> None:
    """Every transition the table allows happens in some scenario (adoption and restoring
    after a daemon crash aside, which the integration tests cover), and no other."""
    seen: set[tuple[State, State]] = set()
    for scenario in SCENARIOS:
        clock = VirtualClock(start=T0)
        loop = virtual_loop(clock)
        w = World(clock, loop, FakeLauncher(loop))
        loop.set_exception_handler(lambda _loop, ctx, w=w: w.errors.append(ctx))
        _states.STRICT = True
        try:
            scenario(w)
        finally:
            _states.STRICT = False
            if w.sup is not None:
                for p in w.sup.programs.values():
                    p.close()
                w.sup.notify.close()
            loop.close()
        assert w.errors == []
        seen |= w.transitions()
    allowed = {(a, b) for a, targets in _states.TRANSITIONS.items() for b in targets}
    after_a_crash = {(State.STOPPED, State.RUNNING), (State.STOPPED, State.EXITED),
                     (State.STOPPED, State.FATAL)}  # fmt: skip
    assert seen <= allowed
    assert allowed - after_a_crash - seen == set()


def test_an_invalid_transition_is_refused_in_strict_mode() -> None:
    """The table is enforced: stopped -> backoff raises (strict), and is only logged else."""
    _states.STRICT = True
    try:
        with pytest.raises(_states.InvalidTransition, match="stopped -> backoff"):
            _states.check_transition(State.STOPPED, State.BACKOFF)
    finally:
        _states.STRICT = False
    _states.check_transition(State.STOPPED, State.BACKOFF)  # logged, not raised
