"""LoopWatchdog inside this process: a healthy loop is left alone, a blocked one is caught."""

from __future__ import annotations

import asyncio
import io
import math
import threading
import time
from collections.abc import Iterator

import pytest
from tests.helpers import wait_until as wait_for

from heartline.service import LoopWatchdog, WatchdogTimeout, loop_watchdog


def monitors() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("heartline-loop-watchdog")]


@pytest.fixture(autouse=True)
def no_monitor_left_behind() -> Iterator[None]:
    """Every test ends with no monitor thread running."""
    yield
    wait_for(lambda: not monitors(), timeout=5, what="the monitor threads to end")


def block_the_loop() -> None:
    """Busy Python code run from a coroutine: the loop cannot turn until it returns."""
    end = time.monotonic() + 10
    while time.monotonic() < end:
        pass
    raise AssertionError("the loop watchdog did not interrupt the blocked loop")


@pytest.mark.parametrize("max_lag", [0, -0.5, math.nan, math.inf])
def test_max_lag_must_be_positive_and_finite(max_lag: float) -> None:
    """A max_lag that is not a positive finite number is refused at construction."""
    with pytest.raises(ValueError, match="max_lag"):
        LoopWatchdog(max_lag)


def test_start_needs_a_loop() -> None:
    """Outside a running loop and without loop=, start() says what it needs."""
    with pytest.raises(RuntimeError, match="running event loop"):
        LoopWatchdog(0.5).start()
    assert monitors() == []


def test_a_healthy_loop_is_left_alone() -> None:
    """A loop that keeps turning for several max_lag periods never fires; its heartbeats run
    far less late than max_lag."""
    buf = io.StringIO()

    async def main() -> LoopWatchdog:
        async with loop_watchdog(0.2, on_stall="raise", file=buf) as wd:
            end = time.monotonic() + 0.8
            while time.monotonic() < end:
                await asyncio.sleep(0.01)
                time.sleep(0.005)  # short blocking steps are fine
        return wd

    wd = asyncio.run(main())
    assert not wd.fired
    assert 0 <= wd.worst_lag < 0.2
    assert buf.getvalue() == ""


def test_a_blocked_loop_raises_in_the_blocking_coroutine() -> None:
    """on_stall="raise": the code that blocks the loop gets WatchdogTimeout; the report marks
    the loop's thread and the running task, and shows the blocking function."""
    buf = io.StringIO()

    async def stuck_coroutine() -> None:
        await asyncio.sleep(0)
        block_the_loop()

    async def main() -> None:
        async with loop_watchdog(0.1, on_stall="raise", file=buf, name="api"):
            await asyncio.create_task(stuck_coroutine(), name="stuck-task")

    start = time.monotonic()
    with pytest.raises(WatchdogTimeout) as info:
        asyncio.run(main())
    assert time.monotonic() - start < 5
    assert info.value.name == "api"
    assert "the event loop is blocked" in str(info.value)
    text = buf.getvalue()
    assert text.startswith("heartline: loop-watchdog 'api': the event loop is blocked")
    assert "<-- runs the blocked event loop" in text
    assert "Task 'stuck-task' coroutine " in text
    assert "<-- running now: the loop waits for it to return" in text
    assert "in stuck_coroutine" in text and "in block_the_loop" in text


def test_stop_ends_the_heartbeat() -> None:
    """After stop() the heartbeat no longer runs on the loop and the monitor is gone."""

    async def main() -> tuple[float, float]:
        wd = LoopWatchdog(0.05).start()
        await asyncio.sleep(0.1)
        wd.stop()
        before = wd._last_kick
        await asyncio.sleep(0.2)
        return before, wd._last_kick

    before, after = asyncio.run(main())
    assert before == after
    assert monitors() == []


def test_a_heartbeat_left_from_an_earlier_start_does_nothing() -> None:
    """After stop() and start(), a heartbeat of the first run neither kicks nor reschedules, so
    only one heartbeat chain runs."""

    async def main() -> None:
        wd = LoopWatchdog(0.1).start()
        old = wd._generation
        wd.stop()
        wd.start()
        handle, kicked = wd._handle, wd._last_kick
        wd._beat(old)
        assert wd._handle is handle
        assert wd._last_kick == kicked
        wd.stop()

    asyncio.run(main())


def test_watch_a_loop_running_in_another_thread() -> None:
    """With loop=, start() and stop() work from another thread; on_stall="raise" lands in the
    loop's thread, inside the blocking callback."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="loop-thread")
    runner.start()
    outcome: list[str] = []
    buf = io.StringIO()
    try:
        wd = LoopWatchdog(0.1, loop=loop, on_stall="raise", file=buf).start()
        wait_for(lambda: wd._target is not None, timeout=5, what="the first heartbeat")

        def blocking_callback() -> None:
            try:
                block_the_loop()
            except WatchdogTimeout:
                outcome.append(threading.current_thread().name)

        loop.call_soon_threadsafe(blocking_callback)
        wait_for(lambda: outcome, timeout=10, what="the exception in the loop thread")
        wd.stop()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join()
        loop.close()
    assert outcome == ["loop-thread"]
    assert "Thread 'loop-thread'" in buf.getvalue()
    assert "in blocking_callback" in buf.getvalue()
