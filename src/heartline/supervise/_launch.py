"""The seam between a program's state machine and the operating system.

A :class:`Program` never forks, waits or signals by itself: it asks a launcher for a process
and then talks to that process through a few methods. The real ones here use pidfds (see
_process); ``heartline.testing`` has fakes that exit and react to signals when a test says so,
which lets the whole state machine run in virtual time.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Protocol

from heartline._util import environ_of, handles_signal, signal_group, start_time
from heartline.supervise._policy import ExitInfo
from heartline.supervise._process import reap, spawn


class Process(Protocol):
    """A program's main process, as its state machine sees it."""

    pid: int
    #: Read ends of its stdout and stderr pipes (None when not captured).
    stdout: int | None
    stderr: int | None

    def watch(self, loop: asyncio.AbstractEventLoop, on_exit: Callable[[], None]) -> None:
        """Call ``on_exit`` on ``loop`` once the process may have exited."""

    def reap(self, before_reap: Callable[[], object]) -> ExitInfo | None:
        """Its exit (None when it has not exited); ``before_reap`` runs while it is a zombie."""

    def signal_group(self, sig: int) -> bool:
        """``sig`` to its whole process group; False when the group is gone."""

    def send(self, sig: int) -> bool:
        """``sig`` to the main process alone; False when it is gone."""

    def catches(self, sig: int) -> bool:
        """Whether it handles ``sig`` (so sending it asks rather than ends it)."""

    def start_ticks(self) -> int | None:
        """Its kernel start time (with the pid, its identity across a daemon restart)."""

    def environ(self, key: str) -> str | None:
        """A variable of the environment it was started with."""

    def close(self) -> None:
        """Stop watching it and release what pins it."""


class Launcher(Protocol):
    """Starts processes for programs, and finds those a previous daemon left."""

    def spawn(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str | None,
        user: str | None,
        group: str | None,
        umask: int | None,
        capture: bool,
        merge_stderr: bool,
    ) -> Process:
        """Start ``argv`` in a session of its own; raise SpawnFailed with a one-line reason.

        May be called from a worker thread: it touches no event loop."""

    def adopt(self, pid: int, ticks: int | None, pipes: tuple[int, int]) -> Process | None:
        """The process ``pid`` if it is still the one started at ``ticks``, with new read ends
        onto its recorded output pipes (inode numbers; 0 for none); else None."""


class OsProcess:
    """A real process, pinned by a pidfd (signals through it can never hit a recycled pid)."""

    def __init__(self, pid: int, pidfd: int, stdout: int | None, stderr: int | None) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.stdout = stdout
        self.stderr = stderr
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, loop: asyncio.AbstractEventLoop, on_exit: Callable[[], None]) -> None:
        self._loop = loop
        loop.add_reader(self.pidfd, on_exit)

    def reap(self, before_reap: Callable[[], object]) -> ExitInfo | None:
        return reap(self.pidfd, before_reap)

    def signal_group(self, sig: int) -> bool:
        return signal_group(self.pid, sig)

    def send(self, sig: int) -> bool:
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:
            return False
        return True

    def catches(self, sig: int) -> bool:
        return handles_signal(self.pid, sig)

    def start_ticks(self) -> int | None:
        return start_time(self.pid)

    def environ(self, key: str) -> str | None:
        return environ_of(self.pid, (key.encode(),)).get(key)

    def close(self) -> None:
        if self.pidfd < 0:
            return
        if self._loop is not None:
            self._loop.remove_reader(self.pidfd)
        os.close(self.pidfd)
        self.pidfd = -1


class OsLauncher:
    """Starts real processes (see _process.spawn) and adopts them by pidfd."""

    def spawn(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str | None,
        user: str | None,
        group: str | None,
        umask: int | None,
        capture: bool,
        merge_stderr: bool,
    ) -> OsProcess:
        sp = spawn(
            argv,
            env=env,
            cwd=cwd,
            user=user,
            group=group,
            umask=umask,
            capture=capture,
            merge_stderr=merge_stderr,
        )
        return OsProcess(sp.pid, sp.pidfd, sp.stdout, sp.stderr)

    def adopt(self, pid: int, ticks: int | None, pipes: tuple[int, int]) -> OsProcess | None:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        # Check identity only after the pidfd pins the process: a pid checked first could be
        # recycled between the check and the open.
        if ticks is None or start_time(pid) != ticks:
            os.close(pidfd)
            return None
        fds = [_reopen_pipe(pid, num, inode) if inode else None for num, inode in ((1, pipes[0]),
               (2, pipes[1]))]  # fmt: skip
        return OsProcess(pid, pidfd, fds[0], fds[1])


def _reopen_pipe(pid: int, fdnum: int, inode: int) -> int | None:
    """Open a new read end onto the pipe behind ``/proc/PID/fd/N`` if it is the recorded one.

    Linux lets /proc/PID/fd/N of a pipe be opened like a FIFO, in either direction.
    """
    path = f"/proc/{pid}/fd/{fdnum}"
    try:
        if os.readlink(path) != f"pipe:[{inode}]":
            return None
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
