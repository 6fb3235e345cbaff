"""Running an experiment: the steady state, each fault as a lease, probes throughout, the
numbers, and every fault undone however the run ends.

One asyncio loop runs the probes (every lane at the resolution), the dead-man agents' pipes
and the steps. The order of a run:

1. the journal (before anything is applied), the experiment's own daemon ([supervise]), the
   fault proxies, the probes;
2. the steady state before: its probes pass for ``steady_for`` in a row within
   ``steady_within``, else the run is a deviation and no fault is applied;
3. per round, per fault: find the members, pick within the blast radius, apply (a signal, or
   an agent per member holding the lease), watch: undo when the fault's time is up, stop when
   the probes say recovered, or not detected, or the deadline passed;
4. the steady state after; then undo whatever is left, stop the proxies and the daemon, and
   remove the journal.

Ctrl-C, SIGTERM and the halt file end the run between two looks (at most one resolution),
always through step 4.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from heartline.chaos._faults import Action, Member, actions, describe, members, pick, replaced
from heartline.chaos._journal import Journal, Lease
from heartline.chaos._places import Place, agent_source
from heartline.chaos._probes import Lane, Probes, lanes
from heartline.chaos._results import (
    availability,
    measure,
    percentiles,
    steady_since,
    transitions,
)
from heartline.chaos._spec import Experiment, FaultSpec, TargetSpec
from heartline.errors import (
    BlastRadiusRefused,
    ChaosAborted,
    ChaosDeviated,
    ChaosErrored,
    HeartlineError,
)

OUTCOME_ERRORS: dict[str, type[HeartlineError]] = {
    "deviated": ChaosDeviated,
    "errored": ChaosErrored,
    "aborted": ChaosAborted,
    "refused": BlastRadiusRefused,
}


@dataclass
class Options:
    dry_run: bool = False
    json: bool = False
    report_dir: str | None = None
    allow_host_crash: tuple[str, ...] = ()
    seed: int | None = None
    journal_dir: str | None = None
    out: IO[str] = field(default_factory=lambda: sys.stdout)


class _Stop(Exception):
    """Ctrl-C, SIGTERM or the halt file: end the run (through its cleanup)."""


class _Agent:
    """One dead-man agent holding one lease."""

    def __init__(self, proc: asyncio.subprocess.Process, lease: Lease) -> None:
        self.proc = proc
        self.lease = lease
        self.undone = False

    async def line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        return raw.decode("utf-8", "replace").strip()

    async def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(word.encode() + b"\n")
            await self.proc.stdin.drain()

    async def undo(self) -> str | None:
        if self.undone:
            return None
        self.undone = True
        await self.send("undo")
        try:
            answer = await self.line(90.0)
        except (TimeoutError, OSError):
            answer = "undo-error the agent did not answer"
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(self.proc.wait(), 10.0)
        if answer == "undone":
            return None
        return answer.removeprefix("undo-error ").strip() or "the agent ended without a word"


class _Proxy:
    """A fault proxy process (``python -m heartline.chaos._proxy``) and its stdin."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lock = asyncio.Lock()

    async def say(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self.lock:
            self.proc.stdin.write(line.encode() + b"\n")
            await self.proc.stdin.drain()
            raw = await asyncio.wait_for(self.proc.stdout.readline(), 10.0)
        return raw.decode("utf-8", "replace").strip()


class Runner:
    def __init__(self, exp: Experiment, opts: Options) -> None:
        self.exp = exp
        self.opts = opts
        self.rng = random.Random(opts.seed)  # noqa: S311 (which target, not a secret)
        self.t0 = time.monotonic()
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.journal: Journal | None = None
        self.agents: list[_Agent] = []
        self.proxies: dict[str, _Proxy] = {}
        self.probes: Probes | None = None
        self.socket: str | None = None
        self.daemon_dir: str | None = None
        self.daemon_config: str | None = None
        self.stop_reason = ""
        self.faults: list[dict[str, Any]] = []
        self.steady: dict[str, Any] = {}
        self.current: dict[str, Any] | None = None
        self.printed_lanes: dict[str, bool] = {}
        self.stop_event = asyncio.Event()
        #: (wall, boot time) just before the current fault's first signal.
        self.kill_clocks: tuple[float, float] | None = None

    # --- output -----------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.t0

    def emit(self, event: str, text: str, **fields: Any) -> None:
        if self.opts.json:
            self.opts.out.write(
                json.dumps({"event": event, "t": round(self.now(), 4), **fields}) + "\n"
            )
        elif text:
            self.opts.out.write(text + "\n")
        self.opts.out.flush()

    def _on_sample(self, lane: Lane, sample: tuple[float, bool, str]) -> None:
        t, ok, detail = sample
        if self.printed_lanes.get(lane.name) == ok:
            return
        first = lane.name not in self.printed_lanes
        self.printed_lanes[lane.name] = ok
        if first and ok:
            return
        base = self.current["_applied_abs"] if self.current else 0.0
        when = f"+{t - base:.3f}s" if self.current else f"at {t:.3f}s"
        word = "passes" if ok else "FAILS"
        why = f" ({detail})" if detail else ""
        self.emit(
            "probe",
            f"    {lane.name} {word} {when}{why}",
            lane=lane.name,
            ok=ok,
            detail=detail,
            at=round(t, 4),
        )

    # --- the run ----------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        stop = self.stop_event
        for signo, why in ((signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")):
            loop.add_signal_handler(signo, self._stop_now, stop, why)
        outcome, reason = "passed", ""
        try:
            try:
                await self._setup()
                outcome, reason = await self._body()
            except _Stop:
                outcome, reason = "aborted", f"stopped by {self.stop_reason}"
            except BlastRadiusRefused as e:
                outcome, reason = "refused", str(e)
            except ChaosErrored as e:
                outcome, reason = "errored", str(e)
            finally:
                errors = await self._cleanup()
            if errors and outcome in ("passed", "deviated"):
                outcome, reason = "errored", "undo failed: " + "; ".join(errors)
            elif errors:
                reason += "; undo failed: " + "; ".join(errors)
        finally:
            for signo in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signo)
        return self.result(outcome, reason)

    def _stop_now(self, stop: asyncio.Event, why: str) -> None:
        if not self.stop_reason:
            self.stop_reason = why
            self.emit("stopping", f"chaos: {why}: undoing every fault, then stopping", why=why)
        stop.set()

    def _check_stop(self) -> None:
        halt = self.exp.run.halt_file
        if halt and os.path.exists(halt) and not self.stop_reason:
            self.stop_reason = f"the halt file {halt}"
            self.emit(
                "stopping",
                f"chaos: {halt} exists: undoing every fault, then stopping",
                why="halt file",
            )
            self.stop_event.set()
        if self.stop_event.is_set():
            raise _Stop()

    async def _pause(self, seconds: float) -> None:
        """Wait, looking at the stop conditions at least every resolution."""
        end = time.monotonic() + seconds
        while True:
            self._check_stop()
            left = end - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), min(left, self.exp.run.resolution))

    async def _setup(self) -> None:
        exp = self.exp
        self.journal = await asyncio.to_thread(Journal.create, exp.path, self.opts.journal_dir)
        self.emit(
            "start",
            f"chaos: {exp.title} (run {self.journal.run})",
            run=self.journal.run,
            title=exp.title,
        )
        if exp.supervise is not None:
            await self._start_daemon()
        for t in exp.targets.values():
            if t.kind == "proxy":
                await self._start_proxy(t.name, str(t.listen), str(t.upstream))
        self.probes = Probes(lanes(exp, socket=self.socket), exp.run.resolution, self.t0)
        self.probes.listeners.append(self._on_sample)
        self.probes.start()

    async def _start_daemon(self) -> None:
        assert self.exp.supervise is not None and self.journal is not None
        from heartline.config import socket_from_config

        self.daemon_dir = tempfile.mkdtemp(prefix="hl-chaos-")
        cfg = os.path.join(self.daemon_dir, "heartline.toml")
        head = f'[daemon]\nrun_dir = "{self.daemon_dir}/run"\nlog_dir = "{self.daemon_dir}/log"\n\n'
        with open(cfg, "w", encoding="utf-8") as f:
            f.write(head + self.exp.supervise)
        self.daemon_config = cfg
        hl = Place().heartline()
        lease = Lease(
            id="daemon",
            fault="supervise",
            label="the experiment's own daemon",
            place=Place(),
            undo=[*hl, "-c", cfg, "down"],
        )
        self.journal.add(lease)
        proc = await asyncio.create_subprocess_exec(
            *hl,
            "-c",
            cfg,
            "up",
            "--detach",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise ChaosErrored(
                "the experiment's daemon did not start: "
                + err.decode("utf-8", "replace").strip()[:300]
            )
        self.socket = socket_from_config(cfg)
        self.emit(
            "daemon",
            f"chaos: started its own daemon for {', '.join(self.exp.supervised)}",
            programs=list(self.exp.supervised),
        )

    async def _start_proxy(self, name: str, listen: str, upstream: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "heartline.chaos._proxy",
            "--listen",
            listen,
            "--upstream",
            upstream,
            "--lease",
            str(self.exp.run.lease),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        proxy = _Proxy(proc)
        self.proxies[name] = proxy
        assert proc.stdout is not None
        try:
            first = await asyncio.wait_for(proc.stdout.readline(), 10.0)
        except TimeoutError:
            first = b""
        if not first.startswith(b"listening"):
            err = b""
            if proc.returncode is not None and proc.stderr is not None:
                err = await proc.stderr.read()
            raise ChaosErrored(
                f"the fault proxy for {name} did not start on {listen}: "
                + err.decode("utf-8", "replace").strip()[:200]
            )

    async def _body(self) -> tuple[str, str]:
        exp = self.exp
        ok, why = await self._steady("before")
        if not ok:
            return "deviated", f"the steady state did not hold before the faults: {why}"
        deviations: list[str] = []
        for r in range(1, exp.run.rounds + 1):
            if exp.run.order == "each":
                todo = list(exp.faults)
            else:
                todo = [exp.faults[(r - 1) % len(exp.faults)]]
            for f in todo:
                self._check_stop()
                rec = await self._one_fault(r, f)
                if rec["outcome"] == "deviated":
                    deviations.append(
                        f"round {r} {f.name}: not recovered within {rec['deadline']:g}s"
                    )
            if exp.run.interval and r < exp.run.rounds:
                await self._pause(exp.run.interval)
        ok, why = await self._steady("after")
        if not ok:
            deviations.append(f"the steady state did not hold after the faults: {why}")
        if deviations:
            return "deviated", "; ".join(deviations)
        return "passed", ""

    async def _steady(self, when: str) -> tuple[bool, str]:
        assert self.probes is not None
        run = self.exp.run
        names = list(self.exp.steady)
        chosen = [x for x in self.probes.lanes if x.probe in names]
        deadline = time.monotonic() + run.steady_within
        while True:
            self._check_stop()
            held = steady_since([x.samples for x in chosen], self.now())
            if held is not None and held >= run.steady_for and all(x.samples for x in chosen):
                result = {x.name: True for x in chosen}
                self.steady[when] = {"ok": True, "probes": result, "t": round(self.now(), 4)}
                self.emit(
                    "steady",
                    f"chaos: steady state holds {when} the faults ({', '.join(names)})",
                    when=when,
                    ok=True,
                )
                return True, ""
            if time.monotonic() >= deadline:
                failing = {
                    x.name: (x.last[2] if x.last else "no answer yet")
                    for x in chosen
                    if x.last is None or not x.last[1]
                }
                result = {x.name: x.name not in failing for x in chosen}
                self.steady[when] = {"ok": False, "probes": result, "t": round(self.now(), 4)}
                why = ", ".join(f"{k}: {v}" for k, v in failing.items()) or "probes flapping"
                self.emit(
                    "steady",
                    f"chaos: steady state does NOT hold {when} the faults "
                    f"within {run.steady_within:g}s ({why})",
                    when=when,
                    ok=False,
                    failing=failing,
                )
                return False, why
            await self._pause(min(run.resolution, 0.05))

    async def _one_fault(self, r: int, f: FaultSpec) -> dict[str, Any]:
        assert self.probes is not None and self.journal is not None
        exp = self.exp
        target = exp.targets[f.target]
        found = await asyncio.to_thread(members, exp, target, socket=self.socket)
        chosen = pick(f, found, r, exp.blast, self.rng)
        todo = actions(exp, f, chosen, self.journal.run, self.opts.allow_host_crash)
        watched = [x.name for x in self.probes.lanes if not f.probes or x.probe in f.probes]
        deadline = f.recover_within or exp.run.recover_within
        rec: dict[str, Any] = {
            "round": r,
            "name": f.name,
            "kind": f.kind,
            "targets": [m.label for m in chosen],
            "detail": "; ".join(a.detail for a in todo),
            "applied": None,
            "ended": None,
            "undone": None,
            "detected": None,
            "recovered": None,
            "replaced": None,
            "deadline": deadline,
            "outcome": "errored",
            "availability": None,
            "error": "",
        }
        self.faults.append(rec)
        self.emit(
            "fault",
            f"round {r}/{exp.run.rounds} {f.name}: {rec['detail']}",
            round=r,
            fault=f.name,
            kind=f.kind,
            targets=rec["targets"],
            detail=rec["detail"],
        )
        held: list[_Agent] = []
        self.kill_clocks = None
        # Probes that flip while the fault is being applied print relative to its start.
        self.current = {**rec, "_applied_abs": self.now()}
        try:
            applied = await self._apply_all(f, todo, held)
        except ChaosErrored as e:
            self.current = None
            rec["error"] = str(e)
            await self._undo(held, rec)
            raise
        rec["applied"] = round(applied, 4)
        rec["_applied_abs"] = applied
        self.current = rec
        try:
            await self._watch(
                chosen=chosen,
                f=f,
                todo=todo,
                held=held,
                rec=rec,
                watched=watched,
                applied=applied,
                deadline=deadline,
            )
        finally:
            self.current = None
            err = await self._undo(held, rec)
            if err:
                rec["error"] = err
        rep = rec["replaced"]
        how = f"; replaced in {rep:.3f}s" if rep is not None else ""
        if rec["outcome"] == "recovered" and rec["detected"] is None:
            self.emit(
                "recovered",
                f"    recovered: the killed processes were replaced in {rep:.3f}s, too soon "
                f"for any probe to fail (they run every {exp.run.resolution:g}s)",
                round=r,
                fault=f.name,
                detected=None,
                recovered=rec["recovered"],
                replaced=rep,
            )
        elif rec["outcome"] == "recovered":
            self.emit(
                "recovered",
                f"    recovered in {rec['recovered']:.3f}s (detected "
                f"{rec['detected']:.3f}s after the fault{how})",
                round=r,
                fault=f.name,
                detected=rec["detected"],
                recovered=rec["recovered"],
                replaced=rep,
            )
        elif rec["outcome"] == "not-detected":
            self.emit(
                "not-detected",
                f"    no probe failed (nothing to recover from, or it "
                f"recovered within {exp.run.resolution:g}s)",
                round=r,
                fault=f.name,
            )
        elif rec["outcome"] == "deviated":
            why = f" ({rec['error']})" if rec["error"] else ""
            self.emit(
                "deviated", f"    NOT recovered within {deadline:g}s{why}", round=r, fault=f.name
            )
        rec.pop("_applied_abs", None)
        return rec

    async def _apply_all(self, f: FaultSpec, todo: list[Action], held: list[_Agent]) -> float:
        """Apply every action at once; the moment of the first applied one."""
        results = await asyncio.gather(
            *(self._apply(f, a, held) for a in todo), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            for e in errors:
                if not isinstance(e, ChaosErrored):
                    raise e
            raise errors[0]
        return min(r for r in results if isinstance(r, float))

    async def _apply(self, f: FaultSpec, a: Action, held: list[_Agent]) -> float:
        assert self.journal is not None
        m: Member = a.member
        if a.signal is not None:
            return await self._signal(m, a.signal)
        if f.kind == "proxy":
            proxy = self.proxies[f.target]
            answer = await proxy.say(str(f.toxic))
            if answer != "ok":
                raise ChaosErrored(f"fault {f.name}: the proxy said {answer[:200]!r}")
            t = self.now()
            lease = Lease(
                id=f"{f.name}-proxy-{len(self.journal.leases)}",
                fault=f.name,
                label=a.detail,
                place=Place(),
                undo=None,
            )
            held.append(_ProxyToxic(proxy, lease))  # type: ignore[arg-type]
            return t
        if a.crash is not None and a.undo is None:
            return await self._crash(a.crash)
        place = a.place or Place()
        spec = {
            "apply": a.apply,
            "input": a.input,
            "hold": a.hold,
            "undo": a.undo,
            "lease": self.exp.run.lease,
        }
        lease = Lease(
            id=f"{f.name}-{len(self.journal.leases)}",
            fault=f.name,
            label=a.detail,
            place=place,
            undo=a.undo,
            expires=time.time() + self.exp.run.lease,
        )
        self.journal.add(lease)
        argv, env = place.argv([place.python, "-I", "-S", "-c", agent_source(), json.dumps(spec)])
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        agent = _Agent(proc, lease)
        try:
            answer = await agent.line(90.0)
        except TimeoutError:
            answer = "error the agent did not answer within 90s"
        t = self.now()
        if not answer.startswith("applied"):
            await proc.wait()
            self.journal.mark(lease, "undone")
            why = answer.removeprefix("error ").strip() or f"the agent on {place.label} ended"
            raise ChaosErrored(f"fault {f.name} on {m.label}: {why}")
        if a.hold is not None:
            lease.undo = None  # the hog ends by itself; nothing for `chaos undo` to run
            self.journal.mark(lease, "applied")
        held.append(agent)
        self.agents.append(agent)
        if a.crash is not None:
            # The agent holds the boot (its dead-man boots the host if this process dies).
            return await self._crash(a.crash)
        return t

    async def _crash(self, host: str) -> float:
        from heartline.chaos._places import open_lab

        assert self.exp.lab_dir is not None
        lab = await asyncio.to_thread(open_lab, self.exp.lab_dir)
        t = self.now()  # the SIGKILL is the first thing crash() does
        try:
            await asyncio.to_thread(lab.crash, host)
        except HeartlineError as e:
            raise ChaosErrored(f"crash {host}: {e}") from None
        return t

    async def _signal(self, m: Member, signo: int) -> float:
        assert m.pid is not None
        # Both clocks a successor's start can be compared with (see Member.since); taken
        # before the signal, so a replacement is never measured shorter than it was.
        pid = m.pid if m.place.kind == "local" else None
        if m.place.kind == "lab":
            pid = await asyncio.to_thread(m.place.root_pid, m.pid)
            if pid is None:
                raise ChaosErrored(f"{m.label} is gone")
        if self.kill_clocks is None:
            self.kill_clocks = (time.time(), time.clock_gettime(time.CLOCK_BOOTTIME))
        if pid is not None:
            try:
                os.kill(pid, signo)
            except ProcessLookupError:
                raise ChaosErrored(f"{m.label} is gone") from None
            return self.now()
        done = await asyncio.to_thread(m.place.run, ["kill", f"-{signo}", str(m.pid)])
        if done.returncode != 0:
            raise ChaosErrored(f"kill {m.label}: {done.stderr.strip()[:200]}")
        return self.now()

    async def _watch(
        self,
        *,
        chosen: list[Member],
        f: FaultSpec,
        todo: list[Action],
        held: list[_Agent],
        rec: dict[str, Any],
        watched: list[str],
        applied: float,
        deadline: float,
    ) -> None:
        assert self.probes is not None
        run = self.exp.run
        samples = {x.name: x.samples for x in self.probes.lanes}
        timed = f.kind in ("crash", "backend-kill")
        undo_at = applied + (todo[0].undo_after or 0.0) if timed else applied + f.duration
        ended: float | None = applied if timed or not held else None
        target = self.exp.targets[f.target]
        # A killed process: when was it replaced? (Probes at 100 ms may never see a restart
        # that takes 2 ms; the successor's own start time does.)
        watch = f.kind in ("kill", "term", "signal") and target.kind in ("program", "pidfiles")
        looking: asyncio.Task[dict[str, float | None]] | None = None
        rep: float | None = None
        while True:
            self._check_stop()
            now = self.now()
            if watch and rep is None:
                if looking is not None and looking.done():
                    rep = self._replacement(target.kind, looking.result())
                    looking = None
                    if rep is not None:
                        rec["replaced"] = round(rep, 4)
                if rep is None and looking is None:
                    looking = asyncio.get_running_loop().create_task(
                        asyncio.to_thread(self._successors, target, chosen)
                    )
            if held and now >= undo_at and not all(a.undone for a in held):
                err = await self._undo(held, rec)
                if err:
                    rec["error"] = err
                    raise ChaosErrored(f"fault {f.name}: undo failed: {err}")
                now = self.now()
                if ended is None:
                    ended = now
            detected, recovered = measure(
                samples,
                watched,
                applied=applied,
                ended=ended if ended is not None else float("inf"),
            )
            rec["detected"] = None if detected is None else round(detected, 4)
            rec["ended"] = None if ended is None else round(ended, 4)
            if recovered is not None and all(a.undone for a in held):
                rec["recovered"] = round(recovered, 4)
                rec["outcome"] = "recovered"
                end = applied + recovered
                break
            if (
                watch
                and detected is None
                and rep is not None
                and now >= applied + rep + 2 * run.resolution
                and self.probes.all_ok(list({x.probe for x in self.probes.lanes
                                             if x.name in watched}))
            ):  # fmt: skip
                # The probes never saw it: the replacement's start is the recovery.
                rec["recovered"] = round(rep, 4)
                rec["outcome"] = "recovered"
                end = now
                break
            if (
                not watch
                and detected is None
                and ended is not None
                and all(a.undone for a in held)
                and now >= ended + run.detect_within
            ):
                rec["outcome"] = "not-detected"
                end = now
                break
            if ended is not None and now >= ended + deadline:
                rec["outcome"] = "deviated"
                if watch and rep is None:
                    rec["error"] = "the killed processes were not replaced"
                end = now
                break
            await self._pause(min(run.resolution, 0.05))
        if looking is not None:
            looking.cancel()
            with contextlib.suppress(asyncio.CancelledError, HeartlineError):
                await looking
        av = availability(samples, watched, applied, max(end, applied + run.resolution))
        rec["availability"] = None if av is None else round(av, 4)

    def _successors(self, target: TargetSpec, chosen: list[Member]) -> dict[str, float | None]:
        try:
            now = members(self.exp, target, socket=self.socket)
        except HeartlineError:
            return {m.label: None for m in chosen}  # not answering yet: look again
        return replaced(chosen, now)

    def _replacement(self, kind: str, found: dict[str, float | None]) -> float | None:
        """Seconds from the signal to the last successor's start, once all have one."""
        if self.kill_clocks is None or not found or None in found.values():
            return None
        wall, boot = self.kill_clocks
        base = wall if kind == "program" else boot
        return max(0.0, *(x - base for x in found.values() if x is not None))

    async def _undo(self, held: list[Any], rec: dict[str, Any]) -> str:
        assert self.journal is not None
        errors = []
        pending = [a for a in held if not a.undone]
        if not pending:
            return ""
        answers = await asyncio.gather(*(a.undo() for a in pending))
        for a, why in zip(pending, answers, strict=True):
            if a.lease in self.journal.leases:
                self.journal.mark(a.lease, "undone" if why is None else "undo-error", why or "")
            if why is not None:
                errors.append(f"{a.lease.label}: {why}")
        rec["undone"] = round(self.now(), 4)
        return "; ".join(errors)

    async def _cleanup(self) -> list[str]:
        errors: list[str] = []
        open_agents = [a for a in self.agents if not a.undone]
        if open_agents:
            err = await self._undo(open_agents, {})
            if err:
                errors.append(err)
        if self.probes is not None:
            await self.probes.stop()
        for proxy in self.proxies.values():
            with contextlib.suppress(OSError, TimeoutError):
                if proxy.proc.stdin is not None:
                    proxy.proc.stdin.close()
                await asyncio.wait_for(proxy.proc.wait(), 10.0)
            if proxy.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proxy.proc.kill()
                await proxy.proc.wait()
        if self.daemon_config is not None:
            hl = Place().heartline()
            proc = await asyncio.create_subprocess_exec(
                *hl,
                "-c",
                self.daemon_config,
                "down",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, said = await proc.communicate()
            if proc.returncode not in (0, 3):
                errors.append(
                    "the experiment's daemon did not stop: "
                    + said.decode("utf-8", "replace").strip()[:200]
                )
            elif self.journal is not None:
                for lease in self.journal.leases:
                    if lease.id == "daemon":
                        self.journal.mark(lease, "undone")
            if self.daemon_dir is not None and proc.returncode in (0, 3):
                shutil.rmtree(self.daemon_dir, ignore_errors=True)
        if self.journal is not None:
            self.journal.close()
        return errors

    # --- the result document ---------------------------------------------------------------
    def result(self, outcome: str, reason: str) -> dict[str, Any]:
        exp = self.exp
        lanes_ = self.probes.lanes if self.probes is not None else []
        recovered = [f["recovered"] for f in self.faults if f["recovered"] is not None]
        detected = [f["detected"] for f in self.faults if f["detected"] is not None]
        first = min((f["applied"] for f in self.faults if f["applied"] is not None), default=None)
        samples = {x.name: x.samples for x in lanes_}
        overall = None
        if first is not None:
            overall = availability(samples, [x.name for x in lanes_], first, self.now())
        doc: dict[str, Any] = {
            "version": 1,
            "title": exp.title,
            "file": exp.path,
            "source": exp.source,
            "started_at": self.started_at,
            "duration": round(self.now(), 4),
            "outcome": outcome if outcome != "refused" else "errored",
            "reason": reason,
            "refused": outcome == "refused",
            "resolution": exp.run.resolution,
            "run": self.journal.run if self.journal else "",
            "targets": {
                t.name: {"kind": t.kind, "names": list(t.programs or t.hosts), "where": t.via}
                for t in exp.targets.values()
            },
            "probes": {
                x.name: {"kind": x.kind, "what": x.what, "timeout": x.timeout, "probe": x.probe}
                for x in lanes_
            },
            "steady": self.steady,
            "faults": self.faults,
            "timeline": {x.name: transitions(x.samples) for x in lanes_},
            "samples": {
                x.name: {"count": len(x.samples), "ok": sum(1 for s in x.samples if s[1])}
                for x in lanes_
            },
            "summary": {
                "rounds": exp.run.rounds,
                "detect": percentiles(detected),
                "recover": percentiles(recovered),
                "availability": None if overall is None else round(overall, 4),
            },
        }
        return doc


class _ProxyToxic:
    """A toxic set on a fault proxy: undone by clearing it (the proxy's own lease clears it
    if the controller goes away)."""

    def __init__(self, proxy: _Proxy, lease: Lease) -> None:
        self.proxy = proxy
        self.lease = lease
        self.undone = False

    async def undo(self) -> str | None:
        if self.undone:
            return None
        self.undone = True
        try:
            answer = await self.proxy.say("clear")
        except (OSError, TimeoutError) as e:
            return f"the proxy did not answer: {e}"
        return None if answer == "ok" else answer


async def _renew(agents: Callable[[], list[Any]], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        for a in agents():
            if not a.undone:
                await a.send("renew")


async def run_experiment(exp: Experiment, opts: Options) -> dict[str, Any]:
    runner = Runner(exp, opts)
    renew = asyncio.get_running_loop().create_task(
        _renew(lambda: [*runner.agents, *_proxy_pingers(runner)], exp.run.lease / 3)
    )
    try:
        return await runner.run()
    finally:
        renew.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renew


class _ProxyPing:
    def __init__(self, proxy: _Proxy) -> None:
        self.proxy = proxy
        self.undone = False

    async def send(self, word: str) -> None:
        with contextlib.suppress(OSError, TimeoutError):
            await self.proxy.say(word)


def _proxy_pingers(runner: Runner) -> list[_ProxyPing]:
    return [_ProxyPing(p) for p in runner.proxies.values() if p.proc.returncode is None]


def plan(exp: Experiment, opts: Options) -> list[str]:
    """What a run would do, for --dry-run: targets, probes, and per round each fault's
    members and the exact commands (members found now, when they can be)."""
    lines = [f"experiment: {exp.title} ({exp.path})"]
    r = exp.run
    lines.append(
        f"run: {r.rounds} round(s), order {r.order}, recover within "
        f"{r.recover_within:g}s, probes every {r.resolution:g}s, lease {r.lease:g}s"
    )
    b = exp.blast
    lines.append(
        f"blast radius: at most {b.max_targets or 'any number of'} target(s), "
        f"{b.max_percent:g}% of a group, last healthy one "
        f"{'allowed' if b.allow_last else 'never'}"
    )
    if exp.supervise is not None:
        lines.append(f"its own daemon runs: {', '.join(exp.supervised)}")
    for p in exp.probes.values():
        lines.append(f"probe {p.name}: {p.kind} (timeout {p.timeout:g}s)")
    rng = random.Random(opts.seed)  # noqa: S311
    for rnd in range(1, r.rounds + 1):
        todo = list(exp.faults) if r.order == "each" else [exp.faults[(rnd - 1) % len(exp.faults)]]
        for f in todo:
            t = exp.targets[f.target]
            head = f"round {rnd} {f.name} ({f.kind}) on {f.target}"
            if exp.supervise is not None and t.kind == "program" and t.via == "local":
                lines.append(
                    f"{head}: pick {f.pick} of {', '.join(t.programs)} (started by the experiment)"
                )
                continue
            try:
                found = members(exp, t)
                chosen = pick(f, found, rnd, exp.blast, rng)
                for a in actions(exp, f, chosen, "dryrun", opts.allow_host_crash):
                    lines.append(f"{head}: {describe(a)}")
            except BlastRadiusRefused:
                raise
            except HeartlineError as e:
                lines.append(f"{head}: cannot look now ({e})")
    return lines
