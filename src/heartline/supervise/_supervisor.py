"""The supervisor: a set of programs, their start order, and what the API can ask of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from heartline._util import SYSTEM_CLOCK, Clock, atomic_write, format_duration
from heartline.config import Config, ProgramSpec
from heartline.errors import UnknownProgram
from heartline.supervise import _statefile
from heartline.supervise._heartbeat import NotifyReceiver, notify_address
from heartline.supervise._launch import Launcher, OsLauncher
from heartline.supervise._logs import OpenFiles
from heartline.supervise._process import OWN_CHILDREN, boot_id, identity_env, start_time
from heartline.supervise._program import Program
from heartline.supervise._states import State
from heartline.supervise._tree import (
    ProcInfo,
    children_of,
    descendants,
    environ_of,
    reap_zombie,
    release_exited,
    scan,
)

log = logging.getLogger(__name__)

#: Variables of the daemon's own environment that describe the daemon, not its programs.
_PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
                "LISTEN_FDNAMES", "INVOCATION_ID")  # fmt: skip
#: Programs spawned between two turns of the event loop during a large start.
_BATCH = 64
#: Worker threads of a batch spawn.
_SPAWN_THREADS = 4
#: A timer that fires this much later than asked means the daemon itself did not run (SIGSTOP,
#: a VM pause, a frozen cgroup, a starved CPU): see Supervisor.note_lateness.
STALL = 0.25
#: Status answers reuse a pass over /proc this recent (see Supervisor.track_processes).
_SCAN_TTL = 1.0
#: A state file that cannot be written is tried again after this long, doubling up to the max.
_SAVE_RETRY = (0.5, 30.0)
_ENV_KEYS = (b"HEARTLINE_PROGRAM", b"NOTIFY_SOCKET")


class FdHolder(Protocol):
    """Told of every program process: ``add`` right after its spawn (in the same loop callback,
    before it can be reaped), ``drop`` right after its reap and before any next spawn, and
    ``others`` whenever the processes it runs outside its group change. The daemon's holder
    keeps output pipes and pidfds; `heartline run`'s guard keeps a pidfd of each process group
    to stop it if the runner dies."""

    def add(self, key: str, pid: int, fds: list[int], stop_signal: int) -> None: ...

    def others(self, key: str, pids: list[int]) -> None: ...

    def drop(self, key: str) -> None: ...


class Supervisor:
    """Owns the :class:`Program` objects; every public method is safe to call from the API."""

    def __init__(
        self,
        programs: Mapping[str, ProgramSpec],
        *,
        loop: asyncio.AbstractEventLoop,
        log_dir: str | None,
        state_path: str | None = None,
        capture: bool = True,
        rng: Callable[[], float] = random.random,
        max_restarts: int | None = None,
        holder: FdHolder | None = None,
        notify_prefix: str | None = None,
        subreaper: bool = False,
        launcher: Launcher | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.loop = loop
        #: Starts and adopts the programs' processes (a fake in virtual-time tests).
        self.launcher: Launcher = launcher if launcher is not None else OsLauncher()
        #: Its monotonic reading is the loop's time (a virtual loop's in tests).
        self.clock = clock
        self.log_dir = log_dir
        self.state_path = state_path
        self.capture = capture
        self.rng = rng
        self.max_restarts = max_restarts
        self.holder = holder
        self.listeners: list[Callable[[Program], None]] = []
        self.waiting: set[Program] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.open_files = OpenFiles()
        self._save_pending = False
        self._save_timer: asyncio.TimerHandle | None = None
        self._save_delay = _SAVE_RETRY[0]
        #: Why the state file could not be written (None while it can), and since when.
        self.state_error: dict[str, Any] | None = None
        self.base_env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
        #: Live programs by main pid (the notify socket attributes datagrams with it).
        self.by_pid: dict[int, Program] = {}
        # The receiver stamps heartbeats with the clock, from its thread: the deadlines they
        # are compared with are the loop's, on the same clock.
        self.notify = NotifyReceiver(
            loop, notify_prefix or notify_address(), self.by_pid, clock=clock.monotonic
        )
        #: Whether this process is a child subreaper: orphans among the programs' descendants
        #: become its children, and are found, attributed and reaped here.
        self.subreaper = subreaper
        #: Children of ours that escaped a program but cannot be told whose: pid -> pidfd.
        self.strays: dict[int, int] = {}
        self._strays_gone: asyncio.Future[None] | None = None
        self._last_scan = -_SCAN_TTL
        self._scan_soon: asyncio.TimerHandle | None = None
        #: When the daemon last came back from a stall of its own (loop time), and its length.
        self.resumed_at = -1e9
        self.stall = 0.0
        #: Processes a previous daemon left that must be gone before a new copy starts:
        #: pid -> the program it belongs to (None: unknown, so it holds back every program).
        self.leftovers: dict[int, str | None] = {}
        if log_dir is not None:
            os.makedirs(log_dir, mode=0o750, exist_ok=True)
        self.programs: dict[str, Program] = {}
        for name, spec in programs.items():
            self.programs[name] = Program(spec, self)
        self._index_groups()

    # --- the daemon's own stalls ------------------------------------------------------------
    def note_lateness(self, due: float) -> bool:
        """Called by a timer that was due at ``due``; True when the daemon itself had stalled.

        A timer runs late only when the loop did not run: the process was stopped (SIGSTOP, a
        VM or cgroup freeze) or starved. Whatever deadline fell in that time says nothing about
        the programs, which ran on and whose heartbeats are queued in the notify sockets.
        """
        now = self.loop.time()
        late = now - due
        if late > STALL and now - self.resumed_at > STALL:
            self.resumed_at = now
            self.stall = late
            log.warning(
                "the daemon did not run for %s (stopped or starved); deadlines that fell in "
                "that time are not held against programs",
                format_duration(late),
            )
            self.notify.drain()
        return late > STALL

    def recently_stalled(self, window: float) -> bool:
        """Whether the daemon came back from a stall within the last ``window`` seconds."""
        return self.loop.time() - self.resumed_at < window

    def background(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the supervisor keeps a reference to until it ends."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- lookups --------------------------------------------------------------------------
    def resolve(self, names: Iterable[str]) -> list[Program]:
        """Programs named by instance name, group name or ``all``, in config order."""
        wanted: set[str] = set()
        for n in names:
            if n == "all":
                return list(self.programs.values())
            if n in self.programs:
                wanted.add(n)
            elif n in self._groups:
                wanted.update(p.spec.name for p in self._groups[n])
            else:
                raise UnknownProgram(n)
        if len(wanted) == 1:
            return [self.programs[next(iter(wanted))]]
        return [p for name, p in self.programs.items() if name in wanted]

    def snapshot(self, names: Iterable[str] = ()) -> list[dict[str, Any]]:
        names = list(names)
        progs = self.resolve(names) if names else list(self.programs.values())
        return [p.snapshot() for p in progs]

    def stalled_between(self, start: float) -> bool:
        """Whether a stall of the daemon ended after loop time ``start``."""
        return self.resumed_at >= start

    def wall(self) -> float:
        return self.clock.wall()

    def check_env(self, spec: ProgramSpec) -> dict[str, str]:
        """The environment an exec health check runs with."""
        return {**self.base_env, **spec.env}

    def env_for(self, spec: ProgramSpec) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(identity_env(spec.user))
        env.update(spec.env)
        env["HEARTLINE_PROGRAM"] = spec.name
        env["NOTIFY_SOCKET"] = self.notify.address_for(spec.name)
        if self.log_dir is not None:
            env["HEARTLINE_REPORT_DIR"] = self.report_dir(spec.name)
        if spec.watchdog > 0:
            env["WATCHDOG_USEC"] = str(int(spec.watchdog * 1e6))
        return env

    def report_dir(self, name: str) -> str:
        """Where a program's heartline.service.reports land (set in its environment)."""
        assert self.log_dir is not None
        return os.path.join(self.log_dir, "reports", name)

    # --- dependencies ---------------------------------------------------------------------
    def _group(self, group: str) -> list[Program]:
        return self._groups.get(group, [])

    def _index_groups(self) -> None:
        self._groups: dict[str, list[Program]] = {}
        for p in self.programs.values():
            self._groups.setdefault(p.spec.group, []).append(p)
        # Depth in the dependency graph (the config loader has rejected cycles); iterative, so
        # a long chain cannot overflow the stack.
        self._depth: dict[str, int] = {}
        budget = 4 * len(self._groups) ** 2 + 16
        for root in self._groups:
            stack = [root]
            while stack and budget > 0:
                budget -= 1
                group = stack[-1]
                spec = self._groups[group][0].spec
                deps = [g for g in (*spec.after, *spec.requires) if g in self._groups]
                pending = [g for g in deps if g not in self._depth]
                if pending and group not in self._depth:
                    stack.extend(pending)
                    continue
                stack.pop()
                self._depth.setdefault(
                    group, 1 + max((self._depth.get(g, 0) for g in deps), default=-1)
                )

    def blockers(self, prog: Program) -> list[str]:
        """Names of the programs ``prog`` must still wait for."""
        missing: list[str] = [
            f"pid {pid} left by the previous daemon to exit"
            for pid, owner in self.leftovers.items()
            if owner is None or owner == prog.spec.name
        ]
        for group in prog.spec.after:
            if any(p.state is State.STARTING and p.pid is None for p in self._group(group)):
                missing.append(group)
        for group in prog.spec.requires:
            for p in self._group(group):
                done = (
                    p.state is State.EXITED
                    and p.last_exit is not None
                    and (
                        p.last_exit.reason == "exit"
                        and p.last_exit.code in p.spec.success_exit_codes
                    )
                )
                if p.state is not State.RUNNING and not done:
                    missing.append(group)
                    break
        return missing

    def gate(self, prog: Program) -> list[str]:
        """What ``prog`` must still wait for (see Host.gate)."""
        missing = self.blockers(prog)
        if missing:
            self.waiting.add(prog)
        else:
            self.waiting.discard(prog)
        return missing

    def dependency_moved(self) -> None:
        """Start the programs that were waiting, if what they wait for is there now."""
        for p in list(self.waiting):
            if p.state is not State.STARTING or p.pid is not None:
                self.waiting.discard(p)  # stopped or started meanwhile: not waiting any more
            elif p in self.waiting and not self.blockers(p):
                p.try_spawn()

    def _start_order(self, progs: list[Program]) -> list[Program]:
        return sorted(progs, key=lambda p: self._depth.get(p.spec.group, 0))

    # --- operations -----------------------------------------------------------------------
    async def start(
        self, names: Iterable[str] = ("all",), *, autostart_only: bool = False
    ) -> list[dict[str, Any]]:
        progs = self._start_order(self.resolve(names))
        batch: list[Program] = []
        for p in progs:
            if autostart_only and not p.spec.autostart:
                continue
            if p.prepare_start():
                batch.append(p)
            if len(batch) >= _BATCH:
                self._spawn_batch(batch)
                batch = []
                await asyncio.sleep(0)  # keep the API answering during a large start
        self._spawn_batch(batch)
        return [p.snapshot() for p in progs]

    def _spawn_batch(self, batch: list[Program]) -> None:
        """Spawn programs, several fork+execs at a time.

        A fork+exec mostly waits for the kernel (and releases the GIL), so a few worker
        threads start 500 programs about three times faster than one loop. The loop thread
        waits for the batch: no API request can see a program half-spawned. The workers only
        live for the batch; the idle daemon keeps its single thread.
        """
        if len(batch) <= 2:
            for p in batch:
                p.spawn()
            return
        now = self.loop.time()
        with ThreadPoolExecutor(min(_SPAWN_THREADS, len(batch)), "heartline-spawn") as pool:
            results = list(pool.map(Program.spawn_blocking, batch))
        for p, r in zip(batch, results, strict=True):
            p.spawned(r, now)

    async def stop(self, names: Iterable[str] = ("all",)) -> list[dict[str, Any]]:
        """Stop programs, dependents before what they depend on; wait for every exit."""
        progs = self.resolve(names)
        results: dict[str, dict[str, Any]] = {}
        layers: dict[int, list[Program]] = {}
        for p in progs:
            layers.setdefault(self._depth.get(p.spec.group, 0), []).append(p)
        for depth in sorted(layers, reverse=True):
            done = await asyncio.gather(*(p.stop() for p in layers[depth]))
            for r in done:
                results[r["name"]] = r
        return [results[p.spec.name] for p in progs]

    async def restart(self, names: Iterable[str]) -> list[dict[str, Any]]:
        names = list(names)
        for p in self.resolve(names):
            # Recorded in the state file while the stop is under way: a daemon that dies now
            # leaves its successor the whole restart to finish, not a half-stopped program.
            p.intent = "restart"
        await self.stop(names)
        return await self.start(names)

    def signal(self, names: Iterable[str], sig: int) -> list[dict[str, Any]]:
        out = []
        for p in self.resolve(names):
            out.append({"name": p.spec.name, "sent": p.send_signal(sig), "pid": p.pid})
        return out

    def reopen_logs(self) -> None:
        for p in self.programs.values():
            p.reopen_logs()

    async def reload(self, config: Config) -> dict[str, list[str]]:
        """Apply a new config: only added, removed and changed programs are touched."""
        new = config.programs
        removed = [n for n in self.programs if n not in new]
        added = [n for n in new if n not in self.programs]
        changed = [n for n in new if n in self.programs and self.programs[n].spec != new[n]]
        gone = [self.programs[n] for n in (*removed, *changed)]
        await asyncio.gather(*(p.stop() for p in gone))
        for p in gone:
            p.close()
            self.waiting.discard(p)
            del self.programs[p.spec.name]
        order = list(new)
        fresh: list[Program] = []
        for n in (*changed, *added):
            prog = Program(new[n], self)
            self.programs[n] = prog
            fresh.append(prog)
        self.programs = {n: self.programs[n] for n in order}
        self._index_groups()
        for p in self._start_order(fresh):
            if p.spec.autostart:
                p.start()
        self._save_soon()
        return {"added": added, "removed": removed, "changed": changed}

    async def shutdown(self) -> list[dict[str, Any]]:
        result = await self.stop(["all"]) if self.programs else []
        await self._stop_strays()
        for p in self.programs.values():
            p.close()
        self.notify.close()
        if self._save_timer is not None:
            self._save_timer.cancel()
        if self.state_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.state_path)
        return result

    def close(self) -> None:
        """Release descriptors without stopping anything (the processes stay for adoption)."""
        for p in self.programs.values():
            p.close()
        for fd in self.strays.values():
            self.loop.remove_reader(fd)
            os.close(fd)
        self.strays.clear()
        self.notify.close()
        if self._save_timer is not None:
            self._save_timer.cancel()

    # --- what programs tell the supervisor (the Host protocol) ------------------------------
    def spawned(self, prog: Program) -> None:
        """A new main process: index it for the notify socket, hand it to the holder."""
        proc = prog.proc
        assert proc is not None
        self.by_pid[proc.pid] = prog
        if self.holder is not None:
            fds = [fd for fd in (proc.stdout, proc.stderr) if fd is not None]
            self.holder.add(prog.spec.name, proc.pid, fds, prog.spec.stop_signal)

    def reaped(self, prog: Program, pid: int) -> None:
        self.by_pid.pop(pid, None)
        if self.holder is not None:
            self.holder.drop(prog.spec.name)

    def others_changed(self, prog: Program) -> None:
        if self.holder is not None:
            self.holder.others(prog.spec.name, list(prog.others))
        self.changed(prog)

    def look_for_escapees(self) -> None:
        self.track_processes()

    # --- processes beyond the main ones (see _tree) -----------------------------------------
    def track_processes(self, *, max_age: float = 0.0) -> dict[int, ProcInfo] | None:
        """One pass over /proc: attribute, follow and reap the processes that escaped programs.

        A process outside every program's process group is a program's when its parent chain
        leads to a program's main process (a ``setsid()`` child of a live program), or, once
        orphaned and reparented to this subreaper, when its group or session is a program's or
        its environment names the program. Zombie children nobody else reaps are reaped.
        Skipped (None) when a pass is at most ``max_age`` old.
        """
        if not self.subreaper:
            return None
        now = self.loop.time()
        if max_age and now - self._last_scan < max_age:
            return None
        self._last_scan = now
        me = os.getpid()
        procs = self._family(me)
        owners: dict[int, Program] = dict(self.by_pid)
        for program in self.programs.values():
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
        known = OWN_CHILDREN | self.by_pid.keys() | self.strays.keys()
        for prog in self.programs.values():
            known |= prog.others.keys()
        return kids - known

    def collect_leftovers(self, prog: Program, main_pid: int) -> None:
        """Everything left of ``prog`` now that its main process exited (it is a zombie, so its
        pid cannot be recycled and names its group and session exactly)."""
        procs: dict[int, ProcInfo] | None = None
        if self.subreaper:
            # The exiting process's live children were handed to us before its exit could be
            # seen, as was any orphan that escaped meanwhile: no unknown child of ours means
            # nothing was left behind and nothing needs a look (the common, fast case).
            unknown = self._unknown_children()
            if unknown is not None and not unknown:
                return
            procs = self.track_processes()
        if procs is None:
            procs = scan()
        for info in procs.values():
            if info.pid == main_pid or info.state == "Z" or info.pid in OWN_CHILDREN:
                continue
            if main_pid in (info.pgrp, info.session):
                prog.others.add(info.pid, info.start_time)

    def _by_env(self, pid: int) -> Program | None:
        env = environ_of(pid, _ENV_KEYS)
        prog = self.programs.get(env.get("HEARTLINE_PROGRAM", ""))
        if prog is not None and self.notify.owns(env.get("NOTIFY_SOCKET", "")):
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
        self.loop.add_reader(fd, self._stray_exited, info.pid)
        log.warning(
            "pid %d (%s) escaped a program and cannot be told whose; it is stopped with the daemon",
            info.pid,
            info.name,
        )

    def _stray_exited(self, pid: int) -> None:
        fd = self.strays.pop(pid, None)
        if fd is None:
            return
        release_exited(self.loop, fd)
        if not self.strays and self._strays_gone is not None and not self._strays_gone.done():
            self._strays_gone.set_result(None)

    async def _stop_strays(self) -> None:
        """TERM to every stray, KILL to those left after the default stop timeout."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.strays:
                return
            self._strays_gone = self.loop.create_future()
            for fd in self.strays.values():
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(fd, sig)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ProgramSpec.stop_timeout):
                    await self._strays_gone

    def on_sigchld(self) -> None:
        """SIGCHLD: an orphan that came to us may have died; reap it soon (coalesced)."""
        if self._scan_soon is None:
            self._scan_soon = self.loop.call_later(0.05, self._scan_after_sigchld)

    def _scan_after_sigchld(self) -> None:
        self._scan_soon = None
        # Most SIGCHLDs are a program's own exit, handled through its pidfd: look further only
        # when a child of ours is one nobody follows.
        if self._unknown_children() != set():
            self.track_processes()

    # --- leftovers of a previous daemon ------------------------------------------------------
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
                prog = self.programs.get(env.get("HEARTLINE_PROGRAM", ""))
        else:
            prog = self.programs.get(owner)
        self.leftovers[pid] = owner
        self.background(self._stop_leftover(pid, pidfd, prog))

    async def _stop_leftover(self, pid: int, pidfd: int, prog: Program | None) -> None:
        sig = prog.spec.stop_signal if prog is not None else signal.SIGTERM
        grace = prog.spec.stop_timeout if prog is not None else ProgramSpec.stop_timeout
        gone = self.loop.create_future()
        self.loop.add_reader(pidfd, lambda: None if gone.done() else gone.set_result(None))
        try:
            whose = f"of {prog.spec.name}" if prog is not None else "of an unknown program"
            log.warning(
                "stopping pid %d %s, left by the previous daemon and not adopted; a new copy "
                "starts once it is gone",
                pid,
                whose,
            )
            _signal_process_group(pid, pidfd, sig)
            try:
                async with asyncio.timeout(grace):
                    await gone
            except TimeoutError:
                log.warning("pid %d still runs %gs after the stop signal; SIGKILL", pid, grace)
                _signal_process_group(pid, pidfd, signal.SIGKILL)
                await gone
        finally:
            self.loop.remove_reader(pidfd)
            os.close(pidfd)
            self.leftovers.pop(pid, None)
            self.dependency_moved()

    # --- change notification and the state file ---------------------------------------------
    def changed(self, prog: Program) -> None:
        """``prog`` changed: tell the listeners, save the state file soon."""
        for fn in self.listeners:
            fn(prog)
        self._save_soon()

    def _save_soon(self) -> None:
        if self.state_path and not self._save_pending and self._save_timer is None:
            self._save_pending = True
            self.loop.call_soon(self._save)

    def _save(self) -> None:
        """Record the programs so a daemon started after a crash can adopt them.

        A write that fails (a full disk) is tried again with a growing delay and shown in
        status; the daemon goes on supervising meanwhile.
        """
        self._save_pending = False
        self._save_timer = None
        if not self.state_path:
            return
        records = {name: p.record() for name, p in self.programs.items()}
        data = _statefile.dump(
            boot_id=boot_id(),
            daemon_pid=os.getpid(),
            notify=self.notify.address,
            records=records,
        )
        try:
            atomic_write(self.state_path, data, fsync=False)
        except OSError as e:
            reason = e.strerror or str(e)
            if self.state_error is None:
                log.error(
                    "cannot write the state file %s: %s; retrying (a daemon crash now would "
                    "lose what changed since)",
                    self.state_path,
                    reason,
                )
                self.state_error = {"error": reason, "since": self.clock.wall()}
            self.state_error["error"] = reason
            self.state_error["retry_in"] = self._save_delay
            self._save_timer = self.loop.call_later(self._save_delay, self._save)
            self._save_delay = min(self._save_delay * 2, _SAVE_RETRY[1])
            return
        if self.state_error is not None:
            log.info("the state file %s is written again", self.state_path)
            self.state_error = None
        self._save_delay = _SAVE_RETRY[0]

    def load_state(self) -> _statefile.Saved:
        """What a previous daemon on this boot recorded (empty when nothing usable)."""
        return load_state(self.state_path)


def load_state(path: str | None) -> _statefile.Saved:
    """Read and check a state file; never raises (see _statefile)."""
    if not path:
        return _statefile.Saved()
    try:
        with open(path, "rb") as f:
            data = f.read(64 << 20)
    except FileNotFoundError:
        return _statefile.Saved()
    except OSError as e:
        log.error("cannot read the state file %s: %s", path, e.strerror)
        return _statefile.Saved()
    return _statefile.parse(data, boot_id=boot_id(), path=path)


def _signal_process_group(pid: int, pidfd: int, sig: int) -> None:
    """``sig`` to the group ``pid`` leads, else to ``pid`` alone (through its pidfd).

    The group is looked up and signalled microseconds apart; a pid is not handed out again
    that fast (the kernel allocates them in a cycle).
    """
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    except OSError:
        pass
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(pidfd, sig)
