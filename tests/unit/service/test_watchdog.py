"""Watchdog inside this process: deadlines, kicks, raising in the guarded thread, the report.

Exiting the process (the default on_stall) is covered with real processes in
tests/integration/service.
"""

from __future__ import annotations

import asyncio
import io
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import wait_until as wait_for

from heartline.errors import HeartlineError
from heartline.service import EXIT_WATCHDOG, Watchdog, WatchdogTimeout, watchdog
from heartline.service import _watchdog as impl


def monitors() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("heartline-watchdog")]


@pytest.fixture(autouse=True)
def no_monitor_left_behind() -> Iterator[None]:
    """Every test ends with no monitor thread running."""
    yield
    wait_for(lambda: not monitors(), timeout=5, what="the monitor threads to end")


def spin(seconds: float) -> None:
    """Stay busy in Python code (a stall the watchdog can interrupt at once)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def spin_until_interrupted() -> None:
    """A stall: only a WatchdogTimeout ends it (the test fails after 10 s)."""
    spin(10)
    raise AssertionError("the watchdog did not interrupt the stall")


# --- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf])
def test_timeout_must_be_positive_and_finite(timeout: float) -> None:
    """A timeout that is not a positive finite number is refused at construction."""
    with pytest.raises(ValueError, match="timeout"):
        Watchdog(timeout)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"on_stall": "ignore"}, "on_stall"), ({"exit_code": 256}, "exit_code"),
     ({"exit_code": -1}, "exit_code")],
)  # fmt: skip
def test_bad_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    """on_stall other than exit/raise and exit codes outside 0..255 raise ValueError."""
    with pytest.raises(ValueError, match=message):
        Watchdog(1.0, **kwargs)  # type: ignore[arg-type]


def test_watchdog_timeout_is_a_heartline_error_with_the_watchdog_exit_code() -> None:
    """WatchdogTimeout sits in heartline's error tree and carries EXIT_WATCHDOG (86)."""
    assert issubclass(WatchdogTimeout, HeartlineError)
    assert WatchdogTimeout.exit_code == EXIT_WATCHDOG == 86


# --- no stall --------------------------------------------------------------------------------


def test_a_quick_block_does_not_fire_and_leaves_no_thread() -> None:
    """A block that ends within the timeout neither fires nor leaves its monitor running."""
    buf = io.StringIO()
    with watchdog(5.0, on_stall="raise", file=buf) as wd:
        assert wd.active
        assert len(monitors()) == 1
    assert not wd.active
    assert not wd.fired
    assert monitors() == []
    assert buf.getvalue() == ""


def test_kicks_keep_a_long_block_alive() -> None:
    """A block three times longer than the timeout, kicking often, does not fire."""
    buf = io.StringIO()
    with Watchdog(0.2, on_stall="raise", file=buf) as wd:
        end = time.monotonic() + 0.6
        while time.monotonic() < end:
            time.sleep(0.01)
            wd.kick()
    assert not wd.fired
    assert buf.getvalue() == ""


def test_start_twice_is_refused_and_stop_is_idempotent() -> None:
    """start() on a running watchdog raises; stop() on a stopped one does nothing; it can be
    started again after a stop."""
    wd = Watchdog(5.0).start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            wd.start()
    finally:
        wd.stop()
    wd.stop()
    wd.start().stop()
    assert not wd.active


# --- raise in the guarded thread -------------------------------------------------------------


def test_raise_interrupts_a_busy_main_thread() -> None:
    """on_stall="raise" raises WatchdogTimeout inside the stalled block of the main thread,
    with the watchdog's name, timeout and how long it waited."""
    buf = io.StringIO()
    start = time.monotonic()
    with (
        pytest.raises(WatchdogTimeout) as info,
        watchdog(0.1, on_stall="raise", file=buf, name="spin"),
    ):
        spin_until_interrupted()
    assert time.monotonic() - start < 5
    err = info.value
    assert err.name == "spin"
    assert err.timeout == 0.1
    assert err.stalled_for is not None and err.stalled_for >= 0.1
    assert "watchdog 'spin': no kick for" in str(err)
    assert isinstance(err, WatchdogTimeout) and type(err).__name__ == "WatchdogTimeout"


def test_the_report_shows_where_the_guarded_thread_is_stuck() -> None:
    """The report names the watchdog, marks the guarded thread and shows the stalled function."""
    buf = io.StringIO()
    with pytest.raises(WatchdogTimeout), watchdog(0.1, on_stall="raise", file=buf, name="spin"):
        spin_until_interrupted()
    text = buf.getvalue()
    assert text.startswith("heartline: watchdog 'spin': no kick for ")
    assert "raising WatchdogTimeout in thread 'MainThread'" in text
    assert "Thread 'MainThread'" in text and "<-- guarded by the watchdog" in text
    assert "in spin_until_interrupted" in text
    assert "heartline-watchdog" not in text  # the monitor leaves itself out


def test_an_unnamed_watchdog_is_named_after_where_it_started() -> None:
    """Without a name, reports and errors say file:line of the with statement."""
    buf = io.StringIO()
    with pytest.raises(WatchdogTimeout) as info, watchdog(0.1, on_stall="raise", file=buf):
        spin_until_interrupted()
    assert info.value.name.startswith("test_watchdog.py:")


def test_raise_after_a_blocking_call_returns() -> None:
    """A block stuck in C code (time.sleep) gets the exception once the call returns, and nothing
    is left pending on the thread afterwards."""
    with pytest.raises(WatchdogTimeout), watchdog(0.1, on_stall="raise", file=io.StringIO()):
        time.sleep(0.4)
    total = 0
    for i in range(200_000):  # plenty of bytecode boundaries for a stray exception to show up
        total += i
    assert total == sum(range(200_000))


def test_raise_lands_in_the_thread_that_entered_the_block() -> None:
    """A worker thread's stalled block gets the exception; the main thread does not."""
    caught: list[BaseException] = []

    def worker() -> None:
        try:
            with watchdog(0.1, on_stall="raise", file=io.StringIO()):
                spin_until_interrupted()
        except WatchdogTimeout as exc:
            caught.append(exc)

    t = threading.Thread(target=worker, name="stuck-worker")
    t.start()
    t.join(timeout=10)
    assert not t.is_alive()
    assert len(caught) == 1


def test_an_exception_handled_in_the_block_is_not_raised_again() -> None:
    """Code that catches the WatchdogTimeout inside the block goes on; leaving the block does
    not raise a second one."""
    with watchdog(0.1, on_stall="raise", file=io.StringIO()) as wd:
        try:
            spin_until_interrupted()
        except WatchdogTimeout:
            handled = True
    assert handled
    assert wd.fired


def test_a_block_that_ends_before_the_exception_arrives_raises_on_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the watchdog fired but its exception is still pending as the block ends, the block's
    exit clears it and raises it right there (nothing stray later)."""
    calls: list[tuple[int, object]] = []

    def hold_back(ident: int, exc: type[BaseException] | None) -> bool:
        calls.append((ident, exc))
        return True

    monkeypatch.setattr(impl, "_set_async_exc", hold_back)
    wd = watchdog(0.05, on_stall="raise", file=io.StringIO(), name="late")
    with pytest.raises(WatchdogTimeout) as info, wd:
        wait_for(lambda: calls, timeout=5, what="the watchdog to fire")
    assert wd.fired
    me = threading.get_ident()
    assert [c[0] for c in calls] == [me, me]
    assert calls[1][1] is None  # the pending exception was cleared
    assert info.value.name == "late"


def test_the_blocks_own_exception_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """A block that fails with its own exception after the watchdog fired keeps that exception."""
    calls: list[object] = []
    monkeypatch.setattr(impl, "_set_async_exc", lambda ident, exc: calls.append(exc) or True)
    with pytest.raises(KeyError), watchdog(0.05, on_stall="raise", file=io.StringIO()):
        wait_for(lambda: calls, timeout=5, what="the watchdog to fire")
        raise KeyError("own")
    assert calls[-1] is None


def test_stop_from_another_thread_never_fires() -> None:
    """A long-lived watchdog stopped in time by another thread does not fire."""
    wd = Watchdog(0.2, on_stall="raise", file=io.StringIO()).start()
    stopper = threading.Thread(target=wd.stop)
    stopper.start()
    stopper.join()
    assert not wd.active and not wd.fired


def test_a_long_lived_watchdog_raises_in_the_thread_that_started_it() -> None:
    """start() from the main thread, kicks from a worker that then hangs: the main thread, which
    waits for the worker, gets the exception; the report shows the worker's stuck function."""
    buf = io.StringIO()
    release = threading.Event()
    wd = Watchdog(0.2, on_stall="raise", file=buf, name="jobs").start()

    def stuck_in_worker() -> None:
        release.wait(10)

    def worker() -> None:
        for _ in range(5):
            wd.kick()
            time.sleep(0.01)
        stuck_in_worker()

    t = threading.Thread(target=worker, name="job-worker")
    t.start()
    try:
        with pytest.raises(WatchdogTimeout):
            while t.is_alive():
                t.join(0.01)
    finally:
        release.set()
        t.join()
        wd.stop()
    text = buf.getvalue()
    assert "Thread 'job-worker'" in text
    assert "in stuck_in_worker" in text


def test_report_to_a_path_appends_text_and_raw_dump(tmp_path: Path) -> None:
    """file=<path> appends the report and faulthandler's raw dump to that file."""
    path = tmp_path / "stall.txt"
    path.write_text("earlier content\n")
    with pytest.raises(WatchdogTimeout), watchdog(0.1, on_stall="raise", file=path):
        spin_until_interrupted()
    text = path.read_text()
    assert text.startswith("earlier content\nheartline: watchdog")
    assert "in spin_until_interrupted" in text
    assert "Raw dump (faulthandler, most recent call first):" in text


def test_report_file_is_created_private(tmp_path: Path) -> None:
    """A report file the watchdog creates is readable by its owner only."""
    path = tmp_path / "new.txt"
    with pytest.raises(WatchdogTimeout), watchdog(0.1, on_stall="raise", file=str(path)):
        spin_until_interrupted()
    assert path.stat().st_mode & 0o777 == 0o600


# --- decorator -------------------------------------------------------------------------------


def test_decorator_guards_each_call_with_its_own_watchdog() -> None:
    """@watchdog keeps the function's name and result; every call gets a fresh watchdog named
    after the function, so consecutive and stalled calls do not interfere."""
    buf = io.StringIO()

    @watchdog(0.1, on_stall="raise", file=buf)
    def compute(x: int, *, stall: bool = False) -> int:
        """Doubles x."""
        if stall:
            spin_until_interrupted()
        return 2 * x

    assert compute.__name__ == "compute" and compute.__doc__ == "Doubles x."
    assert compute(1) == 2
    assert compute(2) == 4
    with pytest.raises(WatchdogTimeout) as info:
        compute(3, stall=True)
    assert info.value.name.endswith("compute")
    assert compute(4) == 8


def test_decorator_on_a_coroutine_function() -> None:
    """@watchdog on an async function guards each awaited call."""

    @watchdog(5.0, on_stall="raise")
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    assert asyncio.iscoroutinefunction(fetch)
    assert asyncio.run(fetch(1)) == 2


# --- asyncio ---------------------------------------------------------------------------------


def test_a_watchdog_in_a_coroutine_reports_the_loops_tasks() -> None:
    """Started inside a coroutine, the watchdog records the running loop; its report lists the
    loop's tasks with their await chains."""
    buf = io.StringIO()

    async def waiting_helper() -> None:
        await asyncio.sleep(30)

    async def main() -> None:
        helper = asyncio.create_task(waiting_helper(), name="helper-task")
        await asyncio.sleep(0)
        try:
            async with watchdog(0.1, on_stall="raise", file=buf):
                spin_until_interrupted()
        finally:
            helper.cancel()

    with pytest.raises(WatchdogTimeout):
        asyncio.run(main())
    text = buf.getvalue()
    assert "asyncio tasks of _UnixSelectorEventLoop" in text
    assert "Task 'helper-task' coroutine " in text
    assert "in waiting_helper" in text
    assert "<-- running now" in text
