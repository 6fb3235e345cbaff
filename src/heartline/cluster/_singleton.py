"""Singleton programs: one copy in the cluster, held by the host that holds its lock.

Every daemon whose config has ``singleton = true`` for a program keeps a *seat* for it. The
seat contends for the program's cluster lock (``heartline/singleton/NAME``, FIFO, one holder);
the program stays in STANDBY until the lock is granted, then runs with the grant's fencing
token in ``HEARTLINE_LOCK_TOKEN``. What keeps two copies from ever running:

* the lease turns SUSPECT before it could end on the server (renewals late: the host is cut
  off, the backend is gone): the program is stopped at once and SIGKILLed before the lease's
  proven end, measured on this host's own clock (``Lease.valid_until`` starts when a renewal
  was *sent*); only then is the lock given back and contended for again;
* the daemon is frozen (SIGSTOP, a paused VM): the fd holder, told the lease's deadline after
  every renewal, stops the program on its own before that deadline;
* the daemon dies: the fd holder stops the program at once and only then closes the copy of
  the lock's connection it keeps, which is when lockd lets the lock go;
* every grant carries a larger token, so a resource can refuse a late write of an older run.

Each seat also publishes what it is doing (``heartline/cluster/singletons/NAME/hosts/HOST``:
standby or running, with its token) under the daemon's own entries session, and watches those
of the other hosts: ``heartline status`` shows on any host where the program runs, and
``heartline move`` finds the hosts standing by. A move writes ``.../NAME/move`` (to, token);
the holder of that token stops the program and gives the lock back, and a host that is not
the target passes a grant it gets meanwhile straight on, so the lock reaches the target next.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from heartline.api import MoveResult, SingletonInfo
from heartline.cluster._store import EntryStore, open_store
from heartline.cluster._wire import PREFIX
from heartline.errors import HeartlineError, MoveRefused
from heartline.lock import HELD, Lease, LeaseState, Lock, stop_grace
from heartline.supervise import Program, State, Supervisor

if TYPE_CHECKING:
    from heartline.config import ClusterSpec
    from heartline.lock import Entry

log = logging.getLogger(__name__)

SINGLETONS = PREFIX + "singletons/"
_FORMAT = 1
#: How long a move waits for the program to run on its target, beyond two leases.
_MOVE_SLACK = 15.0


def lock_name(name: str) -> str:
    return f"heartline/singleton/{name}"


def seat_key(name: str, host: str) -> str:
    return f"{SINGLETONS}{name}/hosts/{host}"


def move_key(name: str) -> str:
    return f"{SINGLETONS}{name}/move"


class Fences(Protocol):
    """The daemon's fd holder, as a singleton's seat uses it (see ``daemon._holder``)."""

    def fence(
        self, key: str, until: float, *, lead: float, grace: float, conn: int = -1
    ) -> None: ...

    def unfence(self, key: str) -> None: ...


@dataclass(frozen=True)
class SeatView:
    """One host's seat as it published it."""

    host: str
    state: str  # a program State value
    token: int | None


@dataclass(frozen=True)
class MoveOrder:
    to: str
    token: int


def parse_view(entries: dict[str, Entry]) -> tuple[dict[str, list[SeatView]], dict[str, MoveOrder]]:
    """Seats and move orders per singleton, from the entries under :data:`SINGLETONS`.
    Other hosts wrote them: anything malformed is skipped."""
    seats: dict[str, list[SeatView]] = {}
    moves: dict[str, MoveOrder] = {}
    for key, entry in entries.items():
        parts = key[len(SINGLETONS) :].split("/")
        try:
            doc = json.loads(entry.value)
            if not isinstance(doc, dict) or doc.get("v") != _FORMAT:
                continue
            if len(parts) == 3 and parts[1] == "hosts":
                token = doc.get("token")
                state = doc.get("state")
                if not isinstance(state, str) or not (
                    token is None or (type(token) is int and token > 0)
                ):
                    continue
                seats.setdefault(parts[0], []).append(SeatView(parts[2], state, token))
            elif len(parts) == 2 and parts[1] == "move":
                to, token = doc.get("to"), doc.get("token")
                if isinstance(to, str) and to and type(token) is int:
                    moves[parts[0]] = MoveOrder(to, token)
        except ValueError:
            continue
    return seats, moves


def holder_of(seats: list[SeatView]) -> SeatView | None:
    """The run with the largest token among the hosts that say they run it: a host cut off
    may still say so for a while, but its token is an older one."""
    running = [s for s in seats if s.token is not None and s.state != State.STANDBY.value]
    return max(running, key=lambda s: s.token or 0, default=None)


class _Board:
    """This daemon's seat entries, written from a thread of its own, and a live copy of every
    host's, read by another (the backend clients block; the loop must not)."""

    def __init__(
        self,
        spec: ClusterSpec,
        *,
        ttl: float,
        label: str,
        on_view: Callable[[dict[str, Entry]], None],
    ) -> None:
        self._spec = spec
        self._ttl = ttl
        self._label = label
        self._on_view = on_view
        self._cond = threading.Condition()
        self._desired: dict[str, str | None] = {}
        self._dirty: set[str] = set()
        self._store: EntryStore | None = None
        self._mirror: Any = None
        self._closing = False
        self._failing = False
        self._threads = [
            threading.Thread(target=self._write, name="heartline-seats", daemon=True),
            threading.Thread(target=self._watch, name="heartline-seats-watch", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def put(self, key: str, value: str | None) -> None:
        """Write (or, with None, delete) ``key`` soon; only the last value of a key counts."""
        with self._cond:
            if self._desired.get(key) == value and key not in self._dirty:
                return
            self._desired[key] = value
            self._dirty.add(key)
            self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        mirror = self._mirror
        if mirror is not None:
            mirror.close()
        for t in self._threads:
            t.join(timeout)

    def _write(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._dirty or self._closing)
                    if self._closing:
                        return
                    todo = {k: self._desired[k] for k in self._dirty}
                    self._dirty.clear()
                try:
                    store = self._open()
                    for key, value in todo.items():
                        if value is None:
                            store.delete(key)
                        else:
                            store.put(key, value)
                    if self._failing:
                        log.info("singletons: the cluster's backend is reachable again")
                        self._failing = False
                except HeartlineError as e:
                    if not self._failing:
                        log.warning("singletons: cannot publish this host's seats: %s", e)
                        self._failing = True
                    self._drop_store()
                    with self._cond:
                        self._dirty |= set(self._desired)  # all again, on a new session
                        self._cond.wait_for(lambda: self._closing, timeout=1.0)
        finally:
            self._drop_store()

    def _open(self) -> EntryStore:
        if self._store is None:
            store = open_store(self._spec, ttl=self._ttl, label=self._label)
            mirror = store.watch(SINGLETONS)
            with self._cond:
                self._store, self._mirror = store, mirror
                self._dirty |= {k for k, v in self._desired.items() if v is not None}
                self._cond.notify_all()
        return self._store

    def _drop_store(self) -> None:
        with self._cond:
            store, mirror = self._store, self._mirror
            self._store = self._mirror = None
        if mirror is not None:
            mirror.close()
        if store is not None:
            with contextlib.suppress(HeartlineError):
                store.close()

    def _watch(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._mirror is not None or self._closing)
                if self._closing:
                    return
                mirror = self._mirror
            self._on_view(mirror.snapshot())
            while mirror.wait_changed(None):
                self._on_view(mirror.snapshot())
            self._wait_past(mirror)

    def _wait_past(self, old: Any) -> None:
        """The mirror ``old`` was closed under the watcher: wait for the next one."""
        with self._cond:
            self._cond.wait_for(lambda: self._mirror is not old or self._closing)


class _Seat:
    """One singleton program's place in the contest for its lock, on this host."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock: Lock | None = None
        self.lease: Lease | None = None
        #: idle (not contending), waiting (asked for the lock), held, leaving (stopping it)
        self.phase = "idle"
        self.task: asyncio.Task[None] | None = None
        self.conn: socket.socket | None = None
        self.problem = ""  # why the last try to contend failed


class SeatKeeper:
    """The daemon's seats, one per singleton program; implements ``supervise.Seats``.

    Lives on the daemon's loop; the lock clients and the board have threads of their own.
    """

    def __init__(
        self,
        spec: ClusterSpec,
        supervisor: Supervisor,
        *,
        host: str,
        fences: Fences | None,
        session_ttl: float,
    ) -> None:
        self.spec = spec
        self.sup = supervisor
        self.host = host
        self.fences = fences
        self.loop = supervisor.loop
        self._session_ttl = session_ttl
        self._seats: dict[str, _Seat] = {}
        self._seen: dict[str, list[SeatView]] = {}
        self._moves: dict[str, MoveOrder] = {}
        self._changed = asyncio.Event()
        self._board: _Board | None = None
        self._closed = False
        supervisor.seats = self
        supervisor.listeners.append(self._on_program)

    # --- supervise.Seats ----------------------------------------------------------------------
    def seat(self, name: str) -> str | None:
        s = self._seats.get(name)
        if s is not None and s.phase == "held" and s.lease is not None and s.lease.state is HELD:
            return None
        if s is not None and s.problem:
            return s.problem
        holder = holder_of(self._others(name))
        if holder is not None:
            return f"runs on {holder.host} (token {holder.token})"
        return "waiting for the cluster lock"

    def env(self, name: str) -> dict[str, str]:
        s = self._seats.get(name)
        if s is None or s.lease is None:
            return {}
        return {"HEARTLINE_LOCK_NAME": lock_name(name), "HEARTLINE_LOCK_TOKEN": str(s.lease.token)}

    def info(self, name: str) -> SingletonInfo:
        s = self._seats.get(name)
        prog = self.sup.programs.get(name)
        lease = prog.spec.lease if prog is not None else 0.0
        mine = s is not None and s.phase in ("held", "leaving") and s.lease is not None
        holder = holder_of(self._others(name))
        if mine and s is not None and s.lease is not None:
            where: str | None = self.host
            token: int | None = s.lease.token
        else:
            where = holder.host if holder else None
            token = holder.token if holder else None
        standby = sorted({v.host for v in self._others(name) if v.state == State.STANDBY.value})
        if prog is not None and prog.state is State.STANDBY:
            standby = sorted({*standby, self.host})
        return {"lock": lock_name(name), "holder": where, "token": token, "standby": standby,
                "lease": lease}  # fmt: skip

    def _others(self, name: str) -> list[SeatView]:
        return [v for v in self._seen.get(name, []) if v.host != self.host]

    # --- what the programs do ----------------------------------------------------------------
    def _on_program(self, prog: Program) -> None:
        if not prog.spec.singleton or self._closed:
            return
        name = prog.spec.name
        s = self._seats.setdefault(name, _Seat(name))
        state = prog.state
        if state is State.STANDBY and s.phase == "idle":
            self._contend(s)
        elif state is State.STOPPED and s.phase in ("waiting", "held"):
            self._leave(s)
        elif state is State.FATAL and "fatal" in prog.spec.failover_on and s.phase == "held":
            log.warning("%s: fatal on this host; handing it to another host", name)
            self._leave(s)
        self._publish(s, prog)

    def _publish(self, s: _Seat, prog: Program | None) -> None:
        board = self._ensure_board()
        if prog is None or prog.state is State.STOPPED or self._closed:
            board.put(seat_key(s.name, self.host), None)
            return
        token = s.lease.token if s.lease is not None and s.phase in ("held", "leaving") else None
        doc = {"v": _FORMAT, "state": prog.state.value, "token": token}
        board.put(seat_key(s.name, self.host), json.dumps(doc, separators=(",", ":")))

    def _ensure_board(self) -> _Board:
        if self._board is None:
            self._board = _Board(
                self.spec, ttl=self._session_ttl, label=f"heartline singletons on {self.host}",
                on_view=lambda view: self._from_thread(self._view_changed, view),
            )  # fmt: skip
        return self._board

    def _from_thread(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self.loop.call_soon_threadsafe(fn, *args)

    # --- contending ---------------------------------------------------------------------------
    def _program(self, s: _Seat) -> Program | None:
        prog = self.sup.programs.get(s.name)
        return prog if prog is not None and prog.spec.singleton else None

    def _contend(self, s: _Seat) -> None:
        prog = self._program(s)
        if prog is None or self._closed:
            return
        ttl = prog.spec.lease
        if s.lock is None or s.lock.ttl != ttl:
            if s.lock is not None:
                self._close_lock(s.lock)
            s.lock = Lock(
                lock_name(s.name), url=self.spec.backend, ttl=ttl, **self.spec.credentials,
                label=f"singleton {s.name} on {self.host}",
            )  # fmt: skip
        s.phase = "waiting"
        s.task = self.loop.create_task(self._acquire(s, s.lock))

    async def _acquire(self, s: _Seat, lock: Lock) -> None:
        delay = 0.5
        while True:
            try:
                lease = await lock.acquire_async(wait=None)
            except HeartlineError as e:
                problem = f"cannot reach the cluster's backend: {e}"
                if problem != s.problem:
                    log.warning("%s: %s; trying again", s.name, problem)
                s.problem = problem
                self._touch(s)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            break
        if s.problem:
            s.problem = ""
        s.task = None
        self._granted(s, lock, lease)

    def _touch(self, s: _Seat) -> None:
        prog = self._program(s)
        if prog is not None and prog.state is State.STANDBY:
            why = self.seat(s.name)
            if why is not None and why != prog.detail:
                prog.detail = why
                self.sup.changed(prog)

    def _granted(self, s: _Seat, lock: Lock, lease: Lease) -> None:
        prog = self._program(s)
        if prog is None or prog.state is not State.STANDBY or self._closed:
            s.phase = "idle"
            self._give_back(lock)
            return
        order = self._moves.get(s.name)
        if order is not None and order.to != self.host and self._move_pending(s.name, order):
            # A move to another host: pass the lock on (we queue again, behind the target).
            log.info("%s: granted (token %d) while it moves to %s; passing it on",
                     s.name, lease.token, order.to)  # fmt: skip
            s.phase = "leaving"
            s.task = self.loop.create_task(self._release_then(s, lock))
            return
        s.lease = lease
        s.phase = "held"
        self._fence(s, lock, lease)
        lease.on_state(lambda state: self._lease_changed(s, lock, lease, state))
        log.info("%s: this host holds its cluster lock (token %d); starting it",
                 s.name, lease.token)  # fmt: skip
        prog.try_spawn()
        self._publish(s, prog)

    def _fence(self, s: _Seat, lock: Lock, lease: Lease) -> None:
        """Tell the fd holder the lease's deadline (and hand it the connection, if new).
        From the loop at the grant, then from the lease's thread at each renewal."""
        if self.fences is None:
            return
        conn = lock.backend.session_connection()
        fd = -1
        if conn is not s.conn:
            s.conn = conn
            with contextlib.suppress(OSError):
                fd = conn.fileno() if conn is not None else -1
        grace = stop_grace(lease.ttl)
        self.fences.fence(s.name, lease.valid_until, lead=grace + 0.1, grace=grace, conn=fd)

    def _lease_changed(self, s: _Seat, lock: Lock, lease: Lease, state: LeaseState) -> None:
        # In the lock client's thread: a renewal goes straight to the holder; the rest to
        # the loop.
        if state is HELD:
            if s.lease is lease and s.phase == "held":
                self._fence(s, lock, lease)
            return
        self._from_thread(self._at_risk, s, lock, lease, state)

    def _at_risk(self, s: _Seat, lock: Lock, lease: Lease, state: LeaseState) -> None:
        if s.lease is not lease or s.phase != "held":
            return
        left = lease.valid_until - 0.05 - time.monotonic()
        why = (
            f"its cluster lock was lost (token {lease.token})"
            if state.value in ("lost", "released")
            else f"its cluster lock's lease could not be renewed in time (token {lease.token})"
        )
        log.warning("%s: %s; stopping it", s.name, why)
        s.phase = "leaving"
        s.task = self.loop.create_task(self._step_down(s, lock, why, kill_in=max(0.0, left)))

    async def _step_down(self, s: _Seat, lock: Lock, why: str, *, kill_in: float | None) -> None:
        """Stop the program here (standing by), then give the lock back."""
        prog = self._program(s)
        if prog is not None:
            await prog.stand_by(why, kill_in=kill_in)
        await self._release_then(s, lock)

    async def _release_then(self, s: _Seat, lock: Lock) -> None:
        """Give the lock back (its program has no process here), then contend again if the
        program stands by (not if it was stopped, or turned fatal and is handed on)."""
        await asyncio.get_running_loop().run_in_executor(None, self._give_back, lock)
        if self.fences is not None:
            self.fences.unfence(s.name)
        s.lease = None
        s.conn = None
        s.task = None
        s.phase = "idle"
        prog = self._program(s)
        self._publish(s, prog)
        if prog is not None and prog.state is State.STANDBY and not self._closed:
            self._contend(s)

    @staticmethod
    def _give_back(lock: Lock) -> None:
        with contextlib.suppress(HeartlineError):
            lock.release()

    def _leave(self, s: _Seat) -> None:
        """Stop contending, or give the lock back: the program was stopped, or turned fatal
        and is handed on (it has no process here either way)."""
        if s.phase == "leaving":
            return  # a step down under way gives the lock back once the program is gone
        lock = s.lock
        task, s.task = s.task, None
        if task is not None:
            task.cancel()  # a wait for the lock (a grant that raced in is given back)
        if lock is None:
            s.phase = "idle"
            return
        s.phase = "leaving"
        s.task = self.loop.create_task(self._release_then(s, lock))

    @staticmethod
    def _close_lock(lock: Lock) -> None:
        threading.Thread(target=lock.close, name="heartline-seat-close", daemon=True).start()

    # --- other hosts -------------------------------------------------------------------------
    def _view_changed(self, view: dict[str, Entry]) -> None:
        self._seen, self._moves = parse_view(view)
        self._changed.set()
        self._changed = asyncio.Event()
        for name, order in self._moves.items():
            s = self._seats.get(name)
            if (
                s is not None
                and s.phase == "held"
                and s.lease is not None
                and order.token == s.lease.token
                and order.to != self.host
                and s.lock is not None
            ):
                why = f"moving to {order.to}"
                log.info("%s: %s", name, why)
                s.phase = "leaving"
                s.task = self.loop.create_task(self._step_down(s, s.lock, why, kill_in=None))
        for s in self._seats.values():
            self._touch(s)

    def _move_pending(self, name: str, order: MoveOrder) -> bool:
        """Whether a move is still under way: nobody runs the program with a newer token."""
        holder = holder_of(self._seen.get(name, []))
        return holder is None or holder.token is None or holder.token <= order.token

    async def move(self, name: str, to: str | None, *, timeout: float | None = None) -> MoveResult:
        """Hand singleton ``name`` over to host ``to`` (or the first host standing by):
        stop it where it runs, start it there. Returns once it runs there."""
        prog = self.sup.programs.get(name)
        if prog is None or not prog.spec.singleton:
            raise MoveRefused(f"{name} is not a singleton program (singleton = true)")
        info = self.info(name)
        holder, token = info["holder"], info["token"]
        if holder is None or token is None:
            raise MoveRefused(f"{name} runs on no host now: nothing to move")
        standby = [h for h in info["standby"] if h != holder]
        if to is None:
            if not standby:
                raise MoveRefused(f"{name}: no other host stands by for it (it runs on {holder})")
            to = standby[0]
        elif to == holder:
            raise MoveRefused(f"{name} already runs on {to}")
        elif to not in standby:
            listed = ", ".join(standby) or "none"
            raise MoveRefused(f"{name}: host {to} does not stand by for it (standing by: {listed})")
        board = self._ensure_board()
        key = move_key(name)
        board.put(key, json.dumps({"v": _FORMAT, "to": to, "token": token, "by": self.host}))
        wait = (
            timeout
            if timeout is not None
            else 2 * prog.spec.lease + prog.spec.stop_timeout + _MOVE_SLACK
        )
        deadline = time.monotonic() + wait
        began = time.monotonic()
        try:
            while True:
                now_holder = holder_of(self._seen.get(name, []))
                if to == self.host:
                    s = self._seats.get(name)
                    if s is not None and s.phase == "held" and s.lease is not None:
                        now_holder = SeatView(self.host, "running", s.lease.token)
                if (
                    now_holder is not None
                    and now_holder.host == to
                    and (now_holder.token or 0) > token
                ):
                    return {"name": name, "from": holder, "to": to, "token": now_holder.token or 0,
                            "took": round(time.monotonic() - began, 3)}  # fmt: skip
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MoveRefused(
                        f"{name} did not start on {to} within {wait:g}s; see that host's log"
                    )
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), left)
        finally:
            board.put(key, None)

    def resume(self) -> None:
        """Contend for the singletons already standing by (a keeper that replaced another)."""
        for prog in self.sup.programs.values():
            if prog.spec.singleton and prog.state is State.STANDBY:
                self._on_program(prog)

    # --- the end ------------------------------------------------------------------------------
    async def close(self) -> None:
        """Leave: stop the singletons this host runs (standing by) and give their locks back."""
        self._closed = True
        for s in list(self._seats.values()):
            task, s.task = s.task, None
            if task is not None and s.phase == "waiting":
                task.cancel()
            prog = self._program(s)
            if s.phase in ("held", "leaving") and prog is not None:
                await prog.stand_by("leaving the cluster")
            if s.lock is not None:
                await asyncio.get_running_loop().run_in_executor(None, s.lock.close)
            if self.fences is not None:
                self.fences.unfence(s.name)
            s.phase, s.lease = "idle", None
        board, self._board = self._board, None
        if board is not None:
            await asyncio.get_running_loop().run_in_executor(None, board.close)
        if self.sup.seats is self:
            self.sup.seats = None
        with contextlib.suppress(ValueError):
            self.sup.listeners.remove(self._on_program)
