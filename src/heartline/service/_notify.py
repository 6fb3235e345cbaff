"""Tell the supervisor how the program is doing: systemd's notify protocol, from inside a program.

Usage::

    from heartline.service import notify

    notify.ready()                  # READY=1: start-up is over
    notify.status("42 jobs queued") # STATUS=...: one line for `systemctl status`/`heartline status`
    while serving:
        handle_one_request()
        notify.kick()               # "still alive": costs about as much as an empty function call

The supervisor (systemd, or the heartline daemon, which speaks the same protocol) names a datagram
socket in ``NOTIFY_SOCKET``: a file system path, or an abstract socket when it starts with ``@``.
When the variable is unset the program is not supervised and every call here is a no-op that
returns False.

**Why kick() does not send anything.** A supervisor with a watchdog (``WATCHDOG_USEC``) wants a
``WATCHDOG=1`` datagram at least once per period; programs want to say "alive" from their hot loop.
A datagram per call would cost a system call each time, so ``kick`` is the ``clear`` method of a
one-entry dict: a C function that empties it, with no Python frame, no lock and no system call.
A daemon thread (the pinger), started only when ``WATCHDOG_USEC`` applies to this process, wakes
every half period, puts a fresh token back with ``dict.setdefault`` (one atomic step under the GIL:
it tells whether the dict had been emptied since the last wake-up and re-arms it in the same call)
and sends ``WATCHDOG=1`` only when it had. A program that hangs stops kicking, so the pinger stops
pinging and the supervisor's watchdog fires, as it should. Kick at least once per half of
``WATCHDOG_USEC``, as systemd advises for direct pings.

The pinger starts lazily: the first time ``kick`` is looked up on this module (``notify.kick``,
``from ... import kick``) or a message is sent. ``WATCHDOG_PID`` limits the watchdog to one process,
as in ``sd_watchdog_enabled()``: when it is set and is not this process, there is no pinger.
A forked child starts afresh: its parent's pinger does not run in it, and the same rules decide
whether it gets its own.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

__all__ = ["extend_timeout", "kick", "ready", "send", "status", "stopping"]

#: Empty when kick() was called since the pinger last looked; holds one token otherwise.
_armed: dict[int, object] = {0: object()}
#: The fast path itself: the same C-level callable for the life of the process.
_kick: Callable[[], None] = _armed.clear

#: ``kick()`` says "alive" to the supervisor's watchdog. Bound on first look-up (see __getattr__).
kick: Callable[[], None]

_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class _State:
    """What the environment said, the socket and the pinger; guarded by ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.configured = False
        self.address: str | bytes | None = None
        #: Seconds between two looks of the pinger (half of WATCHDOG_USEC), or None.
        self.interval: float | None = None
        self.sock: socket.socket | None = None
        self.pinger: threading.Thread | None = None
        self.stop: threading.Event | None = None

    def forget(
        self,
    ) -> tuple[threading.Thread | None, threading.Event | None, socket.socket | None]:
        """Back to "not configured"; returns the pinger, its stop event and the socket."""
        old = self.pinger, self.stop, self.sock
        self.configured = False
        self.address = self.interval = self.sock = self.pinger = self.stop = None
        _armed[0] = object()
        globals().pop("kick", None)
        return old


_state = _State()


def _parse_address(value: str) -> str | bytes | None:
    """The socket address NOTIFY_SOCKET names, or None when it names none we can use."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """How often the pinger looks (half of WATCHDOG_USEC, in seconds), or None when the watchdog
    is off or belongs to another process (WATCHDOG_PID set and not ``pid``)."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isascii() or not usec.isdigit() or int(usec) <= 0:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner is not None and (not owner.isascii() or not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 2e6


def _configure_locked() -> None:
    s = _state
    if s.configured:
        return
    s.configured = True
    raw = os.environ.get("NOTIFY_SOCKET", "")
    s.address = _parse_address(raw)
    if s.address is None:
        if raw:
            _debug("NOTIFY_SOCKET=%r is neither a path nor '@abstract': not notifying", raw)
        return
    s.interval = _watchdog_interval(os.environ, os.getpid())
    if s.interval is not None and s.pinger is None:
        s.stop = threading.Event()
        s.pinger = threading.Thread(
            target=_ping, args=(s.stop, s.interval), name="heartline-notify-pinger", daemon=True
        )
        s.pinger.start()


def _ping(stop: threading.Event, interval: float) -> None:
    """The pinger: every ``interval`` seconds, WATCHDOG=1 if kick() was called meanwhile."""
    while not stop.wait(interval):
        token = object()
        if _armed.setdefault(0, token) is token:
            _send_bytes(b"WATCHDOG=1", configure=False)


def _send_bytes(payload: bytes, *, configure: bool = True) -> bool:
    s = _state
    with s.lock:
        if configure:
            _configure_locked()
        if s.address is None:
            return False
        if s.sock is None:
            import socket  # only once supervised: unsupervised programs never pay for it

            s.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock, address = s.sock, s.address
    try:
        sock.sendto(payload, address)
    except OSError as exc:
        _debug("notify: cannot send %r to %r: %s", payload, address, exc)
        return False
    return True


def send(**fields: str | int) -> bool:
    """Send one message of ``KEY=value`` lines, in the order given: ``send(READY=1, STATUS="up")``.

    Keys are upper-case letters, digits and ``_``; values are text or integers (a bool is sent as
    1 or 0) and may not contain a newline, since that would start another field. Returns True when
    the supervisor's socket took the message, False when the program is not supervised or the
    socket refused it (the supervisor went away): notifying never fails the program.
    """
    if not fields:
        raise ValueError("send() needs at least one field")
    lines = []
    for key, value in fields.items():
        if not key or not _KEY_CHARS.issuperset(key):
            raise ValueError(f"not a notify field name: {key!r}")
        text = str(int(value)) if isinstance(value, bool) else str(value)
        if "\n" in text or "\r" in text:
            raise ValueError(f"the value of {key} contains a newline")
        lines.append(f"{key}={text}")
    return _send_bytes("\n".join(lines).encode())


def ready(status: str | None = None) -> bool:
    """Start-up is over (``READY=1``), optionally with a status line in the same message."""
    if status is None:
        return send(READY=1)
    return send(READY=1, STATUS=_one_line(status))


def status(text: str) -> bool:
    """Show ``text`` as the program's status; line breaks become single spaces."""
    return send(STATUS=_one_line(text))


def stopping() -> bool:
    """The program has begun to shut down (``STOPPING=1``)."""
    return send(STOPPING=1)


def extend_timeout(seconds: float) -> bool:
    """Ask for ``seconds`` more before the current start, stop or watchdog deadline
    (``EXTEND_TIMEOUT_USEC``); say it again before that time runs out to keep extending."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"extend_timeout needs a non-negative number of seconds, not {seconds!r}")
    return send(EXTEND_TIMEOUT_USEC=round(seconds * 1e6))


def _one_line(text: str) -> str:
    return " ".join(line for part in text.splitlines() if (line := part.strip()))


def _debug(message: str, *args: object) -> None:
    # Imported here: most programs that only kick never log anything from this module.
    import logging

    logging.getLogger(__name__).debug(message, *args)


def __getattr__(name: str) -> object:
    # Only reached while `kick` is not yet in the module's namespace: the first look-up starts
    # the pinger (when the watchdog applies) and binds the name, so later look-ups are plain
    # dictionary hits that return the C-level callable itself.
    if name == "kick":
        with _state.lock:
            _configure_locked()
        globals()["kick"] = _kick
        return _kick
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "kick"})


def _reset() -> None:
    """Forget what the environment said: stop the pinger, close the socket, re-arm the kick flag.

    The next send or look-up of ``kick`` reads the environment again. For tests, and the process
    after fork; ``kick`` callables obtained before stay valid (it is always the same object).
    """
    with _state.lock:
        pinger, stop, sock = _state.forget()
    if stop is not None:
        stop.set()
    if pinger is not None and pinger is not threading.current_thread():
        pinger.join(timeout=5.0)
    if sock is not None:
        sock.close()


def _after_fork_in_child() -> None:
    # The parent's pinger does not exist here and the lock may have been held by one of the
    # parent's threads at the moment of the fork: start from a fresh state.
    _state.lock = threading.Lock()
    _, _, sock = _state.forget()
    if sock is not None:
        sock.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
