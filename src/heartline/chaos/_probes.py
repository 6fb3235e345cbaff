"""Probes, all at once, each with its own timeout, at a fixed resolution.

Every ``resolution`` seconds each lane whose last sample has finished starts a new one; a
sample is stamped with the moment it started (what it saw was the state then: a connect that
times out after 1 s says the service was unreachable when it was tried). One probe is one
lane, but for ``ssh-port``, which has a lane per host. Only state changes are kept for the
timeline; every sample counts for availability.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from heartline.chaos._places import LOCAL, Place, default_socket, lab_place, open_lab
from heartline.chaos._spec import Experiment, ProbeSpec

Check = Callable[[], Awaitable[str | None]]  # None: healthy; else why not


@dataclass
class Lane:
    name: str
    probe: str
    kind: str
    what: str
    timeout: float
    check: Check
    #: Every sample: (t, ok, detail); t in seconds since the run's start.
    samples: list[tuple[float, bool, str]] = field(default_factory=list)
    busy: bool = False

    @property
    def last(self) -> tuple[float, bool, str] | None:
        return self.samples[-1] if self.samples else None


class Probes:
    def __init__(self, lanes: list[Lane], resolution: float, t0: float) -> None:
        self.lanes = lanes
        self.resolution = resolution
        self.t0 = t0
        self.listeners: list[Callable[[Lane, tuple[float, bool, str]], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for t in list(self._inflight):
            t.cancel()
        for t in list(self._inflight):
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        # Ticks on a fixed grid from the start: a slow tick does not shift the next ones.
        start = loop.time()
        n = 0
        while True:
            for lane in self.lanes:
                if not lane.busy:
                    lane.busy = True
                    task = loop.create_task(self._sample(lane))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
            n += 1
            delay = start + n * self.resolution - loop.time()
            if delay < 0:  # fell behind (a stalled machine): skip the missed ticks
                n += int(-delay / self.resolution) + 1
                delay = start + n * self.resolution - loop.time()
            await asyncio.sleep(delay)

    async def _sample(self, lane: Lane) -> None:
        t = self.now()
        try:
            try:
                why = await asyncio.wait_for(lane.check(), lane.timeout)
            except TimeoutError:
                why = f"no answer within {lane.timeout:g}s"
            except OSError as e:
                why = _os_error(e)
            sample = (t, why is None, why or "")
            lane.samples.append(sample)
            for f in self.listeners:
                f(lane, sample)
        finally:
            lane.busy = False

    def all_ok(self, names: list[str] | None = None) -> bool:
        lanes = [x for x in self.lanes if names is None or x.probe in names]
        return all(x.last is not None and x.last[1] for x in lanes)

    def failing(self, names: list[str] | None = None) -> list[Lane]:
        return [
            x
            for x in self.lanes
            if (names is None or x.probe in names) and x.last is not None and not x.last[1]
        ]


def _os_error(e: OSError) -> str:
    if e.errno:
        return os.strerror(e.errno).lower()
    return (e.strerror or str(e) or type(e).__name__).lower()


def lanes(exp: Experiment, *, socket: str | None) -> list[Lane]:
    out: list[Lane] = []
    for p in exp.probes.values():
        if p.kind == "ssh-port":
            assert p.target is not None
            t = exp.targets[p.target]
            for h in t.hosts:
                addr = _host_address(exp, t.via, h)
                out.append(
                    Lane(
                        f"{p.name}:{h}",
                        p.name,
                        p.kind,
                        f"{addr}:{p.port}",
                        p.timeout,
                        _tcp(addr, p.port),
                    )
                )
            continue
        out.append(Lane(p.name, p.name, p.kind, _what(p), p.timeout, _check(exp, p, socket)))
    return out


def _what(p: ProbeSpec) -> str:
    if p.kind == "tcp":
        return str(p.address)
    if p.kind == "http":
        return str(p.url)
    if p.kind == "exec":
        return " ".join(p.command)
    where = f" on {p.host}" if p.host else ""
    return f"program {p.program}{where}"


def _host_address(exp: Experiment, via: str, host: str) -> str:
    if via == "lab":
        assert exp.lab_dir is not None
        return open_lab(exp.lab_dir).address(host)
    return host.rpartition("@")[2]


def _check(exp: Experiment, p: ProbeSpec, socket: str | None) -> Check:
    if p.kind == "tcp":
        assert p.address is not None
        host, _, port = p.address.rpartition(":")
        return _tcp(host.strip("[]"), int(port))
    if p.kind == "http":
        assert p.url is not None
        return _http(p.url, p.status or 200, p.body)
    if p.kind == "exec":
        return _exec(list(p.command))
    assert p.program is not None
    if p.via == "local":
        return _program_local(p.program, p.socket or socket)
    assert p.host is not None
    place = lab_place(exp.lab_dir or "", p.host) if p.via == "lab" else Place("ssh", p.host)
    return _program_remote(place, p.program, p.socket)


def _tcp(host: str, port: int) -> Check:
    async def check() -> str | None:
        _, writer = await asyncio.open_connection(host, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None

    return check


def _http(url: str, status: int, body: str | None) -> Check:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
        "User-Agent: heartline-chaos\r\n\r\n"
    ).encode()

    async def check() -> str | None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request)
            await writer.drain()
            data = await reader.read(65536)
            while len(data) < 1 << 20:
                more = await reader.read(65536)
                if not more:
                    break
                data += more
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, _, content = data.partition(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        words = line.split()
        if len(words) < 2 or not words[1].isdigit():
            return f"not an HTTP answer: {line[:60]!r}" if line else "closed without an answer"
        if int(words[1]) != status:
            return f"HTTP {words[1]} (expected {status})"
        if body is not None and body.encode() not in content:
            return f"body lacks {body[:40]!r}"
        return None

    return check


def _exec(command: list[str]) -> Check:
    async def check() -> str | None:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _, err = await proc.communicate()
        except asyncio.CancelledError:
            # Timed out (or the run ends): the probe's whole group goes, not only its leader.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        if proc.returncode != 0:
            last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            return f"exit {proc.returncode}" + (f": {last[0][:80]}" if last[0] else "")
        return None

    return check


def _program_local(name: str, socket: str | None) -> Check:
    from heartline.api import Client
    from heartline.errors import HeartlineError

    path = socket or default_socket()

    def ask() -> str | None:
        try:
            with Client(path, timeout=2.0) as c:
                found = c.status([name])["programs"]
        except HeartlineError as e:
            return str(e)
        state = found[0]["state"] if found else "unknown"
        return None if state == "running" else state

    async def check() -> str | None:
        return await asyncio.to_thread(ask)

    return check


def _program_remote(place: Place, name: str, socket: str | None) -> Check:
    cmd = place.heartline() + (["-s", socket] if socket else []) + ["status", "--json", name]

    async def check() -> str | None:
        argv, env = place.argv(cmd)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await proc.communicate()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        if proc.returncode != 0:
            return err.decode("utf-8", "replace").strip()[:100] or f"exit {proc.returncode}"
        try:
            state = json.loads(out)["programs"][0]["state"]
        except (ValueError, KeyError, IndexError, TypeError):
            return "unreadable status"
        return None if state == "running" else str(state)

    return check


__all__ = ["LOCAL", "Lane", "Probes", "lanes"]
