"""The fault proxy: a small TCP proxy in front of a TCP service that adds latency, caps
bandwidth, resets, blackholes, times out or refuses connections while a toxic is set.

This kernel has no netem, and rules in the kernel need privileges; a proxy on loopback needs
neither and works the same everywhere. One toxic is in force at a time. It is swapped on the
proxy's own event loop in one step with no await inside, so every connection open at that
moment and every connection accepted after it sees the new toxic, and none sees the old one
again (a proxy that applied toxics per connection let some connections escape them).

Process mode (``python -m heartline.chaos._proxy``) adds a dead-man: the proxy reads one
command a line on stdin and clears its toxic and exits when stdin closes (its controller
died) or when no line came within the lease. A toxic never outlives its controller by more
than the lease.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import errno
import ipaddress
import logging
import math
import os
import random
import re
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Literal, NoReturn

from heartline._util import parse_duration, parse_size
from heartline.errors import ChaosErrored, HeartlineError, UsageError

log = logging.getLogger(__name__)

ToxicKind = Literal["latency", "bandwidth", "reset", "blackhole", "timeout", "down"]
Direction = Literal["up", "down", "both"]

_KINDS: tuple[ToxicKind, ...] = ("latency", "bandwidth", "reset", "blackhole", "timeout", "down")
_DIRECTIONS: tuple[Direction, ...] = ("up", "down", "both")
_FORMS = (
    "latency 200ms [jitter 50ms] [up|down|both], bandwidth 64KiB/s [up|down|both], reset, "
    "blackhole, timeout 2s (0 holds until cleared), down"
)
#: As parse_duration: timers far beyond a year are a typo, not an experiment.
_MAX_SECONDS = 365 * 86400.0
_CHUNK = 65536
#: Chunks a direction holds between its reader and its writer; beyond that the reader waits,
#: and the sender feels the back-pressure as it would without the proxy.
_QUEUE = 64
#: A paced direction sends a twentieth of a second's worth at a time.
_PACE_STEPS = 20
_LINGER_RST = struct.pack("ii", 1, 0)


def _bad(text: str, what: str) -> UsageError:
    shown = text.strip()
    if len(shown) > 60:
        shown = shown[:60] + "..."
    return UsageError(f"bad toxic {shown!r}: {what}; the forms are: {_FORMS}")


def _seconds(text: str, word: str, what: str) -> float:
    # A bare number is ambiguous here (toxiproxy means milliseconds, parse_duration seconds):
    # a unit is required, except for zero.
    if re.fullmatch(r"[0-9.]+", word) and word.strip(".") and float(word) != 0:
        raise _bad(text, f"{what} {word!r} needs a unit, such as {word}ms or {word}s")
    try:
        return parse_duration(word)
    except ValueError as e:
        raise _bad(text, f"{what}: {e}") from None


def _rate(text: str, word: str) -> int:
    if not word.lower().endswith("/s"):
        raise _bad(text, f"the rate {word!r} is not per second, such as 64KiB/s")
    try:
        rate = parse_size(word[:-2])
    except ValueError as e:
        raise _bad(text, f"the rate: {e}") from None
    if rate < 1:
        raise _bad(text, "the rate must be at least 1B/s")
    return rate


def _format_seconds(seconds: float) -> str:
    text = f"{round(seconds * 1000, 3):.3f}".rstrip("0").rstrip(".")
    return f"{text}ms"


def _format_rate(rate: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if rate % factor == 0:
            return f"{rate // factor}{unit}/s"
    return f"{rate}B/s"


@dataclass(frozen=True)
class Toxic:
    """One fault of the proxy.

    ``kind`` is one of:

    - ``latency``: each chunk is held ``delay`` seconds, plus or minus up to ``jitter``
      (never below zero), counted from when the proxy read it; order is kept.
    - ``bandwidth``: at most ``rate`` bytes a second.
    - ``reset``: open and new connections are reset (an RST: ECONNRESET at the client).
    - ``blackhole``: connections are accepted and read, and what they send is dropped; nothing
      answers and nothing closes.
    - ``timeout``: nothing is forwarded (what arrives is dropped) and the connection is closed
      ``after`` seconds (from when the toxic was set, or the connection accepted); 0 holds it
      open until the toxic is cleared.
    - ``down``: the proxy stops listening (connects are refused) and closes every
      connection; it listens again on the same address when the toxic is cleared.

    ``direction`` (latency and bandwidth) is ``up`` (client to service), ``down`` (service to
    client) or ``both``. Times are in seconds. :meth:`parse` reads the written forms and
    ``str()`` gives them back.
    """

    kind: ToxicKind
    delay: float = 0.0
    jitter: float = 0.0
    rate: int = 0
    after: float = 0.0
    direction: Direction = "both"

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise UsageError(f"unknown toxic kind {self.kind!r}; the kinds are {', '.join(_KINDS)}")
        if self.direction not in _DIRECTIONS:
            raise UsageError(
                f"unknown toxic direction {self.direction!r}; the directions are up, down, both"
            )
        for name in ("delay", "jitter", "after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"the toxic's {name} must be a number of seconds, got {value!r}")
            if not math.isfinite(value) or not 0 <= value <= _MAX_SECONDS:
                raise UsageError(f"the toxic's {name} must be 0 to 365 days, got {value!r}")
        if isinstance(self.rate, bool) or not isinstance(self.rate, int) or self.rate < 0:
            raise UsageError(f"the toxic's rate must be whole bytes a second, got {self.rate!r}")
        if self.kind == "bandwidth" and self.rate < 1:
            raise UsageError("a bandwidth toxic needs a rate of at least 1 byte a second")
        if self.kind != "latency" and (self.delay or self.jitter):
            raise UsageError(f"a {self.kind} toxic takes no delay or jitter (latency does)")
        if self.kind != "bandwidth" and self.rate:
            raise UsageError(f"a {self.kind} toxic takes no rate (bandwidth does)")
        if self.kind != "timeout" and self.after:
            raise UsageError(f"a {self.kind} toxic takes no 'after' (timeout does)")
        if self.kind not in ("latency", "bandwidth") and self.direction != "both":
            raise UsageError(f"a {self.kind} toxic takes no direction (latency, bandwidth do)")

    @classmethod
    def parse(cls, text: str) -> Toxic:
        """A toxic from its written form: ``"latency 200ms jitter 50ms"``, ``"latency 1s up"``,
        ``"bandwidth 64KiB/s"``, ``"reset"``, ``"blackhole"``, ``"timeout 2s"``, ``"down"``.

        Raises UsageError (one line: what is wrong and the accepted forms).
        """
        words = text.split()
        if not words:
            raise _bad(text, "it is empty")
        kind, rest = words[0].lower(), words[1:]
        if kind == "latency":
            if not rest:
                raise _bad(text, "latency needs a delay, such as 200ms")
            delay = _seconds(text, rest[0], "the delay")
            jitter = 0.0
            direction: Direction | None = None
            seen_jitter = False
            i = 1
            while i < len(rest):
                word = rest[i].lower()
                if word == "jitter" and not seen_jitter:
                    if i + 1 >= len(rest):
                        raise _bad(text, "jitter needs a time, such as 50ms")
                    jitter, seen_jitter = _seconds(text, rest[i + 1], "the jitter"), True
                    i += 2
                elif word in _DIRECTIONS and direction is None:
                    direction = _direction(word)
                    i += 1
                else:
                    raise _bad(text, f"unexpected {rest[i]!r}")
            return cls("latency", delay=delay, jitter=jitter, direction=direction or "both")
        if kind == "bandwidth":
            if not rest:
                raise _bad(text, "bandwidth needs a rate, such as 64KiB/s")
            rate = _rate(text, rest[0])
            if len(rest) > 2 or (len(rest) == 2 and rest[1].lower() not in _DIRECTIONS):
                raise _bad(text, f"unexpected {rest[1]!r}")
            return cls(
                "bandwidth", rate=rate, direction=_direction(rest[1]) if rest[1:] else "both"
            )
        if kind == "timeout":
            if len(rest) != 1:
                raise _bad(text, "timeout needs one time, such as 2s (0 holds until cleared)")
            return cls("timeout", after=_seconds(text, rest[0], "the timeout"))
        if kind in ("reset", "blackhole", "down"):
            if rest:
                raise _bad(text, f"{kind} takes nothing after it, got {rest[0]!r}")
            return cls(_kind(kind))
        raise _bad(text, f"unknown toxic {words[0]!r}")

    def __str__(self) -> str:
        if self.kind == "latency":
            text = f"latency {_format_seconds(self.delay)}"
            jitter = _format_seconds(self.jitter)
            if jitter != "0ms":
                text += f" jitter {jitter}"
        elif self.kind == "bandwidth":
            text = f"bandwidth {_format_rate(self.rate)}"
        elif self.kind == "timeout":
            return f"timeout {_format_seconds(self.after)}"
        else:
            return self.kind
        return text if self.direction == "both" else f"{text} {self.direction}"


def _direction(word: str) -> Direction:
    for direction in _DIRECTIONS:
        if word.lower() == direction:
            return direction
    raise AssertionError(word)  # callers check first


def _kind(word: str) -> ToxicKind:
    for kind in _KINDS:
        if word == kind:
            return kind
    raise AssertionError(word)  # callers check first


def _passes(toxic: Toxic | None) -> bool:
    """Whether data flows at all under ``toxic`` (slowed, perhaps)."""
    return toxic is None or toxic.kind in ("latency", "bandwidth")


def _shapes(toxic: Toxic | None, kind: ToxicKind, direction: str) -> bool:
    return toxic is not None and toxic.kind == kind and toxic.direction in ("both", direction)


def _close_socket(loop: asyncio.AbstractEventLoop, sock: socket.socket, *, rst: bool) -> None:
    fd = sock.fileno()
    if fd < 0:
        return
    # Unregistered here, before the close: the cancelled sock_recv/sock_sendall would
    # otherwise unregister the fd number later, by then perhaps another socket's.
    loop.remove_reader(fd)
    loop.remove_writer(fd)
    if rst:
        # SO_LINGER 0: close() sends an RST instead of a FIN.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    sock.close()


class FaultProxy:
    """A TCP proxy from ``listen`` to ``upstream`` that applies one :class:`Toxic` at a time.

    ``start()`` returns once it listens (``address`` is where); the proxy runs its own event
    loop in a daemon thread named ``heartline-proxy``; ``stop()`` closes the listener and every
    connection. Use it as a context manager. It listens on loopback only unless
    ``allow_remote`` is true. Names are resolved once, at start. A client whose upstream
    connection is refused or takes longer than ``connect_timeout`` seconds is reset.
    """

    def __init__(
        self,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        upstream: tuple[str, int],
        allow_remote: bool = False,
        connect_timeout: float = 5.0,
    ) -> None:
        self._listen = listen
        self._upstream = upstream
        self._allow_remote = allow_remote
        self._connect_timeout = connect_timeout
        self._toxic: Toxic | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._listener: socket.socket | None = None
        self._family = socket.AF_INET
        self._address: tuple[str, int] | None = None
        self._upstream_family = socket.AF_INET
        self._upstream_address: tuple[str, int] | tuple[str, int, int, int] = ("", 0)
        self._conns: set[_Conn] = set()
        self._changed: asyncio.Future[None] | None = None

    # --- the caller's side ---------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the proxy listens on (the port it got, when asked for 0)."""
        if self._address is None:
            raise UsageError("the fault proxy is not started: call start() first")
        return self._address

    @property
    def toxic(self) -> Toxic | None:
        """The toxic in force, None for plain forwarding."""
        return self._toxic

    def start(self) -> None:
        """Listen and serve; returns once connections are accepted.

        Raises UsageError for an address that is not loopback (without ``allow_remote``) or
        does not resolve, ChaosErrored when the address cannot be listened on.
        """
        with self._lock:
            if self._started:
                raise UsageError("the fault proxy was started already (start it once)")
            family, sockaddr = _resolve(self._listen, "listen")
            if not self._allow_remote and not ipaddress.ip_address(sockaddr[0]).is_loopback:
                raise UsageError(
                    f"the fault proxy listens on loopback only and {self._listen[0]} is not "
                    "loopback (allow it with allow_remote=True, or --allow-remote)"
                )
            self._upstream_family, self._upstream_address = _resolve(self._upstream, "upstream")
            self._family = family
            self._listener = _listen_on(family, sockaddr)
            host, port = self._listener.getsockname()[:2]
            self._address = (host, port)
            self._started = True
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            self._loop = loop
            self._thread = threading.Thread(
                target=self._serve, args=(loop, ready), name="heartline-proxy", daemon=True
            )
            self._thread.start()
            ready.wait()
            log.info("fault proxy on %s:%d to %s:%d", host, port, *self._upstream[:2])

    def stop(self) -> None:
        """Close the listener and every connection and end the proxy's thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            loop.call_soon_threadsafe(self._shutdown)
            thread.join()
            self._loop = None
            self._thread = None

    def set(self, toxic: Toxic | str) -> None:
        """Put ``toxic`` (or its written form) in force, in place of the one before, for
        every open connection and every new one. Returns once it is in force.

        Raises UsageError for a bad written form, ChaosErrored when leaving ``down`` and the
        address cannot be listened on again (the proxy stays down).
        """
        self._switch(Toxic.parse(toxic) if isinstance(toxic, str) else toxic)

    def clear(self) -> None:
        """Back to plain forwarding (listening again after ``down``)."""
        self._switch(None)

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _switch(self, toxic: Toxic | None) -> None:
        if threading.current_thread() is self._thread:
            self._apply(toxic)  # on the loop already (the lock may be held by a waiting set())
            return
        with self._lock:
            loop = self._loop
            if loop is None:
                self._toxic = toxic  # in force from start()
                return
            done: concurrent.futures.Future[None] = concurrent.futures.Future()

            def apply() -> None:
                try:
                    self._apply(toxic)
                except BaseException as e:
                    done.set_exception(e)
                else:
                    done.set_result(None)

            loop.call_soon_threadsafe(apply)
            done.result()

    # --- the proxy's loop ----------------------------------------------------------------

    def _serve(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        self._changed = loop.create_future()
        if self._toxic is not None and self._toxic.kind == "down":
            self._close_listener()
        else:
            self._watch_listener()
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    def _shutdown(self) -> None:
        assert self._loop is not None
        self._close_listener()
        for conn in list(self._conns):
            conn.close()
        self._loop.stop()

    def _watch_listener(self) -> None:
        assert self._loop is not None and self._listener is not None
        self._loop.add_reader(self._listener.fileno(), self._accept)

    def _close_listener(self) -> None:
        if self._listener is not None:
            assert self._loop is not None
            _close_socket(self._loop, self._listener, rst=False)
            self._listener = None

    def _accept(self) -> None:
        loop, listener = self._loop, self._listener
        assert loop is not None and listener is not None
        for _ in range(64):  # then let the connections' own work run
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: the listener stays readable, so stop watching it a
                    # moment rather than spin.
                    log.warning("fault proxy: cannot accept: %s; retrying in 0.1 s", e)
                    loop.remove_reader(listener.fileno())
                    loop.call_later(0.1, self._resume_accept, listener)
                else:
                    log.info("fault proxy: accept failed: %s", e)
                return
            self._adopt(sock)

    def _resume_accept(self, listener: socket.socket) -> None:
        if self._listener is listener and listener.fileno() >= 0:
            self._watch_listener()

    def _adopt(self, sock: socket.socket) -> None:
        assert self._loop is not None
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._toxic is not None and self._toxic.kind == "reset":
            _close_socket(self._loop, sock, rst=True)
            return
        conn = _Conn(self, self._loop, sock)
        self._conns.add(conn)
        conn.start(self._toxic)

    def _apply(self, toxic: Toxic | None) -> None:
        """The switch itself, on the loop: nothing here awaits, so no connection can be
        accepted or move data between the old toxic and the new."""
        assert self._loop is not None and self._changed is not None
        was_down = self._toxic is not None and self._toxic.kind == "down"
        down = toxic is not None and toxic.kind == "down"
        if was_down and not down:
            assert self._address is not None
            try:
                self._listener = _listen_on(self._family, self._address)
            except ChaosErrored as e:
                raise ChaosErrored(f"the fault proxy stays down: {e}") from None
            self._watch_listener()
        self._toxic = toxic
        changed, self._changed = self._changed, self._loop.create_future()
        changed.set_result(None)
        if down:
            self._close_listener()
        for conn in list(self._conns):
            conn.apply(toxic)
        log.info("fault proxy %s:%d: %s", *self.address, toxic or "plain forwarding")

    async def _until_passing(self) -> None:
        while not _passes(self._toxic):
            assert self._changed is not None
            await asyncio.wait([self._changed])

    async def _sleep_until(self, due: float, changed: asyncio.Future[None]) -> bool:
        """Sleep until the loop's time ``due``; True if the toxic changed first."""
        assert self._loop is not None
        delay = due - self._loop.time()
        if delay <= 0:
            return False
        # asyncio.wait, not a plain await: a cancelled waiter must not cancel the shared future.
        done, _ = await asyncio.wait([changed], timeout=delay)
        return bool(done)


class _Conn:
    """One client's connection and its upstream one: a reader and a writer each way, with a
    queue between them so a delayed chunk does not stop the next from being read."""

    def __init__(
        self, proxy: FaultProxy, loop: asyncio.AbstractEventLoop, client: socket.socket
    ) -> None:
        self.proxy = proxy
        self.loop = loop
        self.client = client
        self.upstream: socket.socket | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.ends = 0
        self.next_free = {"up": 0.0, "down": 0.0}

    def start(self, toxic: Toxic | None) -> None:
        self.apply(toxic)
        if not self.closed:
            self.spawn(self.run())

    def spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def apply(self, toxic: Toxic | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if toxic is None:
            return
        if toxic.kind == "reset":
            self.close(rst=True)
        elif toxic.kind == "down":
            self.close()
        elif toxic.kind == "timeout" and toxic.after > 0:
            self.timer = self.loop.call_later(toxic.after, self.close)

    def close(self, *, rst: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        for sock in (self.client, self.upstream):
            if sock is not None:
                _close_socket(self.loop, sock, rst=rst)
        for task in list(self.tasks):
            task.cancel()
        self.proxy._conns.discard(self)

    async def run(self) -> None:
        to_upstream: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE)
        self.spawn(self.read(self.client, to_upstream))
        # The service is reached only once data may flow: a connection that starts in a
        # blackhole never touches it, and a service that is down does not end that connection.
        await self.proxy._until_passing()
        upstream = socket.socket(self.proxy._upstream_family, socket.SOCK_STREAM)
        upstream.setblocking(False)
        self.upstream = upstream
        try:
            async with asyncio.timeout(self.proxy._connect_timeout):
                await self.loop.sock_connect(upstream, self.proxy._upstream_address)
        except (OSError, TimeoutError) as e:
            log.info("fault proxy: cannot reach %s:%d: %s", *self.proxy._upstream[:2], e)
            self.close(rst=True)  # as the service itself would refuse the client
            return
        with contextlib.suppress(OSError):
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        to_client: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE)
        self.spawn(self.write(to_upstream, upstream, "up"))
        self.spawn(self.read(upstream, to_client))
        self.spawn(self.write(to_client, self.client, "down"))

    async def read(self, sock: socket.socket, queue: asyncio.Queue[tuple[float, bytes]]) -> None:
        try:
            while True:
                data = await self.loop.sock_recv(sock, _CHUNK)
                if not data:
                    await queue.put((self.loop.time(), b""))
                    return
                if _passes(self.proxy._toxic):
                    await queue.put((self.loop.time(), data))
        except OSError:
            self.close(rst=True)

    async def write(
        self, queue: asyncio.Queue[tuple[float, bytes]], sock: socket.socket, direction: str
    ) -> None:
        try:
            while True:
                arrival, data = await queue.get()
                if data:
                    await self.deliver(arrival, data, sock, direction)
                    continue
                # The end of the stream is never dropped, only held while nothing flows.
                await self.proxy._until_passing()
                sock.shutdown(socket.SHUT_WR)
                self.ends += 1
                if self.ends == 2:
                    self.close()
                return
        except OSError:
            self.close(rst=True)

    async def deliver(
        self, arrival: float, data: bytes, sock: socket.socket, direction: str
    ) -> None:
        """Send one chunk under whatever toxic is in force, looking again whenever it changes
        while the chunk waits."""
        proxy, view = self.proxy, memoryview(data)
        while view:
            toxic, changed = proxy._toxic, proxy._changed
            assert changed is not None
            if not _passes(toxic):
                return  # dropped
            if toxic is not None and _shapes(toxic, "latency", direction):
                # Jitter needs no secrecy.
                spread = random.uniform(-toxic.jitter, toxic.jitter)  # noqa: S311
                if await proxy._sleep_until(arrival + max(0.0, toxic.delay + spread), changed):
                    continue
            elif toxic is not None and _shapes(toxic, "bandwidth", direction):
                piece = view[: max(1, min(_CHUNK, toxic.rate // _PACE_STEPS))]
                start = max(self.next_free[direction], self.loop.time())
                if await proxy._sleep_until(start, changed):
                    continue
                await self.loop.sock_sendall(sock, piece)
                self.next_free[direction] = start + len(piece) / toxic.rate
                view = view[len(piece) :]
                continue
            await self.loop.sock_sendall(sock, view)
            return


def _resolve(
    address: tuple[str, int], what: str
) -> tuple[socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int]]:
    host, port = address
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise UsageError(f"the {what} port must be 0 to 65535, got {port!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        reason = e.strerror if isinstance(e, socket.gaierror) else str(e)
        raise UsageError(f"the {what} host {host!r} does not resolve: {reason}") from None
    family, _, _, _, sockaddr = infos[0]
    if family not in (socket.AF_INET, socket.AF_INET6):
        raise UsageError(f"the {what} host {host!r} is not an IP host")
    return family, sockaddr  # type: ignore[return-value]


def _listen_on(
    family: socket.AddressFamily, sockaddr: tuple[str, int] | tuple[str, int, int, int]
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise ChaosErrored(f"cannot listen on {_host_port(sockaddr)}: {e.strerror}") from None
    return sock


def _host_port(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- process mode ------------------------------------------------------------------------

_PROG = "heartline chaos proxy"
_MAX_LINE = 4096


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=_PROG,
        description=(
            "A fault proxy with a dead-man: forwards --listen to --upstream, prints "
            "'listening HOST:PORT', then reads commands on stdin, one a line: a toxic ("
            f"{_FORMS}), 'clear' or 'renew'; answers 'ok' or 'error REASON' to each. Clears "
            "its toxic and exits when stdin closes or no line came within the lease."
        ),
    )
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--upstream", required=True, metavar="HOST:PORT")
    parser.add_argument(
        "--lease", default="10s", metavar="SECONDS",
        help="exit when no line came on stdin for this long (default: 10s)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow listening on a non-loopback address"
    )
    return parser


def _parse_address(text: str, option: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[([^\]]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", text)
    port = int(m.group(2) or m.group(4)) if m else -1
    if m is None or port > 65535:
        raise UsageError(
            f"{option} {text!r}: expected HOST:PORT, such as 127.0.0.1:8080 or [::1]:8080"
        )
    return m.group(1) or m.group(3), port


def _answer(proxy: FaultProxy, line: str) -> str:
    command = line.strip()
    try:
        if command == "renew":
            pass
        elif command == "clear":
            proxy.clear()
        else:
            proxy.set(Toxic.parse(command))
    except UsageError as e:
        return f"error {e}; or clear, renew"
    except HeartlineError as e:
        return f"error {e}"
    return "ok"


def _reply(text: str) -> bool:
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):  # ValueError: stdout was closed
        return False
    return True


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Stop signals received, in order; the handler only notes them (select() wakes on the pipe).
_signalled: list[int] = []


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _signalled.append(signum)


@contextlib.contextmanager
def _stop_signals() -> Iterator[int | None]:
    """SIGTERM, SIGINT and SIGHUP noted and written as a byte to a pipe whose read end this
    yields (None outside the main thread, where signals cannot be caught); put back after,
    as main may run inside a bigger program (the CLI)."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _signalled.clear()
    old_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    old = {sig: signal.signal(sig, _on_signal) for sig in _STOP_SIGNALS}
    try:
        yield read_end
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(old_fd)
        os.close(read_end)
        os.close(write_end)


def _commands(proxy: FaultProxy, lease: float, wake: int | None) -> str:
    """Answer stdin's lines until the controller is gone; returns why it stopped."""
    try:
        stdin = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):  # started with stdin closed
        return "stdin closed"
    pending = b""
    skipping = False  # inside a line too long, answered already
    deadline = time.monotonic() + lease
    watched = [stdin] if wake is None else [stdin, wake]
    while True:
        if _signalled:
            return signal.Signals(_signalled[0]).name
        left = deadline - time.monotonic()
        if left <= 0:
            return f"no command within the {lease:g} s lease"
        ready, _, _ = select.select(watched, [], [], left)
        if wake is not None and wake in ready:
            with contextlib.suppress(OSError):
                os.read(wake, 512)
        if stdin not in ready:
            continue
        data = os.read(stdin, 65536)
        if not data:
            return "stdin closed"
        deadline = time.monotonic() + lease  # anything from the controller proves it alive
        pending += data
        while True:
            line, newline, rest = pending.partition(b"\n")
            if not newline:
                if len(pending) > _MAX_LINE and not skipping:
                    if not _reply(f"error a line is longer than {_MAX_LINE} bytes"):
                        return "stdout closed"
                    skipping = True
                if skipping:
                    pending = b""
                break
            pending = rest
            if skipping:  # the end of a line answered already
                skipping = False
                continue
            if len(line) > _MAX_LINE:
                answer = f"error a line is longer than {_MAX_LINE} bytes"
            else:
                answer = _answer(proxy, line.decode("utf-8", "replace"))
            if not _reply(answer):
                return "stdout closed"


def main(argv: Sequence[str] | None = None) -> int:
    """``heartline chaos proxy``: the proxy as a process with a dead-man. Returns the exit
    code: 0 when its controller let go (stdin closed, lease out, SIGTERM), 2 for a bad
    command line, 21 when it cannot listen."""
    try:
        args = _parser().parse_args(argv)
        listen = _parse_address(args.listen, "--listen")
        upstream = _parse_address(args.upstream, "--upstream")
        try:
            lease = parse_duration(args.lease)
        except ValueError as e:
            raise UsageError(f"--lease: {e}") from None
        if lease <= 0:
            raise UsageError(f"--lease must be more than 0, got {args.lease!r}")
        proxy = FaultProxy(listen=listen, upstream=upstream, allow_remote=args.allow_remote)
        proxy.start()
    except HeartlineError as e:
        sys.stderr.write(f"{_PROG}: {e}\n")
        return e.exit_code
    try:
        with _stop_signals() as wake:
            if _reply(f"listening {_host_port(proxy.address)}"):
                why = _commands(proxy, lease, wake)
            else:
                why = "stdout closed"
    finally:
        with contextlib.suppress(HeartlineError):
            proxy.clear()
        proxy.stop()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{_PROG}: {why}: toxic cleared, exiting\n")
        sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
