"""The supervisor: a set of programs, their start order, and what the API can ask of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from heartline._util import SYSTEM_CLOCK, Clock, atomic_write, boot_id, format_duration
from heartline.api import ProgramStatus, SingletonInfo, StateFileError, StopResult
from heartline.config import Config, ProgramSpec
from heartline.errors import UnknownProgram
from heartline.supervise import _statefile
from heartline.supervise._escapes import Escapes
from heartline.supervise._heartbeat import NotifyReceiver, notify_address
from heartline.supervise._host import Seats
from heartline.supervise._launch import Launcher, OsLauncher
from heartline.supervise._logs import OpenFiles
from heartline.supervise._process import identity_env
from heartline.supervise._program import Program
from heartline.supervise._states import State

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
#: A state file that cannot be written is tried again after this long, doubling up to the max.
_SAVE_RETRY = (0.5, 30.0)


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
        self.state_error: StateFileError | None = None
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
        #: Escaped processes, strays and a previous daemon's leftovers (see _escapes).
        self.escapes = Escapes(self)
        #: When the daemon last came back from a stall of its own (loop time).
        self.resumed_at = -1e9
        if log_dir is not None:
            os.makedirs(log_dir, mode=0o750, exist_ok=True)
        #: The cluster's seat keeper for singleton programs (the daemon plugs it in).
        self.seats: Seats | None = None
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

    def snapshot(self, names: Iterable[str] = ()) -> list[ProgramStatus]:
        names = list(names)
        progs = self.resolve(names) if names else list(self.programs.values())
        return [p.snapshot() for p in progs]

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
        if spec.singleton and self.seats is not None:
            env.update(self.seats.env(spec.name))
        return env

    # --- singletons -------------------------------------------------------------------------
    def seat(self, prog: Program) -> str | None:
        """See Host.seat."""
        if not prog.spec.singleton:
            return None
        if self.seats is None:
            return "waiting for the cluster's backend"
        return self.seats.seat(prog.spec.name)

    def singleton_info(self, prog: Program) -> SingletonInfo | None:
        if self.seats is None:
            return None
        return self.seats.info(prog.spec.name)

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
            for pid, owner in self.escapes.leftovers.items()
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
    ) -> list[ProgramStatus]:
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

    async def stop(self, names: Iterable[str] = ("all",)) -> list[StopResult]:
        """Stop programs, dependents before what they depend on; wait for every exit."""
        progs = self.resolve(names)
        results: dict[str, StopResult] = {}
        layers: dict[int, list[Program]] = {}
        for p in progs:
            layers.setdefault(self._depth.get(p.spec.group, 0), []).append(p)
        for depth in sorted(layers, reverse=True):
            done = await asyncio.gather(*(p.stop() for p in layers[depth]))
            for r in done:
                results[r["name"]] = r
        return [results[p.spec.name] for p in progs]

    async def restart(self, names: Iterable[str]) -> list[ProgramStatus]:
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

    async def shutdown(self) -> list[StopResult]:
        result = await self.stop(["all"]) if self.programs else []
        await self.escapes.stop_strays()
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
        self.escapes.close()
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
        # Stopping many programs at once (`down`, `stop all`) walks the tree once, not once
        # per program; a child that came back to the daemon meanwhile forces a new walk.
        self.escapes.track(max_age=0.5)

    def collect_leftovers(self, prog: Program, main_pid: int) -> None:
        self.escapes.collect_leftovers(prog, main_pid)

    def track_processes(self, *, max_age: float = 0.0) -> None:
        """Find escaped processes now (or reuse a pass at most ``max_age`` old)."""
        self.escapes.track(max_age=max_age)

    def on_sigchld(self) -> None:
        self.escapes.on_sigchld()

    def add_leftover(self, pid: int, expected_start: int | None, owner: str | None) -> None:
        """See Escapes.add_leftover."""
        self.escapes.add_leftover(pid, expected_start, owner)

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
