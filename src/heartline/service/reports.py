"""Reports on demand: send the process a signal, get a file that says what it is doing.

``reports.install()`` (from the main thread) arranges that ``SIGUSR2`` writes a report: every
thread's stack, the asyncio tasks of the known loops with their await chains, the suspended
greenlets (when gevent or eventlet is imported), the process (pid, parent, user, command line,
CPU times, memory, open files and sockets, I/O counters, children; read from /proc, or with
psutil where there is no /proc), the versions of the
distributions whose modules are imported, the configuration of registered providers
(``reports.register(name, fn)``) and the environment. Secrets are replaced by ``***`` wherever
a report shows values (configuration, environment, command line; see :func:`redact`): values
under secret-looking names, and passwords inside URLs, connection strings and options whatever
the name (``postgres://app:***@db/app``). Each report is written twice, as text and as JSON,
next to the previous ones; :func:`generate` builds one on demand without any of that.

**How a signal becomes a report.** Two handlers share the signal:

* ``faulthandler.register(chain=True)`` runs in C, in the real signal handler: it writes the raw
  stack of the thread that took the signal (normally the main thread) to a file opened at
  install, ``raw-<pid>.txt`` in the report directory. It needs no GIL, so a program stuck in C
  code that holds the GIL still shows where it is, at once.
* It then chains to a Python-level handler (so that the signal visibly has an owner, and
  :func:`uninstall` can put the previous one back), which writes one byte to a pipe.

A helper thread, started at install, sleeps in ``poll()`` on that pipe and on an inotify watch
of the raw file: no timer, no wake-up while idle. It wakes when faulthandler writes (a kernel
event, whatever the main thread is doing), waits until the dump is complete, builds the full
report with the raw dump folded in, writes the files and empties the raw file.

Why not just the Python handler: Python runs it in the main thread only, between bytecodes; a
signal that lands while the main thread is about to block in a system call (``input()``, a
lock) is handled only when that call returns, which can be never. Why the raw dump covers one
thread and not all: faulthandler reads other threads' frames without the GIL while the thread
holding it changes them, and that crashed the process (SIGSEGV) in about one signal in five
while another thread was busy importing; the full report has every thread, read safely.

**Files.** In ``directory``: by default ``$HEARTLINE_REPORT_DIR``, else
``$XDG_RUNTIME_DIR/heartline/reports/<program>``, else
``~/.local/state/heartline/reports/<program>`` (``<program>`` is the script's name, so a
restarted program finds its earlier reports). Names sort by time, then pid:
``report-20261121T152233.123456Z-4242.txt`` and ``.json``; each is written to a temporary file
and renamed, mode 0600 (directories we create: 0700). The newest ``keep`` reports stay, older
ones are deleted. :func:`list` (also :func:`list_reports`) and :func:`latest` read them back,
from any process, and :func:`wait_for_report` waits for the next one on an asyncio loop (the
daemon does, for ``heartline report``).

**Limits.** The application's signal handlers are its own: :func:`install` refuses a signal
that already has a handler (other than the default or "ignore") unless ``force=True``, and
:func:`uninstall` puts back what was there. A ``faulthandler.register`` the application made
for the same signal is invisible to that check and is replaced. Where inotify is missing, the
Python-level nudge is the only wake-up. A forked child inherits no report machinery (its
handlers are put back as they were before install): call :func:`install` again there. Finding
greenlets walks every object the garbage collector knows. Building a report takes the GIL in
turns with the application (a few milliseconds for hundreds of threads); the first report after
install is not slower, since the helper warms up right at start (imports, installed
distributions, source lines: ~0.1 s of its own time, more when the application is busy). Every
system call the helper makes lets a busy application thread keep the GIL for a switch interval
(5 ms), so the report reads few files: source lines come from ``linecache`` without checking the
files for changes, and with more than 32 threads only the main thread's children are listed.

**Where the code is.** This module is the public face; collection and the registries of
providers and loops are in ``_report_collect``, the secret rules in ``_report_redact``, text
and JSON in ``_report_render``, files (naming, rotation, listing, waiting for a new one) in
``_report_store``, and the helper thread a signal wakes in ``_report_signal`` (inotify itself in
``_inotify``). :func:`install` and :func:`uninstall` stay here: they own the process-wide state
(the signal handlers, faulthandler, the one installation per process).
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import os
import signal as _signal
import sys
import threading

from heartline.errors import HeartlineError
from heartline.service._report_collect import collect, register, register_loop, unregister
from heartline.service._report_redact import REDACTED, redact
from heartline.service._report_render import render_json, render_text
from heartline.service._report_store import (
    StoredReport,
    default_directory,
    latest,
    list_reports,
    make_directory,
    wait_for_report,
)

# Defined in a private module and imported from this one: repr(), help() and pickles say so.
StoredReport.__module__ = __name__

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Literal

    from heartline.service._report_collect import Provider
    from heartline.service._report_signal import Installation

    Format = Literal["text", "json"]

__all__ = [
    "REDACTED",
    "ReportsError",
    "SignalInUse",
    "StoredReport",
    "default_directory",
    "generate",
    "install",
    "installed",
    "latest",
    "list",
    "list_reports",
    "redact",
    "register",
    "register_loop",
    "uninstall",
    "unregister",
    "wait_for_report",
]


class ReportsError(HeartlineError):
    """Reports cannot be installed or written as asked (you did it)."""

    exit_code = 2


class SignalInUse(ReportsError):
    """The application already handles the signal: reports will not take it over."""

    def __init__(self, message: str, *, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


def generate(fmt: Format = "text", *, title: str = "report on demand") -> str:
    """A report of this process now, as ``"text"`` or ``"json"`` (no file is written)."""
    if fmt not in ("text", "json"):
        raise ValueError(f"fmt must be 'text' or 'json', not {fmt!r}")
    data = collect(title=title, raw=None, skip=(), hide=(__name__,))
    return render_json(data) if fmt == "json" else render_text(data)


class _Current:
    #: The installation of this process, if any; set and cleared under ``lock``.
    state: Installation | None = None
    lock = threading.Lock()


def installed() -> bool:
    """True while reports are installed in this process."""
    return _Current.state is not None


def install(
    signal: int = _signal.SIGUSR2,
    *,
    directory: str | os.PathLike[str] | None = None,
    keep: int = 20,
    providers: Mapping[str, Provider] | None = None,
    force: bool = False,
) -> str:
    """Write a report to ``directory`` each time the process receives ``signal``; give the
    directory.

    Call it from the main thread. Raises :class:`SignalInUse` when the application already
    handles ``signal`` (unless ``force``), :class:`ReportsError` when reports are installed
    already. ``providers`` are :func:`register`-ed. The running event loop, if any, is listed
    in reports (others with :func:`register_loop`).
    """
    signum = int(signal)
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep!r}")
    if threading.current_thread() is not threading.main_thread():
        raise ReportsError("reports.install() must be called from the main thread")
    with _Current.lock:
        if _Current.state is not None:
            raise ReportsError(
                f"reports are installed already (on {_signal.Signals(_Current.state.signum).name})"
            )
        previous = _signal.getsignal(signum)
        if previous not in (_signal.SIG_DFL, _signal.SIG_IGN) and not force:
            owner = "a handler not set from Python" if previous is None else repr(previous)
            raise SignalInUse(
                f"{_signal.Signals(signum).name} already has a handler ({owner}); "
                "pick another signal, or pass force=True to replace it",
                signum=signum,
            )
        path = os.path.abspath(
            os.fspath(directory) if directory is not None else default_directory()
        )
        # The helper thread and its wake-ups are loaded here, not at import: a program that
        # imports reports without installing them does not pay for them.
        from heartline.service._report_signal import Installation

        make_directory(path)
        state = Installation(signum, previous, path, keep)
        try:
            state.thread.start()
            _signal.signal(signum, state.on_signal)
            faulthandler.register(signum, file=state.raw_fd, all_threads=False, chain=True)
        except BaseException:
            _signal.signal(signum, previous if previous is not None else _signal.SIG_DFL)
            state.close()
            raise
        _Current.state = state
    for name, provider in (providers or {}).items():
        register(name, provider)
    if "asyncio" in sys.modules:
        import asyncio

        with contextlib.suppress(RuntimeError):  # no loop runs here now
            register_loop(asyncio.get_running_loop())
    return path


def uninstall() -> None:
    """Stop writing reports: put back the signal's previous handler and stop the helper thread.
    Nothing happens when reports are not installed. Call it from the main thread."""
    with _Current.lock:
        state = _Current.state
        if state is None:
            return
        faulthandler.unregister(state.signum)
        previous = state.previous
        _signal.signal(state.signum, previous if previous is not None else _signal.SIG_DFL)
        _Current.state = None
    state.close()


def _after_fork_in_child() -> None:
    state = _Current.state
    if state is None:
        return
    _Current.state = None
    # The helper thread did not come along; the pipe and the raw file are the parent's.
    try:
        faulthandler.unregister(state.signum)
        previous = state.previous
        _signal.signal(state.signum, previous if previous is not None else _signal.SIG_DFL)
    except (ValueError, OSError, RuntimeError):
        pass
    state.close_fds()


def _at_exit() -> None:
    state = _Current.state
    if state is not None and state.pid == os.getpid():
        try:
            if os.path.getsize(state.raw_path) == 0:
                os.unlink(state.raw_path)
        except OSError:
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)


# ``reports.list`` is the documented name; inside heartline it is ``list_reports``. Bound last,
# and no code of this module calls the builtin list(), which the name shadows from here on.
list = list_reports
