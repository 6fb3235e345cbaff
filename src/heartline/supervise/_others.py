"""A program's processes outside its main one: what escaped its process group (``setsid()``,
a double fork) or was left in it when the main process exited. Each is pinned by a pidfd,
signalled with the program and waited for before the program counts as stopped (see _tree for
how they are found)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterator

from heartline._util import read_stat, release_exited, signal_group, start_time


class Others:
    """The followed processes of one program: pid -> pidfd."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None]) -> None:
        self.loop = loop
        self._on_change = on_change
        self._fds: dict[int, int] = {}
        #: Those that got the stop signal in the stop under way (not sent twice).
        self._signalled: set[int] = set()
        self._when_gone: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._fds)

    def __contains__(self, pid: object) -> bool:
        return pid in self._fds

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._fds))

    def keys(self) -> set[int]:
        return set(self._fds)

    def add(self, pid: int, ticks: int | None) -> bool:
        """Follow ``pid`` if it is still the process started at ``ticks``; False if not."""
        if pid in self._fds:
            return False
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return False
        if ticks is not None and start_time(pid) != ticks:
            os.close(fd)
            return False
        self._fds[pid] = fd
        self.loop.add_reader(fd, self._exited, pid)
        self._on_change()
        return True

    def _exited(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        if fd is None:
            return
        release_exited(self.loop, fd)
        self._signalled.discard(pid)
        self._on_change()
        if not self._fds and self._when_gone is not None:
            done, self._when_gone = self._when_gone, None
            done()

    def when_gone(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the last followed process exited."""
        self._when_gone = callback

    def new_stop(self) -> None:
        """A new stop begins: every process may be sent the stop signal again."""
        self._signalled.clear()

    def signal(self, sig: int, *, skip_group: int | None = None, once: bool = True) -> None:
        """``sig`` to each process (to its whole group when it leads one of its own). Those
        in ``skip_group`` got it with that group already; with ``once``, a process is sent the
        stop signal at most once per stop."""
        for pid in list(self._fds):
            if once and pid in self._signalled:
                continue
            info = read_stat(pid)
            if skip_group is not None and info is not None and info.pgrp == skip_group:
                continue
            self._signalled.add(pid)
            if info is not None and info.pgrp == pid and info.pgrp != skip_group:
                # A group of its own (it called setsid): whatever it started goes with it.
                signal_group(pid, sig)
                continue
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._fds[pid], sig)

    def describe(self, limit: int = 8) -> str:
        """``pid (name), ...`` for a log line."""
        pids = sorted(self._fds)
        listing = ", ".join(
            f"{p} ({i.name})" if (i := read_stat(p)) is not None else str(p) for p in pids[:limit]
        )
        return listing + (f" and {len(pids) - limit} more" if len(pids) > limit else "")

    def close(self) -> None:
        for fd in self._fds.values():
            self.loop.remove_reader(fd)
            os.close(fd)
        self._fds.clear()
        self._when_gone = None
