"""How a signal becomes a report: the live installation that reports.install() makes.

An :class:`Installation` holds the signal, its previous handler, the raw file faulthandler
dumps into, the pipe the Python-level handler nudges, the inotify watch on the raw file and the
helper thread that sleeps on both and writes each report (the module documentation of
:mod:`heartline.service.reports` tells why it takes two handlers and a thread).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
import time

from heartline._util import drain, watch_file
from heartline.service._report_collect import collect
from heartline.service._report_render import render_json, render_text
from heartline.service._report_store import list_reports, make_directory, write_files

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from logging import Logger
    from signal import _HANDLER as _Handler
    from types import FrameType

#: Seconds close() waits for a helper that is writing a report.
_JOIN_GRACE = 10.0
#: How long the helper waits for faulthandler to finish a dump: steps of this many seconds ...
_SETTLE_STEP = 0.002
#: ... at most this many.
_SETTLE_STEPS = 100
#: GIL switch interval while a report is being written (see Installation._serve).
_REPORT_SWITCH_INTERVAL = 0.0005


class Installation:
    """The live installation: the signal, its previous handler, the raw file, the wake-ups and
    the helper thread."""

    def __init__(self, signum: int, previous: _Handler, directory: str, keep: int) -> None:
        self.signum = signum
        self.previous = previous
        self.directory = directory
        self.keep = keep
        self.pid = os.getpid()
        self.raw_path = os.path.join(directory, f"raw-{self.pid}.txt")
        self.raw_fd = os.open(
            self.raw_path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.wake_w, False)
        self.notify_fd = watch_file(self.raw_path)
        self.thread = threading.Thread(target=self._serve, name="heartline-reports", daemon=True)
        self.last_path: str | None = None
        self.written = 0

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        # The Python-level half: runs in the main thread (after faulthandler's dump) and only
        # nudges the helper; the inotify watch on the raw file usually woke it already.
        # An OSError: the helper has a wake-up pending already (a full pipe), or is gone.
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"r")

    def _serve(self) -> None:
        import select

        try:
            # The slow parts of a first report, done while nothing waits: the imports, the
            # distributions and the source files the threads are in now (into linecache). An
            # import is dozens of system calls, each a chance for a busy thread to keep the GIL
            # for a switch interval: done during a report, they made it take a second.
            warm = collect(title="warm-up", raw=None, skip=(threading.get_ident(),), config=False)
            render_text(warm)
            render_json(warm)
            list_reports(self.directory)
        except Exception:
            _log().warning("heartline reports: cannot list distributions", exc_info=True)
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        if self.notify_fd is not None:
            poller.register(self.notify_fd, select.POLLIN)
        while True:
            poller.poll()  # no timeout: asleep until a signal (or uninstall) comes
            if not drain(self.wake_r, stop=b"q"):
                return
            if self.notify_fd is not None:
                drain(self.notify_fd)
            raw = self._take_raw()
            if raw is None:
                continue  # this dump went into the previous report (or it was our truncation)
            # While the report is built, a busy app thread would keep the GIL for the whole
            # switch interval (5 ms) each time this thread makes a system call, and a report
            # makes a few dozen: shorten the interval for those few milliseconds only.
            # The report's many allocations would also set off a full garbage collection
            # (12 ms measured at 1000 threads) that stops every thread: hold it off until the
            # report is written.
            interval = sys.getswitchinterval()
            collecting = gc.isenabled()
            sys.setswitchinterval(min(interval, _REPORT_SWITCH_INTERVAL))
            gc.disable()
            try:
                self.last_path = self.write(raw)
                self.written += 1
            except Exception:
                _log().exception("heartline reports: writing a report failed")
            finally:
                if collecting:
                    gc.enable()
                sys.setswitchinterval(interval)

    def write(self, raw: str | None) -> str:
        signame = signal.Signals(self.signum).name
        data = collect(title=f"report on {signame}", raw=raw, skip=(threading.get_ident(),))
        try:
            return write_files(self.directory, data, self.keep)
        except FileNotFoundError:  # someone removed the directory: make it again, once
            make_directory(self.directory)
            return write_files(self.directory, data, self.keep)

    def _take_raw(self) -> str | None:
        """What faulthandler wrote since the last report, once it stopped writing; the file is
        emptied for the next."""
        try:
            size = os.fstat(self.raw_fd).st_size
            if size == 0:
                return None
            # The dump is a series of writes: wait (a few ms) until it is complete.
            for _ in range(_SETTLE_STEPS):
                time.sleep(_SETTLE_STEP)
                now = os.fstat(self.raw_fd).st_size
                if now == size:
                    break
                size = now
            data = os.pread(self.raw_fd, size, 0)
            if os.fstat(self.raw_fd).st_size == len(data):
                os.ftruncate(self.raw_fd, 0)
        except OSError:
            return None
        return data.decode("utf-8", "backslashreplace")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"q")
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(_JOIN_GRACE)
        self.close_fds()
        with contextlib.suppress(OSError):
            if os.path.getsize(self.raw_path) == 0:
                os.unlink(self.raw_path)

    def close_fds(self) -> None:
        for fd in (self.wake_w, self.wake_r, self.raw_fd, self.notify_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _log() -> Logger:
    import logging

    # Under the public module's name, as before reports were split into private modules: an
    # application's logging configuration names that one.
    return logging.getLogger("heartline.service.reports")
