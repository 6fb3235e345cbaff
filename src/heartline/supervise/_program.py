"""One supervised program instance: its state machine.

The program talks to its process through a :class:`~heartline.supervise._launch.Process` and to
its supervisor through :class:`~heartline.supervise._host.Host`; every state change goes
through :meth:`Program._set_state`, which checks it against the transition table in _states.
Timers are the loop's (``call_later``/``call_at`` on ``loop.time()``), so on a virtual-time loop
(``heartline.testing``) the whole chain watchdog -> report -> stop -> kill -> policy -> back-off
runs in milliseconds.

The module is a little over 600 lines on purpose: every transition of the state machine is in
this one class (liveness lives in _liveness), so each state can be read with every path into it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from collections.abc import Callable

from heartline._util import format_duration, start_time
from heartline.api import Health, ProgramStatus, StopReason, StopResult
from heartline.config import ProgramSpec
from heartline.supervise._host import Host
from heartline.supervise._launch import Process
from heartline.supervise._liveness import LivenessMixin
from heartline.supervise._logs import LogFile
from heartline.supervise._others import Others
from heartline.supervise._output import Output
from heartline.supervise._policy import Decision, ExitInfo, History, decide
from heartline.supervise._process import SpawnFailed
from heartline.supervise._statefile import Record
from heartline.supervise._states import State, check_transition

log = logging.getLogger(__name__)

#: A spawn that fails (bad path, bad user) will not fix itself within milliseconds: retry no
#: faster than this, whatever the back-off says, so a typo cannot spin the daemon.
SPAWN_FAILURE_FLOOR = 1.0


def spec_digest(spec: ProgramSpec) -> str:
    """A short fingerprint of a spec: tells a daemon whether an adopted program's config changed."""
    return hashlib.sha256(repr(spec).encode()).hexdigest()[:16]


class Program(LivenessMixin):
    """Runs one :class:`ProgramSpec`; every transition goes through :meth:`_set_state`."""

    def __init__(self, spec: ProgramSpec, host: Host) -> None:
        self.spec = spec
        self.digest = spec_digest(spec)
        self.host = host
        self.loop = host.loop
        self.state = State.STOPPED
        self.detail = ""
        self.proc: Process | None = None
        self.pipe_inodes: tuple[int, int] = (0, 0)
        self.started_at = 0.0
        self.started_wall = 0.0
        self.restarts = 0
        self.last_exit: ExitInfo | None = None
        self.last_stop_killed: bool | None = None
        self.history = History()
        self.adopted = False
        self.restarts_left = host.max_restarts
        #: What is under way, kept in the state file: "stop" (an operator's), "restart".
        self.intent: str | None = None
        #: Set when an adopted program's NOTIFY_SOCKET is not an address this daemon holds.
        self.unheard = ""
        self.notify_status = ""
        self.health: Health | None = None
        self.last_beat = 0.0
        self.output = Output(self.loop)
        #: Processes of the program outside its main process (see _others).
        self.others = Others(self.loop, lambda: host.others_changed(self))
        self._timer: asyncio.Handle | None = None
        self._deadline: float | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._stop_waiters: list[asyncio.Future[StopResult]] = []
        self._after_stop: Callable[[], None] | None = None
        #: Set while a stop ends in STANDBY (the singleton gives up its lock): the detail.
        self._standby_after: str | None = None
        self._killed = False
        self._restart_pending = False
        #: Why the daemon is stopping the program for a restart ("watchdog", "check", ...).
        self._kill_reason: tuple[StopReason, str] | None = None
        self._wd_period = 0.0
        self._wd_timer: asyncio.TimerHandle | None = None
        self._wd_at = 0.0
        self._check_task: asyncio.Task[None] | None = None
        self._ticks: int | None = None
        self._ticks_of: int | None = None
        self.out: LogFile | None = None
        self.err: LogFile | None = None
        if host.log_dir is not None:
            _report_directory(host.report_dir(spec.name), spec.user)
            base = os.path.join(host.log_dir, spec.name)
            self.out = LogFile(base + ".out.log", spec.log, host.open_files)
            self.err = (
                self.out
                if spec.redirect_stderr
                else LogFile(base + ".err.log", spec.log, host.open_files)
            )

    @property
    def pid(self) -> int | None:
        """The main process's pid, while there is one."""
        return self.proc.pid if self.proc is not None else None

    @property
    def retry_at(self) -> float | None:
        """Loop time of the next automatic try (back-off, cool-down), if one is scheduled."""
        if self.state in (State.BACKOFF, State.FATAL):
            return self._deadline
        return None

    # --- state ----------------------------------------------------------------------------
    def _set_state(self, state: State, detail: str = "") -> None:
        check_transition(self.state, state)
        self.state = state
        self.detail = detail
        self.host.changed(self)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = None

    def _schedule(self, delay: float, fn: Callable[[], None]) -> None:
        self._cancel_timer()
        self._deadline = self.loop.time() + delay
        self._timer = self.loop.call_later(delay, fn)

    def record(self) -> Record:
        """What the state file keeps of this program (see _statefile.Record)."""
        rec = Record(restarts=self.restarts, spec=self.digest, intent=self.intent)
        if self.proc is not None:
            rec.pid = self.proc.pid
            rec.start_time = self._start_ticks()
            rec.pipes = self.pipe_inodes
            rec.started = self.started_wall
        elif self.state in (State.STOPPED, State.EXITED, State.FATAL):
            rec.state = self.state.value
            rec.detail = self.detail
        if self.last_exit is not None:
            e = self.last_exit
            rec.last_exit = {"reason": e.reason, "code": e.code, "signal": e.signal,
                             "detail": e.detail}  # fmt: skip

        for pid in self.others:
            ticks = start_time(pid)
            if ticks is not None:
                rec.others.append((pid, ticks))
        return rec

    def _start_ticks(self) -> int | None:
        if self._ticks_of != self.pid:
            self._ticks = self.proc.start_ticks() if self.proc is not None else None
            self._ticks_of = self.pid
        return self._ticks

    def snapshot(self) -> ProgramStatus:
        now = self.loop.time()
        detail = self.detail
        if self._deadline is not None and self.state in (State.BACKOFF, State.FATAL):
            retry = f"retry in {format_duration(max(0.0, self._deadline - now))}"
            detail = f"{detail}; {retry}" if detail else retry
        return {
            "name": self.spec.name,
            "group": self.spec.group,
            "state": self.state.value,
            "detail": detail,
            "pid": self.pid,
            "uptime": round(now - self.started_at, 3) if self.pid is not None else None,
            "started": self.started_wall if self.pid is not None else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit.to_json() if self.last_exit else None,
            "last_stop_killed": self.last_stop_killed,
            "adopted": self.adopted,
            "notify_status": self.notify_status,
            "watchdog": (
                {"period": self._wd_period, "last_beat_ago": round(now - self.last_beat, 3)}
                if self._wd_timer is not None
                else None
            ),
            "health": self.health,
            "others": list(self.others),
            "singleton": self.host.singleton_info(self) if self.spec.singleton else None,
        }

    # --- start ----------------------------------------------------------------------------
    def start(self, *, manual: bool = True) -> None:
        """Ask for the program to run (no-op when it already does)."""
        if self.prepare_start(manual=manual):
            self.spawn()

    def prepare_start(self, *, manual: bool = True) -> bool:
        """The bookkeeping of :meth:`start`; True when the caller must now spawn it."""
        if self.state in (State.STARTING, State.RUNNING):
            return False
        if self.state is State.STOPPING:
            self._after_stop = lambda: self.start(manual=manual)
            return False
        self._cancel_timer()
        if manual:
            self._restart_pending = False
            self.history.reset()
            self.restarts_left = self.host.max_restarts
            self.intent = None
        return self._may_spawn()

    def try_spawn(self) -> None:
        """Spawn now if the programs this one needs allow it, else wait in STARTING."""
        if self._may_spawn():
            self.spawn()

    def _may_spawn(self) -> bool:
        """True when the program may be spawned now; otherwise it waits in STARTING (for the
        programs it needs) or, a singleton whose cluster lock this host lacks, in STANDBY."""
        self._timer = None
        self._deadline = None
        standby = self.host.seat(self)
        if standby is not None:
            self._set_state(State.STANDBY, standby)
            return False
        missing = self.host.gate(self)
        if missing:
            self._set_state(State.STARTING, "waiting for " + ", ".join(missing))
            return False
        return True

    def spawn(self) -> None:
        """fork+exec now, on the loop."""
        now = self.loop.time()
        self.spawned(self.spawn_blocking(), now)

    def spawn_blocking(self) -> Process | SpawnFailed:
        """fork+exec the program; safe to call from a worker thread (touches no loop state)."""
        spec = self.spec
        try:
            return self.host.launcher.spawn(
                _with_watchdog_pid(spec.argv()) if spec.watchdog > 0 else spec.argv(),
                env=self.host.env_for(spec),
                cwd=spec.cwd,
                user=spec.user,
                group=spec.group_name,
                umask=spec.umask,
                capture=self.host.capture,
                merge_stderr=spec.redirect_stderr,
            )
        except SpawnFailed as e:
            return e

    def spawned(self, sp: Process | SpawnFailed, now: float) -> None:
        """Take on what :meth:`spawn_blocking` started (on the loop, after a batch too)."""
        spec = self.spec
        self.history.record_start(now)
        if self._restart_pending:
            self.restarts += 1
            self._restart_pending = False
        if isinstance(sp, SpawnFailed):
            log.warning("%s: cannot start: %s", spec.name, sp)
            if self.state is not State.STARTING:
                self._set_state(State.STARTING, "starting")
            self._exited(ExitInfo("spawn-failed", detail=str(sp)), uptime=0.0)
            return
        self.history.spawn_failures = 0
        self._take(sp, adopted=False)
        self.started_at = now
        self.started_wall = self.host.wall()
        log.info("%s: started pid %d", spec.name, sp.pid)
        # A new process: whatever state the last run ended in (STOPPING after a watchdog or
        # check restart), this one starts afresh.
        self._set_state(State.STARTING)
        self._begin_readiness()
        self.host.dependency_moved()  # `after` only waits for the spawn

    def _take(self, proc: Process, *, adopted: bool) -> None:
        """Make ``proc`` this program's main process: watch its exit and its output."""
        self.proc = proc
        self.adopted = adopted
        self.notify_status = ""
        self.unheard = ""
        self._kill_reason = None
        self._killed = False
        proc.watch(self.loop, self._on_exit)
        inodes = [0, 0]
        for i, (fd, logfile) in enumerate(((proc.stdout, self.out), (proc.stderr, self.err))):
            if fd is not None:
                inodes[i] = self.output.watch(fd, logfile)
        self.pipe_inodes = (inodes[0], inodes[1])
        self.host.spawned(self)

    def _begin_readiness(self) -> None:
        spec = self.spec
        if spec.check is not None:
            self._check_task = self.host.background(self._check_loop())
        if spec.ready == "notify":
            self._set_state(State.STARTING, "waiting for READY=1")
            self._schedule(spec.start_timeout, self._start_timed_out)
        elif spec.ready == "check":
            self._set_state(State.STARTING, "waiting for the health check to pass")
            self._schedule(spec.start_timeout, self._start_timed_out)
        elif spec.ready_after > 0:
            self._set_state(State.STARTING, f"ready after {spec.ready_after:g}s")
            self._schedule(spec.ready_after, self._became_ready)
        else:
            self._became_ready()

    def _start_timed_out(self) -> None:
        due = self._deadline
        self._timer = None
        self._deadline = None
        if due is not None and self.host.note_lateness(due):
            # The daemon itself did not run when the deadline passed: a READY=1 sent meanwhile
            # was queued, and drained just now; it is handled before the timeout is judged.
            self._timer = self.loop.call_soon(self._start_timed_out)
            return
        if self.state is not State.STARTING or self.proc is None:
            return
        what = "READY=1" if self.spec.ready == "notify" else "a passing health check"
        self._terminate("start-timeout", f"no {what} within {self.spec.start_timeout:g}s")

    def _became_ready(self) -> None:
        self._cancel_timer()
        if self.state is State.STOPPING or self.proc is None:
            return
        self._set_state(State.RUNNING)
        self._arm_watchdog(self.spec.watchdog)
        self.host.dependency_moved()

    # --- restart for a reason (watchdog, check, start timeout) -------------------------------
    def _terminate(self, reason: StopReason, detail: str) -> None:
        """Stop a live program so that the restart policy takes over, recording why.

        A hung program is first asked for a report (``report_signal``, default SIGUSR2) and
        given ``report_wait`` to write it into its log; then the usual stop path runs: stop
        signal to the group, SIGKILL after ``stop_timeout``.
        """
        if self.proc is None or self.state is State.STOPPING:
            return
        log.warning("%s: %s: %s; stopping it", self.spec.name, reason, detail)
        self._kill_reason = (reason, detail)
        self._cancel_timer()
        self._disarm_watchdog()
        self._stop_checks()
        self._killed = False
        self._set_state(State.STOPPING, f"{reason}: {detail}")
        report = self.spec.report_signal
        # The report signal asks a program that installed a handler for it; to one that did
        # not, its default action (for SIGUSR2: terminate) would end the program at once and
        # skip the graceful stop below, so it is sent only when /proc says it is caught.
        if (
            report is not None
            and reason in ("watchdog", "start-timeout")
            and self.proc.catches(report)
        ):
            self.proc.send(report)
            self._kill_timer = self.loop.call_later(self.spec.report_wait, self._send_stop_signal)
        else:
            self._send_stop_signal()

    def _send_stop_signal(self) -> None:
        self._kill_timer = None
        if self.proc is None or self.state is not State.STOPPING:
            return
        self._send_stop(self.spec.stop_signal)
        self._kill_timer = self.loop.call_later(self.spec.stop_timeout, self._kill)

    def _send_stop(self, sig: int) -> None:
        """``sig`` to the main process's group and to each process of the program outside it."""
        self.host.look_for_escapees()  # escapees found now are stopped with the rest
        self.others.new_stop()
        if self.proc is not None:
            self.proc.signal_group(sig)
        self.others.signal(sig, skip_group=self.pid)

    def adopt(self, pid: int, record: Record) -> bool:
        """Take over a process left by a previous daemon; False when it is not ours any more."""
        want_out = self.host.capture
        want_err = self.host.capture and not self.spec.redirect_stderr
        pipes = (record.pipes[0] if want_out else 0, record.pipes[1] if want_err else 0)
        proc = self.host.launcher.adopt(pid, record.start_time, pipes)
        if proc is None:
            return False
        self.restarts = record.restarts
        self.started_wall = record.started or self.host.wall()
        self.started_at = self.loop.time() - max(0.0, self.host.wall() - self.started_wall)
        self._take(proc, adopted=True)
        self.pipe_inodes = record.pipes
        for other, ticks in record.others:
            self.others.add(other, ticks)
        address = proc.environ("NOTIFY_SOCKET")
        if address is not None and not self.host.notify.owns(address):
            self.unheard = address
            log.error(
                "%s: its heartbeats go to %s, which another process holds now; its watchdog is "
                "suspended until it is restarted",
                self.spec.name,
                address,
            )
        detail = "adopted after a daemon restart"
        if self.unheard:
            detail += "; its notify address is held by another process: watchdog suspended"
        self._set_state(State.RUNNING, detail)
        self._arm_watchdog(self.spec.watchdog)
        if self.spec.check is not None:
            self._check_task = self.host.background(self._check_loop())
        log.info("%s: adopted pid %d", self.spec.name, pid)
        return True

    def restore(self, record: Record) -> bool:
        """Take over what a previous daemon knew of this program when it had no process.

        True when the program is to stay down as it was: stopped by an operator, exited for
        good (a one-shot job must not run twice), or fatal until its cool-down.
        """
        self.restarts = record.restarts
        if record.last_exit is not None:
            self.last_exit = ExitInfo(**record.last_exit)
        if record.state is None or (record.state == "stopped" and record.intent != "stop"):
            return False
        self.intent = record.intent
        self._set_state(State(record.state), record.detail)
        if self.state is State.FATAL and self.spec.crash_loop.cooldown is not None:
            self._schedule(self.spec.crash_loop.cooldown, self._retry_after_fatal)
        return True

    # --- exit -----------------------------------------------------------------------------
    def _on_exit(self) -> None:
        proc = self.proc
        assert proc is not None
        pid = proc.pid

        def before_reap() -> None:
            # The main process is a zombie: its pid, which is also the id of its process
            # group and session, cannot be recycled yet, so what is found in them now is
            # this program's.
            self.host.collect_leftovers(self, pid)

        info = proc.reap(before_reap)
        if info is None:
            return
        proc.close()
        self.proc = None
        self.host.reaped(self, pid)
        self.unheard = ""
        self._disarm_watchdog()
        self._stop_checks()
        uptime = self.loop.time() - self.started_at
        log.info(
            "%s: pid %d %s after %s", self.spec.name, pid, info.describe(), format_duration(uptime)
        )
        reason, self._kill_reason = self._kill_reason, None
        stopping = self.state is State.STOPPING
        if self.others:
            self._stop_others(pid, info, stopping=stopping)
            self.others.when_gone(lambda: self._main_gone(info, uptime, reason, stopping))
            return
        self._main_gone(info, uptime, reason, stopping)

    def _stop_others(self, main_pid: int, info: ExitInfo, *, stopping: bool) -> None:
        """The main process exited and left processes behind: stop them before anything else
        (a restart beside them would run the program twice)."""
        n = len(self.others)
        what = f"{n} process" + ("es" if n > 1 else "")
        if stopping:
            log.info(
                "%s: pid %d %s; waiting for %s more: %s",
                self.spec.name, main_pid, info.describe(), what, self.others.describe(),
            )  # fmt: skip
        else:
            log.warning(
                "%s: main process %d %s, leaving %s behind: %s; stopping %s (heartline "
                "follows a program through its main process: run it in the foreground)",
                self.spec.name, main_pid, info.describe(), what, self.others.describe(),
                "it" if n == 1 else "them",
            )  # fmt: skip
            self._set_state(State.STOPPING, f"stopping {what} left behind by pid {main_pid}")
        # In a stop, the main process's group got the stop signal with it already.
        self.others.signal(self.spec.stop_signal, skip_group=main_pid if stopping else None)
        if self._kill_timer is None:
            self._kill_timer = self.loop.call_later(self.spec.stop_timeout, self._kill)

    def _main_gone(
        self, info: ExitInfo, uptime: float, reason: tuple[StopReason, str] | None, stopping: bool
    ) -> None:
        """Everything of the run is gone: record the exit and let the policy or the stop go on."""
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._kill_timer = None
        if self._stop_waiters and reason is None:
            stopping = True  # an operator's stop came in while the leftovers were stopped
        if stopping and reason is not None:
            # Stopped by the daemon because it hung or failed its checks: a failure, and the
            # restart policy decides what follows.
            self.last_stop_killed = self._killed
            self.intent = None
            self._exited(
                ExitInfo(reason[0], code=info.code, signal=info.signal, detail=reason[1]), uptime
            )
            return
        if stopping:
            self.last_exit = info
            self.last_stop_killed = self._killed
            record: StopResult = {
                "name": self.spec.name,
                "stopped": True,
                "killed": self._killed,
                "exit": info.to_json(),
            }
            standby, self._standby_after = self._standby_after, None
            if standby is not None:
                self._set_state(State.STANDBY, standby)
            else:
                self._set_state(State.STOPPED)
            waiters, self._stop_waiters = self._stop_waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(record)
            after, self._after_stop = self._after_stop, None
            if after is not None:
                after()
            return
        self._cancel_timer()
        self._exited(info, uptime)
        after, self._after_stop = self._after_stop, None
        if after is not None:  # an operator's start came in while the leftovers were stopped
            after()

    def _exited(self, info: ExitInfo, uptime: float) -> None:
        self.last_exit = info
        standby = self.host.seat(self)
        if standby is not None:
            # A singleton whose lock is no longer (surely) held here, stopped for that by the
            # fd holder while the daemon did not run: no restart policy, it stands by.
            self._set_state(State.STANDBY, standby)
            return
        d: Decision = decide(
            self.spec,
            info,
            uptime=uptime,
            history=self.history,
            now=self.loop.time(),
            rng=self.host.rng,
            restarts_left=self.restarts_left,
        )
        if d.action == "exit":
            self._set_state(State.EXITED, d.why)  # how it exited is in last_exit
            self.host.dependency_moved()
            return
        if d.action == "fatal":
            if d.delay is None:
                log.error(
                    "%s: %s; not retried (cooldown = never): start it by hand",
                    self.spec.name,
                    d.why,
                )
                self._set_state(State.FATAL, f"{d.why}; cooldown = never: start it by hand")
            else:
                log.error("%s: %s; retry in %s", self.spec.name, d.why, format_duration(d.delay))
                self._restart_pending = True  # the try after the cool-down is a restart
                self._schedule(d.delay, self._retry_after_fatal)
                self._set_state(State.FATAL, d.why)
            return
        delay = d.delay or 0.0
        if info.reason == "spawn-failed":
            delay = max(delay, SPAWN_FAILURE_FLOOR)
        self._restart_pending = True
        if self.restarts_left is not None:
            self.restarts_left -= 1
        if delay <= 0:
            self.try_spawn()
        else:
            self._schedule(delay, self.try_spawn)  # first, so listeners see when it retries
            self._set_state(State.BACKOFF)

    def _retry_after_fatal(self) -> None:
        self.history.reset()
        self.try_spawn()

    # --- stop -----------------------------------------------------------------------------
    async def stand_by(self, why: str, *, kill_in: float | None = None) -> StopResult:
        """A singleton gives up its cluster lock here: stop it (if it runs) and stand by.

        ``kill_in``: seconds within which it must be gone whatever its ``stop_timeout`` (the
        lease it ran under may end then); SIGKILL follows the stop signal no later. A program
        an operator stopped, or that is stopping for good, stays as it is.
        """
        if (
            self.state in (State.STOPPED, State.STANDBY, State.EXITED, State.FATAL)
            or self.intent == "stop"
        ):
            if kill_in is not None:
                self._kill_within(kill_in)
            return {"name": self.spec.name, "stopped": True, "killed": False, "exit": None}
        self._standby_after = why
        return await self.stop(why=why, kill_in=kill_in)

    def _kill_within(self, seconds: float) -> None:
        """Have SIGKILL follow no later than ``seconds`` from now (a stop under way)."""
        if self.state is not State.STOPPING:
            return
        due = self.loop.time() + max(0.0, seconds)
        timer = self._kill_timer
        if timer is not None and timer.when() <= due:
            return
        if timer is not None:
            timer.cancel()
        self._kill_timer = self.loop.call_at(due, self._kill)

    async def stop(self, *, why: str | None = None, kill_in: float | None = None) -> StopResult:
        """Stop the program: stop signal to its group, SIGKILL after ``stop_timeout``.

        An operator's stop (``why`` None) is kept in the state file; a singleton's
        :meth:`stand_by` passes ``why`` and may ask for SIGKILL sooner (``kill_in``).
        """
        self._after_stop = None
        self._kill_reason = None  # an operator's stop wins over a restart in progress
        if why is None:
            self._standby_after = None
            if self.intent != "restart":
                self.intent = "stop"
        if self.state is State.STOPPING:
            if kill_in is not None:
                self._kill_within(kill_in)
            fut: asyncio.Future[StopResult] = self.loop.create_future()
            self._stop_waiters.append(fut)
            return await fut
        if self.proc is None:
            self._cancel_timer()
            if why is not None:
                self._standby_after = None
                self._set_state(State.STANDBY, why)
            elif self.state is not State.STOPPED:
                self._set_state(State.STOPPED)
            else:
                self.host.changed(self)  # the operator's intent goes into the state file
            self.host.dependency_moved()
            return {"name": self.spec.name, "stopped": True, "killed": False, "exit": None}
        self._cancel_timer()
        self._disarm_watchdog()
        self._stop_checks()
        self._killed = False
        self._set_state(State.STOPPING, why or "")
        fut = self.loop.create_future()
        self._stop_waiters.append(fut)
        self._send_stop(self.spec.stop_signal)
        grace = self.spec.stop_timeout if kill_in is None else min(self.spec.stop_timeout, kill_in)
        self._kill_timer = self.loop.call_later(max(0.0, grace), self._kill)
        return await fut

    def _kill(self) -> None:
        self._kill_timer = None
        if self.state is not State.STOPPING or (self.proc is None and not self.others):
            return
        left = ([self.proc.pid] if self.proc is not None else []) + list(self.others)
        log.warning(
            "%s: still running %gs after the stop signal (pid %s); sending SIGKILL",
            self.spec.name,
            self.spec.stop_timeout,
            ", ".join(map(str, left)),
        )
        self._killed = True
        if self.proc is not None:
            self.proc.signal_group(signal.SIGKILL)
        self.others.signal(signal.SIGKILL, once=False)

    def send_signal(self, sig: int) -> bool:
        """Send ``sig`` to the program's main process."""
        return self.proc.send(sig) if self.proc is not None else False

    def close(self) -> None:
        """Release every descriptor (the program must be stopped, or left to a successor)."""
        self._cancel_timer()
        self._disarm_watchdog()
        self._stop_checks()
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        self.output.close()
        self.others.close()
        if self.proc is not None:
            self.proc.close()
        for f in {self.out, self.err}:
            if f is not None:
                f.close()

    def reopen_logs(self) -> None:
        for f in {self.out, self.err}:
            if f is not None:
                f.reopen()


def _report_directory(path: str, user: str | None) -> None:
    """Create the program's report directory, owner-only and owned by the program's user."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        if user is not None and os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
            os.chown(path, pw.pw_uid, pw.pw_gid)
    except (OSError, KeyError) as e:
        log.warning("cannot prepare report directory %s: %s", path, e)


def _with_watchdog_pid(argv: list[str]) -> list[str]:
    """Run ``argv`` so that it finds its own pid in WATCHDOG_PID, as systemd sets it.

    The pid is only known after the fork, when the environment is already fixed; a tiny
    /bin/sh step exports its own pid ($$) and then execs the program in the same process. The
    shell never parses the program's arguments: they pass through "$@" untouched.
    """
    return ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "heartline", *argv]
