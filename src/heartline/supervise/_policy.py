"""Restart policy: pure functions over an exit, a history and the time.

Nothing here does I/O or reads a clock; the supervisor passes ``now`` and a random source in, so
every branch is unit-tested in virtual time.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from heartline.api import EXIT_REASONS, ExitReason, ExitRecord
from heartline.config import ProgramSpec


@dataclass(frozen=True)
class ExitInfo:
    """How a run ended; ``reason`` is one of the closed set :data:`~heartline.api.ExitReason`
    (``exit`` with ``code``, ``signal`` with ``signal``, ``spawn-failed`` with the reason in
    ``detail``, ``unknown`` for an adopted process, or the daemon's own ``watchdog``,
    ``check``, ``start-timeout``)."""

    reason: ExitReason
    code: int | None = None
    signal: int | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason not in EXIT_REASONS:
            raise ValueError(f"{self.reason!r} is not an exit reason ({', '.join(EXIT_REASONS)})")

    def describe(self) -> str:
        if self.reason == "exit":
            return f"exit {self.code}"
        if self.reason == "signal" and self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        return f"{self.reason}: {self.detail}" if self.detail else self.reason

    def to_json(self) -> ExitRecord:
        return {
            "reason": self.reason,
            "code": self.code,
            "signal": self.signal,
            "detail": self.detail,
            "text": self.describe(),
        }


@dataclass
class History:
    """What the policy remembers of a program between runs."""

    #: Failures in a row without a stable run in between (drives the back-off).
    consecutive: int = 0
    #: Monotonic start times within the crash-loop window.
    starts: deque[float] = field(default_factory=deque)
    #: Attempts in a row whose exec failed (a wrong path, an unknown user).
    spawn_failures: int = 0

    def record_start(self, now: float) -> None:
        self.starts.append(now)

    def reset(self) -> None:
        self.consecutive = 0
        self.starts.clear()
        self.spawn_failures = 0


#: Failed execs in a row after which a program is fatal.
SPAWN_FAILURE_LIMIT = 3


@dataclass(frozen=True)
class Decision:
    """``restart`` after ``delay``; ``exit`` (stay down, policy says so); ``fatal`` (crash loop:
    retry after ``delay`` seconds, or never when ``delay`` is None)."""

    action: Literal["restart", "exit", "fatal"]
    delay: float | None
    why: str


def is_success(spec: ProgramSpec, info: ExitInfo) -> bool:
    return info.reason == "exit" and info.code in spec.success_exit_codes


def backoff_delay(spec: ProgramSpec, consecutive: int, rnd: float) -> float:
    """Delay before the restart that follows failure number ``consecutive`` of a run.

    The first restart is immediate: one crash after a stable run costs nothing. ``rnd`` is a
    uniform number in [0, 1) that spreads the delay by +-jitter, so many programs that failed
    together do not restart in lockstep.
    """
    b = spec.backoff
    if consecutive <= 1 or b.initial <= 0:
        return 0.0
    try:
        base = min(b.max, b.initial * b.factor ** (consecutive - 2))
    except OverflowError:
        base = b.max
    return max(0.0, min(b.max, base * (1.0 + b.jitter * (2.0 * rnd - 1.0))))


def decide(
    spec: ProgramSpec,
    info: ExitInfo,
    *,
    uptime: float,
    history: History,
    now: float,
    rng: Callable[[], float],
    restarts_left: int | None = None,
) -> Decision:
    """Decide what follows an exit that nobody asked for. Updates ``history``."""
    if info.reason == "exit" and info.code in spec.prevent_restart_exit_codes:
        return Decision("exit", None, f"exit code {info.code} prevents restart")
    success = is_success(spec, info)
    if spec.restart == "never":
        return Decision("exit", None, "restart = never")
    if spec.restart == "on-failure" and success:
        return Decision("exit", None, "exited successfully")
    if restarts_left is not None and restarts_left <= 0:
        return Decision("exit", None, "restart limit reached")
    history.consecutive = 1 if uptime >= spec.backoff.reset_after else history.consecutive + 1
    loop = spec.crash_loop
    if info.reason == "spawn-failed":
        # An exec that failed will fail the same way next time (a typo in the path does not
        # fix itself): after a few tries the program is fatal, with the reason, like
        # supervisord's startretries.
        history.spawn_failures += 1
        if history.spawn_failures >= SPAWN_FAILURE_LIMIT:
            return Decision(
                "fatal",
                loop.cooldown,
                f"cannot start ({history.spawn_failures} tries): {info.detail}",
            )
    while history.starts and history.starts[0] <= now - loop.window:
        history.starts.popleft()
    if loop.max_starts and len(history.starts) >= loop.max_starts:
        return Decision(
            "fatal",
            loop.cooldown,
            f"crash loop: {len(history.starts)} starts within {loop.window:g}s",
        )
    return Decision("restart", backoff_delay(spec, history.consecutive, rng()), "restart policy")
