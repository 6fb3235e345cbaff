"""What a program needs from the supervisor that runs it: the narrow interface between the two.

A :class:`~heartline.supervise.Program` owns its state machine and its process; everything it
shares with the other programs (the start order, the pid table the notify socket reads, the fd
holder, the state file, the daemon's own stalls, the processes that escaped) it reaches through
this protocol and nothing else. ``Supervisor`` implements it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from heartline.api import SingletonInfo
from heartline.config import ProgramSpec
from heartline.supervise._launch import Launcher
from heartline.supervise._logs import OpenFiles

if TYPE_CHECKING:
    from heartline.supervise._program import Program


class NotifySource(Protocol):
    """The notify socket, as a program's watchdog sees it."""

    def drain(self) -> None:
        """Read the heartbeats queued right now (before a deadline is judged)."""

    def owns(self, address: str) -> bool:
        """Whether datagrams sent to ``address`` reach this daemon."""


class Seats(Protocol):
    """Where singleton programs learn whether this host holds their cluster lock (the
    cluster's seat keeper; the daemon plugs it in)."""

    def seat(self, name: str) -> str | None:
        """None when this host holds singleton ``name``'s lock (it may run here now); else
        why it stands by, for its status ("runs on web2", "waiting for the lock")."""

    def env(self, name: str) -> dict[str, str]:
        """What the holder's run gets in its environment (the lock's name and token)."""

    def info(self, name: str) -> SingletonInfo:
        """Where singleton ``name`` runs, as far as this host knows."""


class Host(Protocol):
    """The supervisor, as one of its programs sees it."""

    loop: asyncio.AbstractEventLoop
    launcher: Launcher

    @property
    def notify(self) -> NotifySource:
        """The notify socket (a read-only member: the supervisor's may be a subtype)."""

    #: Whether output is captured into log files (False: programs inherit our stdout/stderr).
    capture: bool
    log_dir: str | None
    open_files: OpenFiles
    rng: Callable[[], float]
    #: Restarts allowed per manual start (None: no limit), for `heartline run`.
    max_restarts: int | None
    #: Loop time the daemon last came back from a stall of its own (SIGSTOP, a VM pause).
    resumed_at: float

    def wall(self) -> float:
        """Wall-clock time (for display and the state file)."""

    def env_for(self, spec: ProgramSpec) -> dict[str, str]:
        """The environment a program is started with."""

    def check_env(self, spec: ProgramSpec) -> dict[str, str]:
        """The environment its exec health checks run with."""

    def report_dir(self, name: str) -> str:
        """Where a program's reports land."""

    def seat(self, prog: Program) -> str | None:
        """For a singleton: None when this host holds its cluster lock, else why it stands by
        (see :class:`Seats`). None for every other program."""

    def singleton_info(self, prog: Program) -> SingletonInfo | None:
        """Where the singleton ``prog`` runs (for its status)."""

    def gate(self, prog: Program) -> list[str]:
        """What ``prog`` must still wait for before it may be spawned (empty: go); a program
        that must wait is kept in the supervisor's waiting set until ``dependency_moved``."""

    def spawned(self, prog: Program) -> None:
        """``prog`` has a new main process (``prog.pid``): index it, hand it to the holder."""

    def reaped(self, prog: Program, pid: int) -> None:
        """The main process ``pid`` of ``prog`` is gone."""

    def others_changed(self, prog: Program) -> None:
        """The processes ``prog`` runs outside its main one changed."""

    def changed(self, prog: Program) -> None:
        """``prog``'s state changed: tell listeners, save the state file soon."""

    def dependency_moved(self) -> None:
        """A program started, became ready or exited: programs waiting on it may go."""

    def background(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the supervisor keeps until it ends."""

    def note_lateness(self, due: float) -> bool:
        """A timer due at ``due`` runs now: True when the daemon itself had stalled."""

    def recently_stalled(self, window: float) -> bool:
        """Whether the daemon came back from a stall within the last ``window`` seconds."""

    def look_for_escapees(self) -> None:
        """Find processes that left their program's group (before a stop signal goes out)."""

    def collect_leftovers(self, prog: Program, main_pid: int) -> None:
        """``prog``'s main process ``main_pid`` exited (a zombie still): follow what is left."""
