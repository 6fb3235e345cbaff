"""Routes of the control API. The OpenAPI document in ``heartline/api/openapi.json`` describes
exactly these; a test keeps the two in step."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from heartline import __version__
from heartline._util import handles_signal
from heartline.api import Figures, StatusReply, openapi_bytes
from heartline.config import load_config, parse_signal
from heartline.daemon._http import Request, Response
from heartline.errors import ConfigError, MoveRefused, UnknownProgram
from heartline.supervise import (
    FollowBuffer,
    LogFile,
    Program,
    Reading,
    Supervisor,
    figures,
    read_groups,
)

if TYPE_CHECKING:
    from heartline.daemon._daemon import Daemon

MAX_TAIL_LINES = 100_000


_EMPTY_FIGURES: dict[str, Any] = {
    "cpu_pct": None, "rss": None, "read_bps": None, "write_bps": None, "fds": None,
    "processes": [],
}  # fmt: skip


#: A status or top answer walks the programs' process trees at most this often (escapees that
#: came back to the daemon are seen at once; a setsid child of a live program within this).
_ESCAPEES_TTL = 5.0


class _Invalid(Exception):
    pass


def _other_groups(prog: Program) -> set[int]:
    """Process groups of a program's processes outside its main group (escapees)."""
    groups = set()
    for pid in prog.others:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    return groups


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures of several process groups of one program, summed (None stays None)."""
    if len(parts) == 1:
        return parts[0]
    out: dict[str, Any] = {}
    for key in ("cpu_pct", "rss", "read_bps", "write_bps", "fds"):
        known = [p[key] for p in parts if p.get(key) is not None]
        out[key] = sum(known) if known else None
    out["processes"] = sorted(
        (proc for p in parts for proc in p["processes"]), key=lambda r: r["pid"]
    )
    return out


def _flag(req: Request, name: str) -> bool:
    """A boolean query parameter: true/false (1/0 too); anything else is refused."""
    values = req.query.get(name)
    if not values:
        return False
    if len(values) > 1 or values[0] not in ("true", "false", "1", "0"):
        raise _Invalid(f'"{name}" must be true or false')
    return values[0] in ("true", "1")


def _names(body: Any) -> list[str]:
    if not isinstance(body, dict):
        raise _Invalid("the body must be a JSON object")
    names = body.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise _Invalid('"names" must be a non-empty list of program names (or ["all"])')
    if len(names) > 10_000:
        raise _Invalid('"names" lists too many programs')
    return names


class Api:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.started = time.time()
        self.routes: dict[tuple[str, str], Callable[[Request], Any]] = {
            ("GET", "/v1/status"): self.status,
            ("POST", "/v1/start"): self.start,
            ("POST", "/v1/stop"): self.stop,
            ("POST", "/v1/restart"): self.restart,
            ("POST", "/v1/signal"): self.signal,
            ("POST", "/v1/reload"): self.reload,
            ("POST", "/v1/reopen-logs"): self.reopen_logs,
            ("POST", "/v1/shutdown"): self.shutdown,
            ("GET", "/v1/openapi.json"): self.openapi,
            ("GET", "/v1/top"): self.top,
            ("POST", "/v1/report"): self.report,
            ("POST", "/v1/move"): self.move,
        }
        self._reading: Reading | None = None

    @property
    def sup(self) -> Supervisor:
        return self.daemon.supervisor

    async def __call__(self, req: Request) -> Response:
        route = self.routes.get((req.method, req.path))
        if route is None and req.method == "GET" and req.path.startswith("/v1/logs/"):
            route = self.logs
        if route is None:
            allowed = [m for m, path in self.routes if path == req.path]
            if req.path.startswith("/v1/logs/"):
                allowed = ["GET"]
            if allowed:
                resp = Response.error(
                    405, "method_not_allowed", f"{req.method} is not allowed on {req.path}"
                )
                resp.headers.append(("Allow", ", ".join(allowed)))
                return resp
            return Response.error(404, "not_found", f"no such endpoint: {req.path}")
        body: Any = None
        if req.method == "POST":
            try:
                body = req.json()
            except ValueError as e:
                return Response.error(400, "bad_request", str(e))
            if not isinstance(body, dict):
                return Response.error(422, "invalid", "the body must be a JSON object")
        try:
            result: Response = await route(body if req.method == "POST" else req)
        except UnknownProgram as e:
            return Response.error(404, "unknown_program", str(e), name=e.name)
        except _Invalid as e:
            return Response.error(422, "invalid", str(e))
        return result

    async def _resources(self, *, min_window: float) -> tuple[dict[int, Any], float | None]:
        """Figures per process group, with rates over at least ``min_window`` seconds when
        asked (waiting for a second reading if the last one is too recent or missing)."""
        self.sup.track_processes(max_age=_ESCAPEES_TTL)
        pgids = {p.pid for p in self.sup.programs.values() if p.pid is not None}
        pgids |= {g for p in self.sup.programs.values() for g in _other_groups(p)}
        before = self._reading
        if min_window > 0 and (before is None or time.monotonic() - before.at < min_window / 2):
            before = read_groups(pgids)
            await asyncio.sleep(min_window)
        reading = read_groups(pgids)
        self._reading = reading
        window = reading.at - before.at if before is not None else None
        return figures(reading, before), window

    async def top(self, req: Request) -> Response:
        groups, window = await self._resources(min_window=0.5)
        progs = []
        for p in self.sup.programs.values():
            row = {
                "name": p.spec.name,
                "state": p.state.value,
                "pid": p.pid,
                "restarts": p.restarts,
                **_EMPTY_FIGURES,
            }
            parts = [groups[g] for g in {p.pid, *_other_groups(p)} if g in groups]
            if parts:
                row.update(_merge(parts))
            progs.append(row)
        return Response.json({"sampled": time.time(), "window": window, "programs": progs})

    async def status(self, req: Request) -> Response:
        # Processes that escaped their program show up under it (a walk of the process tree,
        # reused for a while so that a client polling status costs little).
        self.sup.track_processes(max_age=_ESCAPEES_TTL)
        names = req.query.get("name", [])
        progs = self.sup.snapshot(names)
        if _flag(req, "resources"):
            groups, _window = await self._resources(min_window=0)
            for prog in progs:
                pid = prog["pid"]
                figures: Figures | None = None
                if pid is not None and pid in groups:
                    figures = {k: v for k, v in groups[pid].items() if k != "processes"}  # type: ignore[assignment]
                prog["resources"] = figures
        reply: StatusReply = {
            "daemon": {
                "pid": os.getpid(),
                "version": __version__,
                "config": self.daemon.config_path,
                "started": self.started,
                "uptime": round(time.time() - self.started, 3),
                "state_file": self.sup.state_error,
                "notify": {
                    "socket": self.sup.notify.address,
                    "received": self.sup.notify.received,
                    "dropped": self.sup.notify.dropped,
                },
            },
            "programs": progs,
        }
        return Response.json(reply)

    async def start(self, body: Any) -> Response:
        return Response.json({"programs": await self.sup.start(_names(body))})

    async def stop(self, body: Any) -> Response:
        return Response.json({"results": await self.sup.stop(_names(body))})

    async def restart(self, body: Any) -> Response:
        return Response.json({"programs": await self.sup.restart(_names(body))})

    async def signal(self, body: Any) -> Response:
        names = _names(body)
        raw = body.get("signal")
        if not isinstance(raw, str | int) or isinstance(raw, bool):
            raise _Invalid('"signal" must be a signal name such as "HUP" or a number')
        try:
            sig = parse_signal(raw)
        except ValueError as e:
            raise _Invalid(str(e)) from None
        return Response.json({"results": self.sup.signal(names, sig)})

    async def reload(self, body: Any) -> Response:
        try:
            config = load_config(self.daemon.config_path)
        except ConfigError as e:
            return Response.error(422, "config_error", str(e))
        diff = await self.daemon.apply_config(config)
        return Response.json(diff)

    async def reopen_logs(self, body: Any) -> Response:
        self.sup.reopen_logs()
        return Response.json({"ok": True})

    async def shutdown(self, body: Any) -> Response:
        self.daemon.request_stop()
        return Response.json({"ok": True})

    async def move(self, body: Any) -> Response:
        """Hand a singleton program over to another host (``to``, or any standing by)."""
        name, to = body.get("name"), body.get("to")
        if not isinstance(name, str) or not name:
            raise _Invalid('"name" must be a program name')
        if to is not None and (not isinstance(to, str) or not to):
            raise _Invalid('"to" must be a host name, or null for any host standing by')
        self.sup.resolve([name])  # an unknown name is a 404
        seats = self.daemon.seats
        if seats is None:
            return Response.error(
                409, "move_refused", f"{name}: this daemon's config has no [cluster] section"
            )
        try:
            return Response.json(await seats.move(name, to))
        except MoveRefused as e:
            return Response.error(409, "move_refused", str(e))

    async def report(self, body: Any) -> Response:
        """Ask a running program for a report (its report signal) and answer with it."""
        from heartline.service import reports

        name = body.get("name")
        fmt = body.get("format", "text")
        timeout = body.get("timeout", 5)
        if not isinstance(name, str) or not name:
            raise _Invalid('"name" must be a program name')
        if fmt not in ("text", "json"):
            raise _Invalid('"format" must be "text" or "json"')
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= 60
        ):
            raise _Invalid('"timeout" must be a number of seconds from 0 to 60')
        progs = self.sup.resolve([name])
        if len(progs) != 1:
            return Response.error(
                409,
                "several_instances",
                f"{name} has {len(progs)} instances: name one, such as {progs[0].spec.name}",
            )
        prog = progs[0]
        if prog.pid is None or self.sup.log_dir is None:
            return Response.error(409, "not_running", f"{prog.spec.name} is not running")
        sig = prog.spec.report_signal or int(signal.SIGUSR2)
        if not handles_signal(prog.pid, sig):
            return Response.error(
                409,
                "no_reports",
                f"{prog.spec.name} does not handle {signal.Signals(sig).name}: it must call "
                "heartline.service.reports.install() (sending the signal would end it)",
            )
        directory = self.sup.report_dir(prog.spec.name)
        before = {r.path for r in reports.list(directory)}
        prog.send_signal(sig)
        # The wait is an inotify watch that this loop serves (loop.add_reader), not a blocking
        # wait in a thread: a thread held for up to the timeout per request would come from
        # the loop's small default executor. The daemon answers other requests meanwhile.
        report = await reports.wait_for_report(
            directory, known=before, timeout=float(timeout), with_json=fmt == "json"
        )
        if report is None:
            return Response.error(
                409, "no_report", f"no report from {prog.spec.name} within {float(timeout):g}s"
            )
        if fmt == "json":
            return Response.json(report.read_json())
        return Response(200, report.read_text().encode(), "text/plain")

    async def openapi(self, req: Request) -> Response:
        return Response(200, openapi_bytes())

    async def logs(self, req: Request) -> Response:
        name = req.path.removeprefix("/v1/logs/")
        prog = self.sup.programs.get(name)
        if prog is None:
            raise UnknownProgram(name)
        stream = req.query.get("stream", ["stdout"])[-1]
        if stream not in ("stdout", "stderr"):
            raise _Invalid('"stream" must be stdout or stderr')
        raw_lines = req.query.get("lines", ["10"])[-1]
        if not (raw_lines.isascii() and raw_lines.isdigit()) or int(raw_lines) > MAX_TAIL_LINES:
            raise _Invalid(f'"lines" must be a number from 0 to {MAX_TAIL_LINES}')
        follow = _flag(req, "follow")
        logfile = prog.out if stream == "stdout" else prog.err
        if logfile is None:
            return Response(200, b"", "text/plain")
        tail = logfile.tail(int(raw_lines))
        if not follow:
            return Response(200, tail, "text/plain")
        return Response(200, content_type="text/plain", stream=_follow(logfile, tail, req))


async def _follow(logfile: LogFile, first: bytes, req: Request) -> AsyncIterator[bytes]:
    """The tail, then new output as it is written, until the client goes away.

    Output waits for the client in a FollowBuffer bounded in bytes: a client that does not keep
    up misses output (and is told how much) instead of making the daemon hold it.
    """
    ready = asyncio.Event()
    buffer = FollowBuffer(wake=ready.set)
    logfile.followers.add(buffer)
    try:
        yield first
        gone = asyncio.ensure_future(req.disconnected.wait())
        try:
            while True:
                waiting = asyncio.ensure_future(ready.wait())
                done, _ = await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
                if waiting not in done:
                    waiting.cancel()
                    return
                ready.clear()
                yield buffer.take()
        finally:
            gone.cancel()
    finally:
        logfile.followers.discard(buffer)
        buffer.clear()
