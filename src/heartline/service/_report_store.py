"""Reports on disk: where they go, how they are named, written, rotated, listed and awaited.

Part of :mod:`heartline.service.reports`, which re-exports :func:`default_directory`,
:class:`StoredReport`, :func:`list_reports` (also as ``list``), :func:`latest` and
:func:`wait_for_report`. Names sort by time, then pid:
``report-20261121T152233.123456Z-4242.txt`` and ``.json``.
"""

from __future__ import annotations

import os
import re
import time

from heartline._util import atomic_write, ensure_private_dir, program_name
from heartline.service._report_render import render_json, render_text

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

_REPORT_NAME = re.compile(r"^report-(\d{8}T\d{6}\.\d{6}Z)-(\d+)\.txt$")


def default_directory() -> str:
    """Where reports go when install() is not told (see the module's notes)."""
    explicit = os.environ.get("HEARTLINE_REPORT_DIR")
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        root = runtime
    else:
        root = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(root, "heartline", "reports", program_name())


def make_directory(path: str) -> None:
    """Create ``path`` and its missing parents, each 0700 whatever the umask; refuse an existing
    directory that others could read or change (the rule the backdoor's directory follows)."""
    from heartline.service.reports import ReportsError

    ensure_private_dir(path, error=ReportsError)


class StoredReport:
    """A report on disk: ``path`` (the text), ``json_path`` (None if it is missing), ``pid``
    of the process it describes and ``time`` (seconds since the epoch, UTC)."""

    __slots__ = ("json_path", "path", "pid", "time")

    def __init__(self, path: str, json_path: str | None, pid: int, time: float) -> None:
        self.path = path
        self.json_path = json_path
        self.pid = pid
        self.time = time

    def read_text(self) -> str:
        """The text report."""
        with open(self.path, encoding="utf-8") as f:
            return f.read()

    def read_json(self) -> dict[str, object]:
        """The JSON report, parsed (raises FileNotFoundError when there is none)."""
        import json

        if self.json_path is None:
            raise FileNotFoundError(f"no JSON report next to {self.path}")
        with open(self.json_path, encoding="utf-8") as f:
            data: dict[str, object] = json.load(f)
        return data

    def __repr__(self) -> str:
        return f"<StoredReport {self.path!r} pid={self.pid}>"


def list_reports(directory: str | os.PathLike[str] | None = None) -> list[StoredReport]:
    """The reports in ``directory`` (default: :func:`default_directory`), newest first; an empty
    list when the directory does not exist."""
    import calendar

    path = os.fspath(directory) if directory is not None else default_directory()
    try:
        names = set(os.listdir(path))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        m = _REPORT_NAME.match(name)
        if m is None:
            continue
        stamp, pid = m.group(1), int(m.group(2))
        seconds = calendar.timegm(time.strptime(stamp[:15], "%Y%m%dT%H%M%S"))
        when = seconds + int(stamp[16:22]) / 1e6
        json_name = name[:-4] + ".json"
        json_path = os.path.join(path, json_name) if json_name in names else None
        found.append(StoredReport(os.path.join(path, name), json_path, pid, when))
    found.sort(key=lambda r: (r.time, r.pid), reverse=True)
    return found


def latest(directory: str | os.PathLike[str] | None = None) -> StoredReport | None:
    """The newest report in ``directory``, or None."""
    reports = list_reports(directory)
    return reports[0] if reports else None


def write_files(directory: str, data: Mapping[str, object], keep: int) -> str:
    """Write ``data`` as a JSON and a text report (the text last: once it is there, the report is
    complete), delete all but the newest ``keep``; give the text's path."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    base = os.path.join(directory, f"report-{stamp}-{os.getpid()}")
    atomic_write(base + ".json", render_json(data).encode(), mode=0o600, fsync=False)
    atomic_write(
        base + ".txt", render_text(data).encode("utf-8", "backslashreplace"), mode=0o600,
        fsync=False,
    )  # fmt: skip
    _rotate(directory, keep)
    return base + ".txt"


def _rotate(directory: str, keep: int) -> None:
    names = os.listdir(directory)
    if sum(1 for n in names if n.startswith("report-") and n.endswith(".txt")) <= keep:
        return
    for old in list_reports(directory)[keep:]:
        for path in (old.path, old.json_path):
            if path is not None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue


#: Seconds between two looks at a directory that inotify cannot watch (see wait_for_report).
_UNWATCHED_STEP = 0.02


async def wait_for_report(
    directory: str | os.PathLike[str],
    *,
    known: Collection[str],
    timeout: float,
    with_json: bool = False,
) -> StoredReport | None:
    """The newest report in ``directory`` whose text is not among ``known`` (paths, as
    :attr:`StoredReport.path` gives them), once one is there; None when none came within
    ``timeout`` seconds. With ``with_json``, only a newest report whose JSON is there counts.

    For code on an asyncio event loop: the loop goes on serving while this waits.
    """
    import asyncio
    import contextlib

    from heartline._util import drain, open_inotify, watch_directory

    path = os.fspath(directory)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # Woken by inotify through the loop's own selector (loop.add_reader), not by a blocking
    # wait in a thread: the loop waits on descriptors already, and a thread would come from
    # the loop's default executor, a small shared pool, and sit in it for the whole timeout.
    fd = open_inotify()
    woken = asyncio.Event()
    if fd is not None:
        loop.add_reader(fd, woken.set)
    try:
        while True:
            # Watched before each look, so that a report renamed in after the look wakes us.
            watched = fd is not None and watch_directory(fd, path)
            new = [r for r in list_reports(path) if r.path not in known]
            if new and (not with_json or new[0].json_path is not None):
                return new[0]
            left = deadline - loop.time()
            if left <= 0:
                return None
            if not watched:
                # No inotify instance or watch to be had (a per-user limit is spent): look
                # again shortly rather than miss a report that came.
                left = min(left, _UNWATCHED_STEP)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await woken.wait()
            woken.clear()
            if fd is not None:
                drain(fd)
    finally:
        if fd is not None:
            loop.remove_reader(fd)
            os.close(fd)
