"""Watchdogs in real processes: stalled programs end with EXIT_WATCHDOG and say where they were
stuck; healthy ones run to the end."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from heartline.service import EXIT_WATCHDOG

#: A run that stalls should end within a second or so; this only bounds a broken test.
LIMIT = 20


Run = Callable[[str], "subprocess.CompletedProcess[str]"]


@pytest.fixture
def run_py(tmp_path: Path) -> Run:
    """Run a program (saved as prog.py, so reports show its source lines) in a fresh
    interpreter; give its exit code, stdout and stderr."""

    def run(code: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "prog.py"
        path.write_text(textwrap.dedent(code).lstrip("\n"))
        return subprocess.run(
            [sys.executable, str(path)], capture_output=True, text=True, timeout=LIMIT
        )

    return run


def test_a_stalled_block_ends_the_process_with_the_watchdog_code(run_py: Run) -> None:
    """A `with watchdog(0.3)` block stuck in time.sleep ends the process with EXIT_WATCHDOG
    soon after 0.3 s; stderr holds the report with the stalled function."""
    start = time.monotonic()
    proc = run_py("""
        import time
        from heartline.service import watchdog

        def stalled_function():
            time.sleep(60)

        with watchdog(0.3):
            stalled_function()
    """)
    elapsed = time.monotonic() - start
    assert proc.returncode == EXIT_WATCHDOG == 86, proc.stderr
    assert elapsed < 10
    assert "heartline: watchdog 'prog.py:7': no kick for 0.3" in proc.stderr
    assert "ending the process with exit code 86" in proc.stderr
    assert "<-- guarded by the watchdog" in proc.stderr
    assert ", in stalled_function\n    time.sleep(60)" in proc.stderr
    assert "Raw dump (faulthandler" in proc.stderr


def test_a_worker_that_stops_kicking_is_reported_by_name(run_py: Run) -> None:
    """A long-lived Watchdog kicked by a worker thread fires once the worker hangs; the report
    shows the worker thread by name in the function where it hangs."""
    proc = run_py("""
        import threading, time
        from heartline.service import Watchdog

        wd = Watchdog(0.3, name="jobs").start()

        def hang_in_worker():
            threading.Event().wait()

        def worker():
            for _ in range(20):
                wd.kick()
                time.sleep(0.01)
            hang_in_worker()

        t = threading.Thread(target=worker, name="job-worker")
        t.start()
        t.join()
    """)
    assert proc.returncode == EXIT_WATCHDOG, proc.stderr
    assert "watchdog 'jobs'" in proc.stderr
    assert "Thread 'job-worker' (ident 0x" in proc.stderr
    assert "in hang_in_worker" in proc.stderr


def test_exit_code_and_flushed_stdout(run_py: Run) -> None:
    """exit_code= sets the code; what the program printed before (block-buffered into a pipe) is
    flushed before the process ends."""
    proc = run_py("""
        import time
        from heartline.service import watchdog

        print("started")
        with watchdog(0.2, exit_code=42):
            time.sleep(60)
    """)
    assert proc.returncode == 42, proc.stderr
    assert proc.stdout == "started\n"


def test_file_option_takes_the_report(run_py: Run, tmp_path: Path) -> None:
    """file=<path> receives the report; stderr stays clean."""
    report = tmp_path / "stall-report.txt"
    proc = run_py(f"""
        import time
        from heartline.service import watchdog

        def stalled_function():
            time.sleep(60)

        with watchdog(0.2, file={str(report)!r}):
            stalled_function()
    """)
    assert proc.returncode == EXIT_WATCHDOG, proc.stderr
    assert proc.stderr == ""
    text = report.read_text()
    assert "heartline: watchdog" in text
    assert "in stalled_function" in text


def test_raise_reaches_the_main_thread(run_py: Run) -> None:
    """on_stall="raise" raises WatchdogTimeout in the main thread's stalled block; the program
    handles it and exits normally, with the report on stderr."""
    proc = run_py("""
        import threading, time
        from heartline.service import watchdog, WatchdogTimeout

        def busy_loop():
            while True:
                time.sleep(0.01)

        try:
            with watchdog(0.3, on_stall="raise"):
                busy_loop()
        except WatchdogTimeout as exc:
            print("caught in", threading.current_thread().name, exc.timeout)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "caught in MainThread 0.3\n"
    assert "raising WatchdogTimeout in thread 'MainThread'" in proc.stderr
    assert "in busy_loop" in proc.stderr


def test_an_unhandled_raise_ends_the_program_with_a_traceback(run_py: Run) -> None:
    """An unhandled WatchdogTimeout ends the program like any exception (exit 1), with the
    traceback through the stalled code."""
    proc = run_py("""
        from heartline.service import watchdog

        def spin():
            while True:
                pass

        with watchdog(0.2, on_stall="raise", name="spinner"):
            spin()
    """)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("heartline.service._watchdog.WatchdogTimeout: watchdog 'spinner'")
    assert "in spin\n" in proc.stderr


def test_a_blocked_event_loop_is_caught_and_named(run_py: Run) -> None:
    """A coroutine that blocks the loop in time.sleep: the loop watchdog ends the process with
    EXIT_WATCHDOG and the report names the blocking coroutine and its task."""
    proc = run_py("""
        import asyncio, time
        from heartline.service import loop_watchdog

        async def blocking_coroutine():
            await asyncio.sleep(0.1)
            time.sleep(60)

        async def main():
            async with loop_watchdog(0.3):
                await asyncio.create_task(blocking_coroutine(), name="blocker")

        asyncio.run(main())
    """)
    assert proc.returncode == EXIT_WATCHDOG, proc.stderr
    assert "the event loop is blocked" in proc.stderr
    assert "Task 'blocker' coroutine blocking_coroutine()  <-- running now" in proc.stderr
    assert ", in blocking_coroutine\n    time.sleep(60)" in proc.stderr


def test_a_blocked_event_loop_raises_in_the_blocking_task(run_py: Run) -> None:
    """With on_stall="raise" the blocking task fails with WatchdogTimeout and the loop goes on."""
    proc = run_py("""
        import asyncio, time
        from heartline.service import loop_watchdog, WatchdogTimeout

        async def blocking_coroutine():
            while True:
                time.sleep(0.01)

        async def main():
            async with loop_watchdog(0.3, on_stall="raise"):
                try:
                    await asyncio.create_task(blocking_coroutine())
                except WatchdogTimeout:
                    print("blocker failed")
                await asyncio.sleep(0.05)
                print("loop still turns")

        asyncio.run(main())
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "blocker failed\nloop still turns\n"
    assert "in blocking_coroutine" in proc.stderr


@pytest.mark.parametrize("kind", ["watchdog", "loop"])
def test_a_healthy_program_is_not_killed(run_py: Run, kind: str) -> None:
    """A program that keeps kicking (or keeps its loop turning) for five timeouts runs to the
    end, exit 0 and nothing on stderr."""
    if kind == "watchdog":
        code = """
            import time
            from heartline.service import watchdog

            with watchdog(0.2) as wd:
                end = time.monotonic() + 1.0
                while time.monotonic() < end:
                    time.sleep(0.02)
                    wd.kick()
            print("done")
        """
    else:
        code = """
            import asyncio, time
            from heartline.service import loop_watchdog

            async def main():
                async with loop_watchdog(0.2) as wd:
                    end = time.monotonic() + 1.0
                    while time.monotonic() < end:
                        await asyncio.sleep(0.02)
                print("done", wd.worst_lag < 0.2)

            asyncio.run(main())
        """
    proc = run_py(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("done")
    assert "False" not in proc.stdout
    assert proc.stderr == ""


def test_importing_the_library_starts_and_loads_nothing_heavy(run_py: Run) -> None:
    """`import heartline.service` starts no thread and pulls in neither asyncio, logging, socket,
    ctypes nor inspect: programs pay for what they use."""
    proc = run_py("""
        import sys, threading
        import heartline.service
        from heartline.service import notify, watchdog

        heavy = ["asyncio", "logging", "socket", "ctypes", "inspect", "traceback"]
        print(sorted(m for m in heavy if m in sys.modules), threading.active_count())
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[] 1\n"


def test_a_forked_child_does_not_inherit_active_watchdogs(run_py: Run) -> None:
    """A child forked inside a guarded block has no monitor: it outlives the parent's timeout,
    and can start a watchdog of its own, which fires in the child only."""
    proc = run_py("""
        import os, threading, time
        from heartline.service import watchdog

        with watchdog(5.0) as wd:
            pid = os.fork()
            if pid == 0:
                assert not wd.active
                assert not [t for t in threading.enumerate() if t.name.startswith("heartline")]
                with watchdog(0.2, exit_code=33):
                    time.sleep(60)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            print("child", os.waitstatus_to_exitcode(status), "parent active", wd.active)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "child 33 parent active True\n"
