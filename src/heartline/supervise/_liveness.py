"""A program's liveness: heartbeats in systemd's notify protocol, the watchdog, health checks.

Part of :class:`~heartline.supervise.Program` (a mixin: the state machine and this share its
state and timers); kept in a module of its own so each stays readable. What it decides goes
back through the program's own transitions (``_became_ready``, ``_terminate``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from heartline.api import Health, StopReason
from heartline.config import ProgramSpec
from heartline.supervise._checks import run_check
from heartline.supervise._host import Host
from heartline.supervise._launch import Process
from heartline.supervise._states import State


class LivenessMixin:
    """Watchdog, notify messages and health checks of a Program."""

    spec: ProgramSpec
    host: Host
    loop: asyncio.AbstractEventLoop
    state: State
    proc: Process | None
    #: The loop's time at the last heartbeat (stored by the notify receiver's thread too).
    last_beat: float
    notify_status: str
    unheard: str
    health: Health | None
    _timer: asyncio.Handle | None
    _wd_period: float
    _wd_timer: asyncio.TimerHandle | None
    _wd_at: float
    _check_task: asyncio.Task[None] | None

    # What the state machine provides.
    def _set_state(self, state: State, detail: str = "") -> None:
        raise NotImplementedError

    def _schedule(self, delay: float, fn: Callable[[], None]) -> None:
        raise NotImplementedError

    def _start_timed_out(self) -> None:
        raise NotImplementedError

    def _became_ready(self) -> None:
        raise NotImplementedError

    def _terminate(self, reason: StopReason, detail: str) -> None:
        raise NotImplementedError

    # --- heartbeats (systemd's notify protocol) ----------------------------------------------
    def on_notify(self, fields: dict[str, str]) -> None:
        """A datagram other than a bare heartbeat from one of this program's processes."""
        if "STATUS" in fields:
            self.notify_status = fields["STATUS"][:256]
        if "WATCHDOG_USEC" in fields and fields["WATCHDOG_USEC"].isdigit():
            period = int(fields["WATCHDOG_USEC"]) / 1e6
            if self.state is State.RUNNING:
                self._arm_watchdog(period)
        watchdog = fields.get("WATCHDOG")
        if watchdog == "trigger" and self.state in (State.STARTING, State.RUNNING):
            self._terminate("watchdog", "the program asked for it (WATCHDOG=trigger)")
            return
        ready = fields.get("READY") == "1" and self.spec.ready == "notify"
        if ready and self.state is State.STARTING and self.proc is not None:
            self._became_ready()
        if fields.get("STOPPING") == "1" and self.state is State.RUNNING:
            self._set_state(State.RUNNING, "stopping (said the program)")
        extend = fields.get("EXTEND_TIMEOUT_USEC", "")
        if extend.isdigit() and self._timer is not None and self.state is State.STARTING:
            self._schedule(int(extend) / 1e6, self._start_timed_out)

    def _arm_watchdog(self, period: float) -> None:
        self._disarm_watchdog()
        if period <= 0 or self.proc is None or self.unheard:
            return
        self._wd_period = period
        self.last_beat = self.loop.time()
        self._wd_at = self.last_beat + period
        self._wd_timer = self.loop.call_at(self._wd_at, self._watchdog_due)

    def _disarm_watchdog(self) -> None:
        if self._wd_timer is not None:
            self._wd_timer.cancel()
            self._wd_timer = None

    def _watchdog_due(self) -> None:
        # One timer per program, moved only when it comes due: a heartbeat just notes the
        # time, so a thousand beats a second cost a thousand float stores, not timer churn.
        self.host.note_lateness(self._wd_at)
        now = self.loop.time()
        due = self.last_beat + self._wd_period
        if now >= due:
            # Beats queued in the socket but not read yet (the receiver thread runs on its
            # own schedule) still count.
            self.host.notify.drain()
            due = self.last_beat + self._wd_period
        if now >= due and self.host.recently_stalled(self._wd_period):
            # The daemon itself stopped (SIGSTOP, a VM pause) or starved: the time it lost is
            # not the program's. It gets a full period from the moment the daemon came back.
            due = self.host.resumed_at + self._wd_period
        if now < due:
            self._wd_at = due
            self._wd_timer = self.loop.call_at(due, self._watchdog_due)
            return
        self._wd_timer = None
        self._terminate("watchdog", f"no heartbeat for {self._wd_period:g}s")

    # --- health checks ---------------------------------------------------------------------
    async def _check_loop(self) -> None:
        spec = self.spec.check
        assert spec is not None
        env = self.host.check_env(self.spec)
        self.health = {"ok": None, "failures": 0, "last": "", "checked": None}
        if spec.grace > 0:
            await asyncio.sleep(spec.grace)
        failures = 0
        while self.proc is not None and self.state in (State.STARTING, State.RUNNING):
            began = self.loop.time()
            ok, what = await run_check(spec, env)
            if self.proc is None or self.state not in (State.STARTING, State.RUNNING):
                return
            if not ok and self.host.note_lateness(began + spec.timeout):
                # A check that timed out while the daemon itself was stopped measured the
                # daemon, not the program: try again rather than count it.
                continue
            failures = 0 if ok else failures + 1
            self.health = {"ok": ok, "failures": failures, "last": what,
                           "checked": self.host.wall()}  # fmt: skip
            if ok and self.state is State.STARTING and self.spec.ready == "check":
                self._became_ready()
            elif not ok and failures >= spec.failures and self.state is State.RUNNING:
                self._terminate("check", f"{failures} failed checks in a row, last: {what}")
                return
            await asyncio.sleep(spec.interval)

    def _stop_checks(self) -> None:
        if self._check_task is not None:
            self._check_task.cancel()
            self._check_task = None
