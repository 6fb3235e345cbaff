"""Processes that escaped their programs, and what a previous daemon left behind.

Kept apart from the supervisor's start order and operations: this is the part that looks at
the process tree (see _tree for how it is read). The daemon is a child subreaper, so an orphan
among its programs' descendants comes back to it; :class:`Escapes` attributes each to its
program (which then follows it, see _others), reaps zombies nobody else reaps, keeps the
unattributable ones as strays to stop with the daemon, and stops the processes a crashed daemon
left that the new one does not adopt, holding back their program's new copy meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from heartline._util import (
    OWN_CHILDREN,
    ProcInfo,
    children_of,
    descendants,
    environ_of,
    reap_zombie,
    release_exited,
    scan,
    signal_leader,
    start_time,
)
from heartline.config import ProgramSpec

if TYPE_CHECKING:
    from heartline.supervise._host import NotifySource
    from heartline.supervise._program import Program

log = logging.getLogger(__name__)

_ENV_KEYS = (b"HEARTLINE_PROGRAM", b"NOTIFY_SOCKET")


class _Owner(Protocol):
    """What of the supervisor this needs."""

    loop: asyncio.AbstractEventLoop
    programs: dict[str, Program]
    by_pid: dict[int, Program]
    subreaper: bool

    @property
    def notify(self) -> NotifySource: ...

    def background(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    def dependency_moved(self) -> None: ...


class Escapes:
    """The escaped, the strays and the leftovers of one supervisor."""

    def __init__(self, sup: _Owner) -> None:
        self.sup = sup
        #: Children of ours that escaped a program but cannot be told whose: pid -> pidfd.
        self.strays: dict[int, int] = {}
        self._strays_gone: asyncio.Future[None] | None = None
        self._last_scan = -1e9
        self._last_glance = -1e9
        self._scan_soon: asyncio.TimerHandle | None = None
        #: Processes a previous daemon left that must be gone before a new copy starts:
        #: pid -> the program it belongs to (None: unknown, so it holds back every program).
        self.leftovers: dict[int, str | None] = {}

    def track(self, *, max_age: float = 0.0) -> dict[int, ProcInfo] | None:
        """One pass over /proc: attribute, follow and reap the processes that escaped programs.

        A process outside every program's process group is a program's when its parent chain
        leads to a program's main process (a ``setsid()`` child of a live program), or, once
        orphaned and reparented to this subreaper, when its group or session is a program's or
        its environment names the program. Zombie children nobody else reaps are reaped.
        Skipped (None) when a pass is at most ``max_age`` old and no unknown child came back to
        the daemon since (a glance at its own children files tells, without a walk).
        """
        if not self.sup.subreaper:
            return None
        now = self.sup.loop.time()
        if max_age and now - self._last_scan < max_age:
            # A glance at our own children: did an orphan come back since the last walk? Many
            # calls in one turn of the loop (a stop of every program) share one glance; a
            # process missed here is still found when its program's main process exits.
            if now - self._last_glance < 0.05:
                return None
            self._last_glance = now
            if self._unknown_children() == set():
                return None
        self._last_scan = now
        me = os.getpid()
        procs = self._family(me)
        owners: dict[int, Program] = dict(self.sup.by_pid)
        for program in self.sup.programs.values():
            for pid in program.others:
                owners[pid] = program
        memo: dict[int, Program | None] = {}

        def ancestor_owner(pid: int) -> Program | None:
            chain: list[int] = []
            owner: Program | None = None
            while pid > 1 and len(chain) < 64:
                if pid in memo:
                    owner = memo[pid]
                    break
                if pid in owners:
                    owner = owners[pid]
                    break
                chain.append(pid)
                info = procs.get(pid)
                if info is None or info.ppid == me:
                    break
                pid = info.ppid
            for c in chain:
                memo[c] = owner
            return owner

        for info in procs.values():
            pid = info.pid
            if pid == me or pid in owners or pid in OWN_CHILDREN or pid in self.strays:
                continue
            if info.state == "Z":
                if info.ppid == me and reap_zombie(pid):
                    log.info("reaped pid %d (%s), a process that escaped its program", pid,
                             info.name)  # fmt: skip
                continue
            group_owner = owners.get(info.pgrp)
            if group_owner is not None and group_owner.pid == info.pgrp:
                continue  # in its program's process group: signalled with it
            prog = ancestor_owner(info.ppid) if info.ppid != me else None
            if prog is None and info.ppid == me:
                prog = owners.get(info.pgrp) or owners.get(info.session) or self._by_env(pid)
            if prog is None:
                if info.ppid == me:
                    self._add_stray(info)
                continue
            if prog.others.add(pid, info.start_time):
                owners[pid] = prog
                log.warning(
                    "%s: pid %d (%s) runs outside the program's process group; it is followed "
                    "and stopped as part of %s",
                    prog.spec.name,
                    pid,
                    info.name,
                    prog.spec.name,
                )
        return procs

    @staticmethod
    def _family(me: int) -> dict[int, ProcInfo]:
        """This process's descendants (all of /proc where children files are not offered)."""
        kids = children_of(me)
        procs = descendants(kids) if kids is not None else None
        return procs if procs is not None else scan()

    def _unknown_children(self) -> set[int] | None:
        """Children of ours that are neither spawned by us nor followed already (orphans that
        came to this subreaper); None when the kernel cannot tell without a scan."""
        kids = children_of(os.getpid())
        if kids is None:
            return None
        unknown = kids.difference(OWN_CHILDREN, self.sup.by_pid, self.strays)
        if unknown:  # rare: only then is every program's list of followed processes read
            for prog in self.sup.programs.values():
                unknown -= prog.others.keys()
        return unknown

    def collect_leftovers(self, prog: Program, main_pid: int) -> None:
        """Everything left of ``prog`` now that its main process exited (it is a zombie, so its
        pid cannot be recycled and names its group and session exactly)."""
        procs: dict[int, ProcInfo] | None = None
        if self.sup.subreaper:
            # The exiting process's live children were handed to us before its exit could be
            # seen, as was any orphan that escaped meanwhile: no unknown child of ours means
            # nothing was left behind and nothing needs a look (the common, fast case).
            unknown = self._unknown_children()
            if unknown is not None and not unknown:
                return
            procs = self.track()
        if procs is None:
            procs = scan()
        for info in procs.values():
            if info.pid == main_pid or info.state == "Z" or info.pid in OWN_CHILDREN:
                continue
            if main_pid in (info.pgrp, info.session):
                prog.others.add(info.pid, info.start_time)

    def _by_env(self, pid: int) -> Program | None:
        env = environ_of(pid, _ENV_KEYS)
        prog = self.sup.programs.get(env.get("HEARTLINE_PROGRAM", ""))
        if prog is not None and self.sup.notify.owns(env.get("NOTIFY_SOCKET", "")):
            return prog
        return None

    def _add_stray(self, info: ProcInfo) -> None:
        try:
            fd = os.pidfd_open(info.pid)
        except OSError:
            return
        if start_time(info.pid) != info.start_time:
            os.close(fd)
            return
        self.strays[info.pid] = fd
        self.sup.loop.add_reader(fd, self._stray_exited, info.pid)
        log.warning(
            "pid %d (%s) escaped a program and cannot be told whose; it is stopped with the daemon",
            info.pid,
            info.name,
        )

    def _stray_exited(self, pid: int) -> None:
        fd = self.strays.pop(pid, None)
        if fd is None:
            return
        release_exited(self.sup.loop, fd)
        if not self.strays and self._strays_gone is not None and not self._strays_gone.done():
            self._strays_gone.set_result(None)

    async def stop_strays(self) -> None:
        """TERM to every stray, KILL to those left after the default stop timeout."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.strays:
                return
            self._strays_gone = self.sup.loop.create_future()
            for fd in self.strays.values():
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(fd, sig)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ProgramSpec.stop_timeout):
                    await self._strays_gone

    def on_sigchld(self) -> None:
        """SIGCHLD: an orphan that came to us may have died; reap it soon (coalesced)."""
        if self._scan_soon is None:
            self._scan_soon = self.sup.loop.call_later(0.05, self._scan_after_sigchld)

    def _scan_after_sigchld(self) -> None:
        self._scan_soon = None
        # Most SIGCHLDs are a program's own exit, handled through its pidfd: look further only
        # when a child of ours is one nobody follows.
        if self._unknown_children() != set():
            self.track()

    def close(self) -> None:
        """Release the strays' pidfds without stopping them."""
        for fd in self.strays.values():
            self.sup.loop.remove_reader(fd)
            os.close(fd)
        self.strays.clear()

    # --- leftovers of a previous daemon ---------------------------------------------------
    def add_leftover(self, pid: int, expected_start: int | None, owner: str | None) -> None:
        """Stop a process a previous daemon left and this one does not adopt, and hold back a
        new copy of its program (every program, when ``owner`` is unknown) until it is gone."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return
        if expected_start is not None and start_time(pid) != expected_start:
            os.close(pidfd)
            return
        if owner is None:
            # Whose it is decides which program waits for it; only an environment that also
            # names this daemon's notify address is trusted for that. The name alone still
            # picks the stop signal and timeout.
            prog = self._by_env(pid)
            owner = prog.spec.name if prog is not None else None
            if prog is None:
                env = environ_of(pid, _ENV_KEYS)
                prog = self.sup.programs.get(env.get("HEARTLINE_PROGRAM", ""))
        else:
            prog = self.sup.programs.get(owner)
        self.leftovers[pid] = owner
        self.sup.background(self._stop_leftover(pid, pidfd, prog))

    async def _stop_leftover(self, pid: int, pidfd: int, prog: Program | None) -> None:
        sig = prog.spec.stop_signal if prog is not None else signal.SIGTERM
        grace = prog.spec.stop_timeout if prog is not None else ProgramSpec.stop_timeout
        gone = self.sup.loop.create_future()
        self.sup.loop.add_reader(pidfd, lambda: None if gone.done() else gone.set_result(None))
        try:
            whose = f"of {prog.spec.name}" if prog is not None else "of an unknown program"
            log.warning(
                "stopping pid %d %s, left by the previous daemon and not adopted; a new copy "
                "starts once it is gone",
                pid,
                whose,
            )
            signal_leader(pid, pidfd, sig)
            try:
                async with asyncio.timeout(grace):
                    await gone
            except TimeoutError:
                log.warning("pid %d still runs %gs after the stop signal; SIGKILL", pid, grace)
                signal_leader(pid, pidfd, signal.SIGKILL)
                await gone
        finally:
            self.sup.loop.remove_reader(pidfd)
            os.close(pidfd)
            self.leftovers.pop(pid, None)
            self.sup.dependency_moved()
