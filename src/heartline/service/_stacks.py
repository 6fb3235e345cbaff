"""Stack reports: every thread's stack and every asyncio task's await chain, as readable text.

A watchdog writes one when the code it guards stalls. The text is built first and written in one
go straight to the file descriptor (when there is one), so a stalled thread that holds the lock of
``sys.stderr``'s buffer cannot block the report; ``faulthandler`` then adds its raw dump, which
reads the stacks without going through Python objects.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import FrameType

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from typing import TextIO

    #: Where a report goes: None for ``sys.stderr``, a path (appended to), or an open text file.
    ReportTarget = TextIO | str | os.PathLike[str] | None

#: Await chains longer than this are cut (a cycle would otherwise never end).
_MAX_CHAIN = 200


def format_report(
    title: str,
    *,
    marks: Mapping[int, str] | None = None,
    skip: Iterable[int] = (),
    loops: Iterable[asyncio.AbstractEventLoop] = (),
) -> str:
    """The report: ``title``, each thread's stack (``marks`` maps thread idents to a note shown
    next to the name; threads in ``skip`` are left out), then the tasks of each loop in ``loops``.
    """
    marks = marks or {}
    skipped = set(skip)
    main = threading.main_thread().ident
    threads, stacks = _stacks(lambda ident: 0 if ident in marks else 1 if ident == main else 2)
    out = [
        f"heartline: {title}",
        f"pid {os.getpid()}, {time.strftime('%Y-%m-%d %H:%M:%S %z')}",
        "",
    ]
    for ident, stack in stacks.items():
        if ident in skipped:
            continue
        t = threads.get(ident)
        name = repr(t.name) if t is not None else "<unknown>"
        native = f", native id {t.native_id}" if t is not None else ""
        note = f"  <-- {marks[ident]}" if ident in marks else ""
        daemon = " (daemon)" if t is not None and t.daemon else ""
        out.append(f"Thread {name}{daemon} (ident {ident:#018x}{native}){note}")
        out.append("Stack (most recent call last):")
        out.extend(_format_frames(stack))
        out.append("")
    seen: set[int] = set()
    for loop in loops:
        if id(loop) in seen:
            continue
        seen.add(id(loop))
        out.extend(_format_loop(loop, stacks))
    return "\n".join(out) + "\n"


def _stacks(
    rank: Callable[[int], int],
) -> tuple[dict[int | None, threading.Thread], dict[int, list[FrameType]]]:
    """The live threads by ident, and every thread's stack (outermost frame first), ordered by
    ``rank(ident)`` and then by thread name."""
    frames = sys._current_frames()
    threads = {t.ident: t for t in threading.enumerate()}

    def order(ident: int) -> tuple[int, str]:
        t = threads.get(ident)
        return rank(ident), t.name if t is not None else ""

    stacks: dict[int, list[FrameType]] = {}
    for ident in sorted(frames, key=order):
        stack = list(_outward(frames[ident]))
        stack.reverse()
        stacks[ident] = stack
    return threads, stacks


def _outward(frame: FrameType | None) -> Iterator[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back


def _format_frames(frames: Iterable[FrameType]) -> list[str]:
    import traceback  # only when a report is written

    summary = traceback.StackSummary.extract(((f, f.f_lineno) for f in frames), lookup_lines=True)
    return "".join(summary.format()).rstrip("\n").split("\n")


def _format_loop(
    loop: asyncio.AbstractEventLoop, stacks: Mapping[int, list[FrameType]]
) -> list[str]:
    import asyncio  # already imported by whoever made the loop

    if loop.is_closed():
        return []
    try:
        tasks = list(asyncio.all_tasks(loop))
        current = asyncio.current_task(loop)
    except RuntimeError as exc:  # the task set changed under us too many times
        return [f"asyncio tasks of {loop!r}: not available ({exc})", ""]
    state = "running" if loop.is_running() else "not running"
    out = [f"asyncio tasks of {type(loop).__name__} at {id(loop):#x} ({state}): {len(tasks)}"]
    tasks.sort(key=lambda t: (t is not current, t.get_name()))
    for task in tasks:
        coro = task.get_coro()
        qualname = getattr(coro, "__qualname__", type(coro).__name__)
        note = "  <-- running now: the loop waits for it to return" if task is current else ""
        out.append(f"Task {task.get_name()!r} coroutine {qualname}(){note}")
        frames, last = _await_chain(coro, stacks)
        if frames:
            out.append("Await chain (most recent call last):")
            out.extend(_format_frames(frames))
        # The future a suspended task waits for: asyncio keeps it on the task (both the C and
        # the Python implementation); the coroutine only shows an opaque iterator over it.
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is not None:
            out.append(f"  waiting for {_short_repr(waiter)}")
        elif last is not None:
            out.append(f"  awaiting {_short_repr(last)}")
    out.append("")
    return out


def _await_chain(
    coro: object, stacks: Mapping[int, list[FrameType]]
) -> tuple[list[FrameType], object | None]:
    """Frames from a task's coroutine down to what it awaits, and the last awaitable that is not a
    coroutine (a future), if any.

    A suspended coroutine links to what it awaits (``cr_await``); a running one does not, so its
    chain is read from the stack of the thread that runs it.
    """
    frames: list[FrameType] = []
    obj: object | None = coro
    for _ in range(_MAX_CHAIN):
        frame = _frame_of(obj)
        if frame is None:
            return frames, obj
        if getattr(obj, "cr_running", False) or getattr(obj, "gi_running", False):
            for stack in stacks.values():
                if frame in stack:
                    return frames + stack[stack.index(frame) :], None
        frames.append(frame)
        obj = _awaited_by(obj)
        if obj is None:
            return frames, None
    return frames, None


def _frame_of(obj: object) -> FrameType | None:
    for attr in ("cr_frame", "gi_frame", "ag_frame"):
        frame = getattr(obj, attr, None)
        if isinstance(frame, FrameType):
            return frame
    return None


def _awaited_by(obj: object) -> object | None:
    for attr in ("cr_await", "gi_yieldfrom", "ag_await"):
        nxt: object | None = getattr(obj, attr, None)
        if nxt is not None:
            return nxt
    return None


def _short_repr(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception as exc:  # a broken __repr__ must not lose the report
        text = f"<{type(obj).__name__} (repr failed: {exc!r})>"
    return text if len(text) <= 200 else text[:197] + "..."


def write_report(text: str, target: ReportTarget = None) -> None:
    """Write ``text`` and faulthandler's raw dump of all threads to ``target``."""
    if target is None:
        stream = sys.stderr
        if stream is None:
            return
        fd = _fileno(stream)
        if fd is None:
            stream.write(text)
            stream.flush()
            return
        _write_fd(fd, text)
        _raw_dump(fd)
    elif isinstance(target, (str, os.PathLike)):
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            _write_fd(fd, text)
            _raw_dump(fd)
        finally:
            os.close(fd)
    else:
        target.write(text)
        target.flush()
        fd = _fileno(target)
        if fd is not None:
            _raw_dump(fd)


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None


def _write_fd(fd: int, text: str) -> None:
    data = memoryview(text.encode("utf-8", "backslashreplace"))
    while data:
        data = data[os.write(fd, data) :]


def _raw_dump(fd: int) -> None:
    _write_fd(fd, "Raw dump (faulthandler, most recent call first):\n")
    try:
        faulthandler.dump_traceback(fd, all_threads=True)
    except (OSError, ValueError, RuntimeError):
        return
    _write_fd(fd, "\n")


# --- structured snapshots (reports render them as text and as JSON) ---------------------------

#: One frame as plain data: ``file``, ``line``, ``function`` and ``code`` (the source line).
Frame = dict[str, object]


def frame_records(frames: Iterable[FrameType]) -> list[Frame]:
    """``frames`` (outermost first) as plain records, with their source lines.

    Unlike ``traceback``, this does not check whether each source file changed on disk (one
    ``stat`` per frame): every system call lets the application take the GIL back for a whole
    switch interval, which made a report of 1000 threads take seconds next to a busy thread.
    """
    import linecache  # only when a report is written

    out: list[Frame] = []
    for f in frames:
        code = f.f_code
        filename = code.co_filename
        out.append(
            {
                "file": filename,
                "line": f.f_lineno,
                "function": code.co_name,
                "code": linecache.getline(filename, f.f_lineno or 0, f.f_globals).strip(),
            }
        )
    return out


def thread_snapshot(
    *, skip: Iterable[int] = (), hide: Iterable[str] = ()
) -> tuple[list[dict[str, object]], dict[int, list[FrameType]]]:
    """Every thread (but those in ``skip``) as a record: ``name``, ``ident``, ``native_id``,
    ``daemon``, ``main`` and ``stack`` (outermost first); and each thread's frames, which
    :func:`loop_snapshot` needs to follow running tasks. The calling thread's innermost frames
    that belong to the modules in ``hide`` (the reporting code itself) are left out."""
    skipped = set(skip)
    hidden = set(hide)
    me = threading.get_ident()
    main = threading.main_thread().ident
    threads, stacks = _stacks(lambda ident: 0 if ident == main else 1)
    records: list[dict[str, object]] = []
    for ident, stack in stacks.items():
        if ident in skipped:
            continue
        shown = stack
        if ident == me and hidden:
            while shown and shown[-1].f_globals.get("__name__") in hidden:
                shown = shown[:-1]
        t = threads.get(ident)
        records.append(
            {
                "name": t.name if t is not None else None,
                "ident": ident,
                "native_id": t.native_id if t is not None else None,
                "daemon": t.daemon if t is not None else None,
                "main": ident == main,
                "stack": frame_records(shown),
            }
        )
    return records, stacks


def loop_snapshot(
    loop: asyncio.AbstractEventLoop, stacks: Mapping[int, list[FrameType]]
) -> dict[str, object] | None:
    """The tasks of ``loop`` as a record (None for a closed loop): ``loop``, ``running``,
    ``error`` and ``tasks``, each with ``name``, ``coroutine``, ``current``, ``stack`` (the await
    chain, outermost first) and ``waiting_for``."""
    import asyncio

    if loop.is_closed():
        return None
    record: dict[str, object] = {
        "loop": f"{type(loop).__name__} at {id(loop):#x}",
        "running": loop.is_running(),
        "error": None,
        "tasks": [],
    }
    try:
        tasks = list(asyncio.all_tasks(loop))
        current = asyncio.current_task(loop)
    except RuntimeError as exc:  # the task set changed under us too many times
        record["error"] = f"not available ({exc})"
        return record
    tasks.sort(key=lambda t: (t is not current, t.get_name()))
    out: list[dict[str, object]] = []
    for task in tasks:
        coro = task.get_coro()
        frames, last = _await_chain(coro, stacks)
        waiter = getattr(task, "_fut_waiter", None)
        waiting = waiter if waiter is not None else last
        out.append(
            {
                "name": task.get_name(),
                "coroutine": getattr(coro, "__qualname__", type(coro).__name__),
                "current": task is current,
                "stack": frame_records(frames),
                "waiting_for": _short_repr(waiting) if waiting is not None else None,
            }
        )
    record["tasks"] = out
    return record


def greenlet_snapshot() -> list[dict[str, object]] | None:
    """The suspended greenlets, when gevent or eventlet is imported (None otherwise): each with
    ``name`` (its repr) and ``stack``. Best effort: found by walking the garbage collector's
    objects, which takes time on large heaps, so only done when a green library is in use."""
    if "gevent" not in sys.modules and "eventlet" not in sys.modules:
        return None
    module = sys.modules.get("greenlet")
    cls = getattr(module, "greenlet", None)
    if not isinstance(cls, type):
        return None
    import gc

    out: list[dict[str, object]] = []
    for obj in gc.get_objects():
        if not isinstance(obj, cls):
            continue
        frame = getattr(obj, "gr_frame", None)
        if not isinstance(frame, FrameType):
            continue  # not started, finished, or running now (then it is in a thread's stack)
        stack = list(_outward(frame))
        stack.reverse()
        out.append({"name": _short_repr(obj), "stack": frame_records(stack)})
    return out
