"""Virtual time for tests: a clock that only moves when the event loop would wait, and fake
processes that exit and react to signals when a test says so.

With them a :class:`~heartline.supervise.Supervisor` runs its real state machine, timers and
restart policy in virtual time: a watchdog of 10 s, a stop timeout of 30 s and a five-minute
cool-down pass in a few milliseconds of real time, and every step happens at an exact moment.

    clock = VirtualClock()
    loop = virtual_loop(clock)
    launcher = FakeLauncher(loop)
    sup = Supervisor(programs, loop=loop, log_dir=None, capture=False,
                     launcher=launcher, clock=clock)

How it works: the loop's ``time()`` is the clock, and its selector, asked to wait ``t``
seconds while nothing is ready, advances the clock by ``t`` instead of sleeping. Real file
descriptors still work (they are polled without waiting); a wait for ever with nothing
scheduled is a deadlock in virtual time and raises.
"""

from __future__ import annotations

import asyncio
import itertools
import selectors
import signal
from collections.abc import Callable

from heartline.supervise import ExitInfo, SpawnFailed

#: Fake pids start above any pid Linux hands out (PID_MAX_LIMIT is 2**22), so nothing that
#: looks a pid up in /proc ever finds a real process for one.
_FAKE_PIDS = itertools.count(10_000_001)


class VirtualClock:
    """A :class:`heartline._util.Clock` that moves only when told (or when its loop waits)."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_800_000_000.0) -> None:
        self.now = start
        self._wall_offset = wall_start - start

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self._wall_offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self.now += seconds


class _VirtualSelector(selectors.DefaultSelector):
    """Polls real descriptors without waiting; a wait is a jump of the virtual clock."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError(
                "the virtual-time loop would wait for ever: nothing is scheduled and no "
                "descriptor is ready"
            )
        self.clock.advance(timeout)
        return []


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_VirtualSelector(clock))
        self._clock = clock

    def time(self) -> float:
        return self._clock.now

    def next_timer(self) -> float | None:
        """When the earliest pending timer is due (None: none is)."""
        # BaseEventLoop keeps its timers in _scheduled (a heap); this subclass reads it.
        scheduled: list[asyncio.TimerHandle] = getattr(self, "_scheduled", [])
        due = [h.when() for h in scheduled if not h.cancelled()]
        return min(due) if due else None


def virtual_loop(clock: VirtualClock) -> asyncio.AbstractEventLoop:
    """A new event loop whose time is ``clock`` (run it with ``loop.run_until_complete``)."""
    return _VirtualLoop(clock)


def run_until(
    loop: asyncio.AbstractEventLoop, condition: Callable[[], bool], *, limit: float = 86400.0
) -> float:
    """Run the virtual loop from timer to timer until ``condition()`` holds; the virtual time
    it first held at. Raises AssertionError when ``limit`` virtual seconds pass first."""
    if not isinstance(loop, _VirtualLoop):
        raise TypeError("run_until needs a loop made by virtual_loop()")
    end = loop.time() + limit
    while True:
        loop.run_until_complete(asyncio.sleep(0))
        if condition():
            return loop.time()
        due = loop.next_timer()
        if due is None or due > end:
            raise AssertionError(f"not true within {limit:g}s of virtual time")
        loop.run_until_complete(asyncio.sleep(max(0.0, due - loop.time())))


class FakeProcess:
    """A pretend program process. By default it dies of any stop signal at once; ``ignores``
    signals are ignored, ``catches`` ones are handled (recorded, the process lives on), and
    ``term_delay`` makes it take that long to exit after SIGTERM (a graceful shutdown)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        argv: list[str],
        *,
        ignores: frozenset[int] = frozenset(),
        catches: frozenset[int] = frozenset(),
        term_delay: float = 0.0,
    ) -> None:
        self.loop = loop
        self.argv = argv
        self.pid = next(_FAKE_PIDS)
        self.stdout: int | None = None
        self.stderr: int | None = None
        self.ignores = ignores
        self.catches_ = catches
        self.term_delay = term_delay
        #: Every signal sent to it or its group, in order, with the loop time it came at.
        self.signals: list[tuple[float, int]] = []
        self.exit_info: ExitInfo | None = None
        self.reaped = False
        self._on_exit: Callable[[], None] | None = None
        self.env: dict[str, str] = {}

    @property
    def alive(self) -> bool:
        return self.exit_info is None

    def exit(self, code: int = 0) -> None:
        """End it with exit code ``code`` (as if it returned from main)."""
        self._end(ExitInfo("exit", code=code))

    def die(self, sig: int) -> None:
        """End it by signal ``sig``."""
        self._end(ExitInfo("signal", signal=sig))

    def _end(self, info: ExitInfo) -> None:
        if self.exit_info is not None:
            return
        self.exit_info = info
        if self._on_exit is not None:
            self.loop.call_soon(self._on_exit)

    # --- the Process protocol ---------------------------------------------------------
    def watch(self, loop: asyncio.AbstractEventLoop, on_exit: Callable[[], None]) -> None:
        self._on_exit = on_exit
        if self.exit_info is not None:
            loop.call_soon(on_exit)

    def reap(self, before_reap: Callable[[], object]) -> ExitInfo | None:
        if self.exit_info is None or self.reaped:
            return None
        before_reap()
        self.reaped = True
        return self.exit_info

    def signal_group(self, sig: int) -> bool:
        return self.send(sig)

    def send(self, sig: int) -> bool:
        if self.exit_info is not None:
            return False
        self.signals.append((self.loop.time(), sig))
        if sig == signal.SIGKILL:
            self.die(sig)
        elif sig in self.ignores or sig in self.catches_:
            pass
        elif sig == signal.SIGTERM and self.term_delay > 0:
            self.loop.call_later(self.term_delay, self.exit, 0)
        else:
            self.die(sig)
        return True

    def catches(self, sig: int) -> bool:
        return sig in self.catches_

    def start_ticks(self) -> int | None:
        return None

    def environ(self, key: str) -> str | None:
        return self.env.get(key)

    def close(self) -> None:
        self._on_exit = None


class FakeLauncher:
    """Hands out :class:`FakeProcess` es; ``spawned`` lists them in order. Set ``behaviour``
    (keyword arguments of FakeProcess) for the next ones, or ``fail`` to make spawns fail with
    that reason (as an exec of a missing file would)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.spawned: list[FakeProcess] = []
        self.behaviour: dict[str, object] = {}
        self.fail: str | None = None

    @property
    def last(self) -> FakeProcess:
        return self.spawned[-1]

    def spawn(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str | None,
        user: str | None,
        group: str | None,
        umask: int | None,
        capture: bool,
        merge_stderr: bool,
    ) -> FakeProcess:
        if self.fail is not None:
            raise SpawnFailed(self.fail)
        proc = FakeProcess(self.loop, argv, **self.behaviour)  # type: ignore[arg-type]
        proc.env = dict(env)
        self.spawned.append(proc)
        return proc

    def adopt(self, pid: int, ticks: int | None, pipes: tuple[int, int]) -> FakeProcess | None:
        return None
