"""The daemon's state file: what a daemon started after a crash needs to adopt the programs.

Written on every change (atomically, without fsync: it only has to outlive the daemon, not the
machine; after a reboot the boot id says every pid in it is meaningless). Read back by a new
daemon, where it is untrusted input: any file may be torn, hand-edited or written by an older or
newer heartline. Every field is checked; a record with anything wrong is dropped with a log line,
and its program is then treated as unknown: the fd holder's pidfds still name its process, which
is found and stopped safely before a new copy starts. A bad file never stops the daemon.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

from heartline.api import EXIT_REASONS

log = logging.getLogger(__name__)

VERSION = 2
#: Linux never hands out a pid above 2**22 (PID_MAX_LIMIT).
PID_MAX = 1 << 22
#: What a record's ``intent`` may say (see :class:`Record`).
INTENTS = ("stop", "restart")
#: States a program that had no process may be restored in.
RESTORED_STATES = ("stopped", "exited", "fatal")
_NOTIFY = re.compile(r"^@heartline/notify/[0-9a-f]{32}$")
_DIGEST = re.compile(r"^[0-9a-f]{1,64}$")
#: Processes of one program outside its main process that a record may carry.
MAX_OTHERS = 4096


@dataclass
class Record:
    """One program as the previous daemon left it."""

    restarts: int = 0
    #: The main process: pid and kernel start time (together they identify it), or None.
    pid: int | None = None
    start_time: int | None = None
    pipes: tuple[int, int] = (0, 0)
    started: float = 0.0
    spec: str = ""
    #: Processes of the program outside its main process: (pid, start time).
    others: list[tuple[int, int]] = field(default_factory=list)
    #: What an operator or the daemon had under way: "stop" (an operator's stop: keep it down)
    #: or "restart" (stop it, then start it again).
    intent: str | None = None
    #: For a program with no process: stopped, exited or fatal (kept down by the new daemon).
    state: str | None = None
    detail: str = ""
    #: How its last run ended: reason, code, signal, detail (see ExitInfo).
    last_exit: dict[str, Any] | None = None


@dataclass
class Saved:
    """What a state file holds, checked."""

    notify: str | None = None
    records: dict[str, Record] = field(default_factory=dict)
    #: (pid, start time) of live processes named by records that were otherwise unusable.
    strays: list[tuple[int, int]] = field(default_factory=list)


def _int(v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"expected an integer from {lo} to {hi}, got {str(v)[:40]!r}")
    return v


def _pid(v: Any) -> int:
    return _int(v, 1, PID_MAX)


def _ticks(v: Any) -> int:
    return _int(v, 0, 1 << 62)


def _record(raw: Any) -> Record:
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    rec = Record()
    rec.restarts = _int(raw.get("restarts", 0), 0, 1 << 31)
    if raw.get("pid") is not None:
        rec.pid = _pid(raw["pid"])
        rec.start_time = _ticks(raw.get("start_time"))
        pipes = raw.get("pipes", [0, 0])
        if not isinstance(pipes, list) or len(pipes) != 2:
            raise ValueError("pipes: expected a list of two inode numbers")
        rec.pipes = (_ticks(pipes[0]), _ticks(pipes[1]))
        started = raw.get("started", 0.0)
        if (
            isinstance(started, bool)
            or not isinstance(started, int | float)
            or not math.isfinite(started)
            or not 0 <= started < 1e11
        ):
            raise ValueError(f"started: expected a wall-clock time, got {str(started)[:40]!r}")
        rec.started = float(started)
    spec = raw.get("spec", "")
    if not isinstance(spec, str) or (spec and not _DIGEST.match(spec)):
        raise ValueError("spec: expected a hex digest")
    rec.spec = spec
    others = raw.get("others", [])
    if not isinstance(others, list) or len(others) > MAX_OTHERS:
        raise ValueError("others: expected a list of [pid, start time] pairs")
    for item in others:
        if not isinstance(item, list) or len(item) != 2:
            raise ValueError("others: expected a list of [pid, start time] pairs")
        rec.others.append((_pid(item[0]), _ticks(item[1])))
    intent = raw.get("intent")
    if intent is not None and intent not in INTENTS:
        raise ValueError(f"intent: expected one of {', '.join(INTENTS)}")
    rec.intent = intent
    state = raw.get("state")
    if state is not None:
        if rec.pid is not None or state not in RESTORED_STATES:
            raise ValueError("state: only a program without a process keeps a state")
        rec.state = state
        detail = raw.get("detail", "")
        rec.detail = detail[:512] if isinstance(detail, str) else ""
    if raw.get("last_exit") is not None:
        rec.last_exit = _exit(raw["last_exit"])
    return rec


def _exit(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or raw.get("reason") not in EXIT_REASONS:
        raise ValueError("last_exit: expected an exit record")
    code, sig, detail = raw.get("code"), raw.get("signal"), raw.get("detail", "")
    return {
        "reason": raw["reason"],
        "code": None if code is None else _int(code, -(1 << 31), 1 << 31),
        "signal": None if sig is None else _int(sig, 1, 128),
        "detail": detail[:512] if isinstance(detail, str) else "",
    }


def _salvage(raw: Any) -> tuple[int, int] | None:
    """The (pid, start time) of a record that is otherwise unusable, if those two are sound."""
    if not isinstance(raw, dict):
        return None
    try:
        return _pid(raw.get("pid")), _ticks(raw.get("start_time"))
    except ValueError:
        return None


def parse(data: bytes, *, boot_id: str, path: str = "state.json") -> Saved:
    """Check a state file's content; never raises. Records of another boot are ignored."""
    saved = Saved()
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        log.error("%s is not valid JSON; its programs are treated as unknown", path)
        return saved
    if not isinstance(doc, dict):
        log.error("%s does not hold a JSON object; its programs are treated as unknown", path)
        return saved
    if doc.get("boot_id") != boot_id:
        return saved  # written before a reboot: every pid in it is meaningless
    notify = doc.get("notify")
    if isinstance(notify, str) and _NOTIFY.match(notify):
        saved.notify = notify
    programs = doc.get("programs")
    if not isinstance(programs, dict):
        if programs is not None:
            log.error("%s: programs is not a JSON object; treated as unknown", path)
        return saved
    for name, raw in programs.items():
        try:
            saved.records[name] = _record(raw)
        except (ValueError, TypeError) as e:
            shown = ascii(name)[1:-1][:80]
            log.error(
                "%s: the record of %s is unusable (%s); its process, if any, is treated as "
                "unknown and stopped",
                path,
                shown,
                e,
            )
            stray = _salvage(raw)
            if stray is not None:
                saved.strays.append(stray)
    return saved


def dump(*, boot_id: str, daemon_pid: int, notify: str, records: dict[str, Record]) -> bytes:
    """The file's content for these records."""
    programs: dict[str, Any] = {}
    for name, rec in records.items():
        item: dict[str, Any] = {"restarts": rec.restarts}
        if rec.pid is not None:
            item.update(
                pid=rec.pid,
                start_time=rec.start_time,
                pipes=list(rec.pipes),
                started=rec.started,
            )
        if rec.spec:
            item["spec"] = rec.spec
        if rec.others:
            item["others"] = [list(o) for o in rec.others]
        if rec.intent is not None:
            item["intent"] = rec.intent
        if rec.state is not None:
            item["state"] = rec.state
            item["detail"] = rec.detail
        if rec.last_exit is not None:
            item["last_exit"] = rec.last_exit
        programs[name] = item
    doc = {
        "version": VERSION,
        "boot_id": boot_id,
        "daemon_pid": daemon_pid,
        "notify": notify,
        "programs": programs,
    }
    return json.dumps(doc).encode()
