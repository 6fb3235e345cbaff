"""The supervisor: a set of programs, their start order, and what the API can ask of them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from heartline._util import atomic_write
from heartline.config import Config, ProgramSpec
from heartline.errors import UnknownProgram
from heartline.supervise._heartbeat import NotifyReceiver, notify_address
from heartline.supervise._logs import OpenFiles
from heartline.supervise._process import boot_id, identity_env, start_time
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


class FdHolder(Protocol):
    """Keeps a second reference to each program's output pipes while the daemon lives."""

    def add(self, key: str, pid: int, fds: list[int], stop_signal: int) -> None: ...

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
        run_dir: str | None = None,
    ) -> None:
        self.loop = loop
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
        self._start_ticks: dict[int, int | None] = {}
        self.base_env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
        #: Live programs by main pid (the notify socket attributes datagrams with it).
        self.by_pid: dict[int, Program] = {}
        self.notify = NotifyReceiver(loop, notify_address(run_dir), self.by_pid)
        if log_dir is not None:
            os.makedirs(log_dir, mode=0o750, exist_ok=True)
        self.programs: dict[str, Program] = {}
        for name, spec in programs.items():
            self.programs[name] = Program(spec, self)
        self._index_groups()

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
        missing: list[str] = []
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

    def dependency_moved(self) -> None:
        """Start the programs that were waiting, if what they wait for is there now."""
        for p in list(self.waiting):
            if p in self.waiting and p.state is State.STARTING and not self.blockers(p):
                p._try_spawn()

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
                p._spawn()
            return
        now = self.loop.time()
        with ThreadPoolExecutor(min(_SPAWN_THREADS, len(batch)), "heartline-spawn") as pool:
            results = list(pool.map(Program.spawn_blocking, batch))
        for p, r in zip(batch, results, strict=True):
            p._after_spawn(r, now)

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
        self.resolve(names)
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
        self._changed(None)
        return {"added": added, "removed": removed, "changed": changed}

    async def shutdown(self) -> list[dict[str, Any]]:
        result = await self.stop(["all"]) if self.programs else []
        for p in self.programs.values():
            p.close()
        self.notify.close()
        if self.state_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.state_path)
        return result

    def close(self) -> None:
        """Release descriptors without stopping anything (the processes stay for adoption)."""
        for p in self.programs.values():
            p.close()
        self.notify.close()

    # --- fd holder ------------------------------------------------------------------------
    def holder_add(self, prog: Program, out: int | None, err: int | None) -> None:
        if self.holder is not None and prog.pid is not None:
            fds = [fd for fd in (out, err) if fd is not None]
            self.holder.add(prog.spec.name, prog.pid, fds, prog.spec.stop_signal)

    def holder_drop(self, prog: Program) -> None:
        if self.holder is not None:
            self.holder.drop(prog.spec.name)

    # --- change notification and the state file ---------------------------------------------
    def _changed(self, prog: Program | None) -> None:
        if prog is not None:
            for fn in self.listeners:
                fn(prog)
        if self.state_path and not self._save_pending:
            self._save_pending = True
            self.loop.call_soon(self._save)

    def _save(self) -> None:
        """Record the live processes so a daemon started after a crash can adopt them.

        No fsync: the file only has to outlive the daemon, not the machine (after a reboot
        every pid in it is meaningless anyway, and the boot id says so).
        """
        self._save_pending = False
        if not self.state_path:
            return
        live: dict[str, Any] = {}
        ticks: dict[int, int | None] = {}
        for name, p in self.programs.items():
            if p.pid is None:
                continue
            if p.pid not in self._start_ticks:
                self._start_ticks[p.pid] = start_time(p.pid)
            ticks[p.pid] = self._start_ticks[p.pid]
            live[name] = {
                "pid": p.pid,
                "start_time": ticks[p.pid],
                "pipes": list(p.pipe_inodes),
                "restarts": p.restarts,
                "started": p.started_wall,
                "spec": p.digest,
            }
        self._start_ticks = ticks
        data = {"version": 1, "boot_id": boot_id(), "daemon_pid": os.getpid(), "programs": live}
        try:
            atomic_write(self.state_path, json.dumps(data).encode(), fsync=False)
        except OSError as e:
            log.warning("cannot write state file %s: %s", self.state_path, e.strerror)

    def load_state(self) -> dict[str, Any]:
        """Processes recorded by a previous daemon on this boot (empty when none)."""
        if not self.state_path:
            return {}
        try:
            with open(self.state_path, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("boot_id") != boot_id():
            return {}
        progs = data.get("programs")
        return progs if isinstance(progs, dict) else {}
