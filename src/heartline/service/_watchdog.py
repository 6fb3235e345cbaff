"""Watchdogs inside a program: notice code that stalls, say where it is stuck, then end it.

:class:`Watchdog` guards a block, a function or a long-running loop: it fires when nobody calls
:meth:`Watchdog.kick` for ``timeout`` seconds (a block or a call counts as one kick at entry).
:class:`LoopWatchdog` guards an asyncio event loop: it fires when a callback the loop should have
run is more than ``max_lag`` seconds late, which means some coroutine or callback blocks the loop.

When one fires it writes a report (every thread's stack and the await chain of every asyncio task
of the loops it knows) to stderr or to ``file``, then either ends the process with
``exit_code`` (:data:`EXIT_WATCHDOG` unless told otherwise) or, with ``on_stall="raise"``, raises
:class:`WatchdogTimeout` in the thread it guards.

**Costs.** One monitor thread per active watchdog, asleep on an event until the current deadline
(no polling); ``kick()`` stores a timestamp, without a lock. A loop watchdog also runs one small
callback on the loop every ``max_lag / 2`` seconds.

**Limits of on_stall="raise".** The exception is set asynchronously on the guarded thread
(``PyThreadState_SetAsyncExc``): Python raises it at the thread's next bytecode boundary. A thread
blocked in C code (``time.sleep``, a lock, a socket read, a long C computation) sees it only when
that call returns. ``WatchdogTimeout`` is an ``Exception``, so an ``except Exception`` inside the
guarded code can swallow it. A watchdog never installs signal handlers: those belong to the
application. If the guarded block ends after the watchdog fired but before the exception arrived,
the block's exit raises it instead, and nothing is left pending on the thread. A loop watchdog
raises only if the loop is still stalled once the report is written.

**Other limits.** The monitor needs the GIL to write its report: a thread that holds the GIL in
C code without ever releasing it stops the monitor too (``faulthandler.dump_traceback_later`` is
the tool for that case). A forked child inherits no active watchdog: start new ones in it.

The module stays whole above 600 lines: the block watchdog and the loop watchdog share their
monitor thread, report writing and the asynchronous raise, and a program that uses one imports
one module (this package loads only what a program asks for).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable

from heartline.errors import EXIT_WATCHDOG as _EXIT_WATCHDOG
from heartline.errors import HeartlineError
from heartline.service._stacks import format_report, write_report

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    # Type names only: asyncio alone would double the import time of heartline.service.
    import asyncio
    from types import TracebackType
    from typing import Literal, ParamSpec, TypeVar

    from heartline.service._stacks import ReportTarget

    OnStall = Literal["exit", "raise"]
    P = ParamSpec("P")
    R = TypeVar("R")

__all__ = [
    "EXIT_WATCHDOG",
    "LoopWatchdog",
    "Watchdog",
    "WatchdogTimeout",
    "loop_watchdog",
    "watchdog",
]

#: Exit code of a process a watchdog ended: outside the shell's (126-165) and sysexits' (64-78)
#: ranges and heartline's own CLI codes, so a supervisor can tell "stalled" from other failures.
EXIT_WATCHDOG = _EXIT_WATCHDOG  # heartline.errors.EXIT_CODES holds the one table

_monotonic = time.monotonic
#: Seconds the monitor gives the report (and stdio flushing) before it exits anyway.
_WRITE_GRACE = 5.0
#: Seconds stop() waits for a monitor that is writing its report.
_JOIN_GRACE = 10.0


class WatchdogTimeout(HeartlineError):
    """Code guarded by a watchdog stalled past its timeout (raised with ``on_stall="raise"``).

    ``name`` is the watchdog's name, ``timeout`` its limit in seconds and ``stalled_for`` the
    seconds it had waited when it fired.
    """

    exit_code = EXIT_WATCHDOG

    def __init__(
        self,
        message: str = "a watchdog fired",
        *,
        name: str = "",
        timeout: float | None = None,
        stalled_for: float | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.timeout = timeout
        self.stalled_for = stalled_for


#: Active monitors, so the reports can find every known event loop and a forked child can
#: forget them.
_active: set[_Monitor] = set()


class _Monitor:
    """A deadline (``_last_kick + _timeout``) watched by one thread, and what to do when it
    passes. Subclasses decide who kicks."""

    _kind = "watchdog"

    def __init__(
        self,
        timeout: float,
        *,
        on_stall: OnStall,
        exit_code: int,
        file: ReportTarget,
        name: str | None,
    ) -> None:
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"the timeout must be a positive number of seconds, not {timeout!r}")
        if on_stall not in ("exit", "raise"):
            raise ValueError(f"on_stall must be 'exit' or 'raise', not {on_stall!r}")
        if not 0 <= exit_code <= 255:
            raise ValueError(f"exit_code must be within 0..255, not {exit_code!r}")
        self._timeout = float(timeout)
        self.on_stall: OnStall = on_stall
        self.exit_code = exit_code
        self.file = file
        self._named = bool(name)
        #: Shown in reports and messages; by default where the watchdog was started (file:line).
        self.name = name or "unnamed"
        self._last_kick = 0.0
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._fired = False
        self._pending = False  # an exception was set on the target thread ...
        self._delivered = False  # ... and Python has raised it there
        self._stalled_for: float | None = None
        #: The thread on_stall="raise" raises in, and the event loop the report lists.
        self._target: int | None = None
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    @property
    def active(self) -> bool:
        """True while watching: from start() until stop(), or until it fired."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def fired(self) -> bool:
        """True once this watchdog has fired (until the next start())."""
        return self._fired

    def _start_monitor(self, target: int | None, loop: asyncio.AbstractEventLoop | None) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise RuntimeError(f"{self!r} is already running")
            if not self._named:
                self.name = _caller_location()
            self._target = target
            self._loop = weakref.ref(loop) if loop is not None else None
            self._stop_event = threading.Event()
            self._stopping = self._fired = self._pending = self._delivered = False
            self._stalled_for = None
            self._last_kick = _monotonic()
            self._thread = threading.Thread(
                target=self._watch, name=f"heartline-{self._kind}", daemon=True
            )
            _active.add(self)
            self._thread.start()

    def _watch(self) -> None:
        try:
            stop = self._stop_event
            while True:
                kicked = self._last_kick
                remaining = kicked + self._timeout - _monotonic()
                if remaining <= 0:
                    break
                if stop.wait(remaining):
                    return
            self._fire(kicked)
        finally:
            # Not left to stop(): with on_stall="raise" the exception can reach the guarded
            # thread anywhere, even before its stop() has done its bookkeeping.
            _active.discard(self)

    def _stop_monitor(self) -> None:
        """Stop watching; raise here when the watchdog fired on this thread and its exception
        has not been raised yet."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._stopping = True
            self._stop_event.set()
        if thread is not threading.current_thread():
            thread.join(_JOIN_GRACE)
        with self._lock:
            self._thread = None
            fired, pending, delivered = self._fired, self._pending, self._delivered
        if not fired or self.on_stall != "raise" or threading.get_ident() != self._target:
            return
        if delivered:
            return  # raised already: it is on its way out of the block, or was handled there
        if pending:
            _set_async_exc(self._target, None)
        raise self._exception()

    # --- firing -------------------------------------------------------------------------------

    def _describe_stall(self, stalled_for: float) -> str:
        return (
            f"{self._kind} {self.name!r}: no kick for {stalled_for:.3f}s "
            f"(timeout {self._timeout:g}s)"
        )

    def _action(self) -> str:
        if self.on_stall == "exit":
            return f"ending the process with exit code {self.exit_code}"
        return f"raising WatchdogTimeout in thread {_thread_name(self._target)}"

    def _still_stalled(self, kicked: float) -> bool:
        return True

    def _fire(self, kicked: float) -> None:
        with self._lock:
            if self._stopping:
                return
            self._fired = True
        self._stalled_for = _monotonic() - kicked
        title = f"{self._describe_stall(self._stalled_for)}; {self._action()}"
        marks = {self._target: self._target_note()} if self._target is not None else {}
        loops = {id(lp): lp for m in list(_active) if (lp := m._live_loop()) is not None}
        monitor = threading.get_ident()

        def report() -> None:
            skip = [monitor, threading.get_ident()]
            try:
                text = format_report(title, marks=marks, skip=skip, loops=loops.values())
            except Exception as exc:  # the raw dump that follows still says where things are
                text = f"heartline: {title}\n(the stack report failed: {exc!r})\n"
            write_report(text, self.file)

        _bounded(report, _WRITE_GRACE)
        if self.on_stall == "exit":
            _bounded(_flush_stdio, 1.0)
            os._exit(self.exit_code)
        with self._lock:
            if self._stopping or self._target is None or not self._still_stalled(kicked):
                return
            self._pending = _set_async_exc(self._target, self._exception_class())

    def _target_note(self) -> str:
        return "guarded by the watchdog"

    def _live_loop(self) -> asyncio.AbstractEventLoop | None:
        loop = self._loop() if self._loop is not None else None
        return loop if loop is not None and not loop.is_closed() else None

    def _exception(self) -> WatchdogTimeout:
        stalled_for = self._stalled_for
        return WatchdogTimeout(
            self._describe_stall(stalled_for if stalled_for is not None else self._timeout),
            name=self.name,
            timeout=self._timeout,
            stalled_for=stalled_for,
        )

    def _exception_class(self) -> type[WatchdogTimeout]:
        # An asynchronous exception can only be a class, instantiated without arguments where it
        # is raised. This subclass fills in the details and notes that it arrived, which tells
        # stop() not to raise a second one.
        monitor = self
        template = self._exception()

        class Raised(WatchdogTimeout):
            def __init__(self) -> None:
                super().__init__(
                    str(template),
                    name=template.name,
                    timeout=template.timeout,
                    stalled_for=template.stalled_for,
                )
                monitor._delivered = True

        Raised.__name__ = Raised.__qualname__ = WatchdogTimeout.__qualname__
        Raised.__module__ = WatchdogTimeout.__module__
        return Raised

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread = None


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> bool:
    """Set (or, with None, clear) the exception raised at ``ident``'s next bytecode boundary."""
    import ctypes  # only when a watchdog raises: keeps the import of heartline.service small

    found = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc is not None else None
    )
    return bool(found)


def _bounded(fn: Callable[[], object], timeout: float) -> None:
    """Run ``fn`` in a helper thread and wait at most ``timeout`` seconds for it: a report that
    cannot be written (a full pipe on stderr) must not stop the process from ending."""

    def run() -> None:
        try:
            fn()
        except BaseException:  # the caller acts (exit or raise) whether or not this worked
            return

    helper = threading.Thread(target=run, name="heartline-watchdog-report", daemon=True)
    helper.start()
    helper.join(timeout)


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):
                continue


def _caller_location() -> str:
    """file:line of the nearest caller outside this module."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def _thread_name(ident: int | None) -> str:
    for t in threading.enumerate():
        if t.ident == ident:
            return repr(t.name)
    return "<gone>"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    if "asyncio" not in sys.modules:
        return None  # nobody imported asyncio: no loop can be running
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Watchdog(_Monitor):
    """Fires when :meth:`kick` is not called for ``timeout`` seconds.

    Three ways to use it:

    * a block: ``with Watchdog(5.0): work()`` (also ``async with``) fires when the block runs for
      more than 5 s without a kick; ``with Watchdog(5.0) as wd:`` lets a long block kick;
    * a decorator: ``@watchdog(5.0)`` guards every call of a function (or coroutine function),
      each with a watchdog of its own;
    * a long-lived object: ``wd = Watchdog(5.0); wd.start()``, then ``wd.kick()`` from the loop
      that must keep going, ``wd.stop()`` at the end.

    ``on_stall="exit"`` (the default) writes the report and ends the process with ``exit_code``;
    ``"raise"`` writes it and raises :class:`WatchdogTimeout` in the thread that entered the block
    or called :meth:`start` (see the module's notes on its limits). A watchdog fires once per
    start; ``file`` takes the report instead of stderr (a path is appended to).
    """

    def __init__(
        self,
        timeout: float,
        *,
        on_stall: OnStall = "exit",
        exit_code: int = EXIT_WATCHDOG,
        file: ReportTarget = None,
        name: str | None = None,
    ) -> None:
        super().__init__(timeout, on_stall=on_stall, exit_code=exit_code, file=file, name=name)

    @property
    def timeout(self) -> float:
        return self._timeout

    def kick(self) -> None:
        """Still alive: push the deadline to ``timeout`` seconds from now. Lock-free."""
        self._last_kick = _monotonic()

    def start(self) -> Watchdog:
        """Start watching from the calling thread (the one ``on_stall="raise"`` raises in)."""
        self._start_monitor(threading.get_ident(), _running_loop())
        return self

    def stop(self) -> None:
        """Stop watching. Raises :class:`WatchdogTimeout` when the watchdog fired with
        ``on_stall="raise"`` on this thread and the exception has not been raised yet."""
        self._stop_monitor()

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._stop_monitor()
        except WatchdogTimeout:
            # An exception is already on its way out of the block (ours, or one the code raised
            # itself): let it go on rather than hide it behind another one.
            if exc is None:
                raise

    async def __aenter__(self) -> Watchdog:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _clone(self, name: str) -> Watchdog:
        return Watchdog(
            self._timeout,
            on_stall=self.on_stall,
            exit_code=self.exit_code,
            file=self.file,
            name=name,
        )

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Guard every call of ``func`` with a fresh watchdog of the same settings (named after
        the function unless this one has a name)."""
        import inspect

        name = self.name if self._named else getattr(func, "__qualname__", repr(func))
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def guarded_coroutine(*args: P.args, **kwargs: P.kwargs) -> object:
                async with self._clone(name):
                    return await func(*args, **kwargs)

            return guarded_coroutine  # type: ignore[return-value]

        @functools.wraps(func)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            with self._clone(name):
                return func(*args, **kwargs)

        return guarded

    def __repr__(self) -> str:
        state = "fired" if self._fired else "active" if self.active else "idle"
        return f"<Watchdog {self.name!r} timeout={self._timeout:g}s {self.on_stall} {state}>"


def watchdog(
    timeout: float,
    *,
    on_stall: OnStall = "exit",
    exit_code: int = EXIT_WATCHDOG,
    file: ReportTarget = None,
    name: str | None = None,
) -> Watchdog:
    """A :class:`Watchdog`: ``with watchdog(5.0): ...``, ``@watchdog(5.0)``, or ``.start()``."""
    return Watchdog(timeout, on_stall=on_stall, exit_code=exit_code, file=file, name=name)


class LoopWatchdog(_Monitor):
    """Fires when an asyncio event loop is blocked for more than ``max_lag`` seconds.

    A heartbeat callback reschedules itself on the loop every ``max_lag / 2`` seconds and kicks
    the monitor; when the loop is stuck in a coroutine or callback that does not return, the
    heartbeat does not run and the monitor fires at most ``1.5 * max_lag`` after the loop stopped
    turning. The report marks the loop's thread and the task that is running: that is where the
    loop is blocked.

    ``async with LoopWatchdog(0.5): ...`` or ``wd.start()`` ... ``wd.stop()`` (inside the loop, or
    from any thread with ``loop=``). ``on_stall="raise"`` raises :class:`WatchdogTimeout` in the
    loop's thread, that is inside the code that blocks it (so in the task that runs it).
    """

    _kind = "loop-watchdog"

    def __init__(
        self,
        max_lag: float,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        on_stall: OnStall = "exit",
        exit_code: int = EXIT_WATCHDOG,
        file: ReportTarget = None,
        name: str | None = None,
    ) -> None:
        if not (math.isfinite(max_lag) and max_lag > 0):
            raise ValueError(f"max_lag must be a positive number of seconds, not {max_lag!r}")
        self.max_lag = float(max_lag)
        self.interval = self.max_lag / 2
        super().__init__(
            self.interval + self.max_lag,
            on_stall=on_stall,
            exit_code=exit_code,
            file=file,
            name=name,
        )
        self._given_loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._generation = 0
        #: Largest delay (seconds) of a heartbeat past its due time since start().
        self.worst_lag = 0.0

    def start(self) -> LoopWatchdog:
        """Start watching ``loop`` (default: the running loop of the calling thread)."""
        running = _running_loop()
        loop = self._given_loop or running
        if loop is None:
            raise RuntimeError("LoopWatchdog.start() needs a running event loop or loop=")
        self._start_monitor(threading.get_ident() if loop is running else None, loop)
        self.worst_lag = 0.0
        # A heartbeat left over from an earlier start() must not run a second chain.
        self._generation += 1
        self._due = self._last_kick + self.interval
        if loop is running:
            self._handle = loop.call_later(self.interval, self._beat, self._generation)
        else:
            loop.call_soon_threadsafe(self._arm, self._generation)
        return self

    def _arm(self, generation: int) -> None:
        self._target = threading.get_ident()
        self._due = _monotonic()
        self._beat(generation)

    def _beat(self, generation: int) -> None:
        if generation != self._generation:
            return
        now = _monotonic()
        self.worst_lag = max(self.worst_lag, now - self._due)
        self._last_kick = now
        loop = self._loop() if self._loop is not None else None
        if self._stopping or loop is None:
            return
        self._due = now + self.interval
        self._handle = loop.call_later(self.interval, self._beat, generation)

    def stop(self) -> None:
        """Stop watching and cancel the heartbeat. Raises :class:`WatchdogTimeout` when called
        on the loop's thread after the watchdog fired with ``on_stall="raise"`` and before the
        exception was raised there."""
        loop = self._loop() if self._loop is not None else None
        handle, self._handle = self._handle, None
        try:
            self._stop_monitor()
        finally:
            if handle is not None and loop is not None and not loop.is_closed():
                if _running_loop() is loop:
                    handle.cancel()
                else:
                    loop.call_soon_threadsafe(handle.cancel)

    def _describe_stall(self, stalled_for: float) -> str:
        late = max(0.0, stalled_for - self.interval)
        return (
            f"{self._kind} {self.name!r}: the event loop is blocked: its heartbeat is "
            f"{late:.3f}s late (max lag {self.max_lag:g}s)"
        )

    def _target_note(self) -> str:
        return "runs the blocked event loop"

    def _still_stalled(self, kicked: float) -> bool:
        return self._last_kick == kicked

    async def __aenter__(self) -> LoopWatchdog:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        except WatchdogTimeout:
            if exc is None:
                raise

    def __repr__(self) -> str:
        state = "fired" if self._fired else "active" if self.active else "idle"
        return f"<LoopWatchdog {self.name!r} max_lag={self.max_lag:g}s {self.on_stall} {state}>"


def loop_watchdog(
    max_lag: float,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    on_stall: OnStall = "exit",
    exit_code: int = EXIT_WATCHDOG,
    file: ReportTarget = None,
    name: str | None = None,
) -> LoopWatchdog:
    """A :class:`LoopWatchdog`: ``async with loop_watchdog(0.5): ...`` or ``.start()``."""
    return LoopWatchdog(
        max_lag, loop=loop, on_stall=on_stall, exit_code=exit_code, file=file, name=name
    )


def _after_fork_in_child() -> None:
    for monitor in list(_active):
        monitor._forget_after_fork()
    _active.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
