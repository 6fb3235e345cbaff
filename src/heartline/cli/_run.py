"""`heartline run`: supervise one command in the foreground, with no config file."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shlex
import signal
import sys
from dataclasses import replace

from heartline._util import become_subreaper, parse_duration
from heartline.cli._runguard import RunGuard
from heartline.config import BackoffSpec, CrashLoopSpec, ProgramSpec, parse_config
from heartline.errors import ConfigError, UsageError
from heartline.supervise import Program, State, Supervisor

EXIT_SPAWN_FAILED = 127

log = logging.getLogger(__name__)


def cmd_run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("name the command to run: heartline run [OPTIONS] -- CMD ARGS...")
    return run_one(command, args)


def parse_backoff(text: str) -> BackoffSpec:
    """``"1s..30s"`` (initial..max) or ``"1s"`` (initial, default max)."""
    first, sep, second = text.partition("..")
    try:
        initial = parse_duration(first)
        spec = BackoffSpec(initial=initial)
        if sep:
            spec = replace(spec, max=parse_duration(second))
    except ValueError as e:
        raise UsageError(f"--backoff {text!r}: {e}; write INITIAL..MAX such as 1s..30s") from None
    if spec.max < spec.initial:
        raise UsageError(f"--backoff {text!r}: the maximum is below the initial delay")
    return spec


def run_one(command: list[str], args: argparse.Namespace) -> int:
    """Build a one-program spec from the `heartline run` options and supervise it."""
    check = None
    if args.check:
        text = f'[programs.run]\ncommand = ["x"]\ncheck = {{ url = {json.dumps(args.check)} }}\n'
        try:
            check = parse_config(text).programs["run"].check
        except ConfigError as e:
            raise UsageError(f"--check {args.check!r}: {e.reason}") from None
        assert check is not None
        check = replace(
            check,
            interval=_duration("--check-interval", args.check_interval),
            timeout=_duration("--check-timeout", args.check_timeout),
            grace=_duration("--check-grace", args.check_grace),
            failures=max(1, args.check_failures),
        )
    if args.ready == "check" and check is None:
        raise UsageError("--ready check needs --check URL")
    spec = ProgramSpec(
        name="run",
        group="run",
        command=tuple(command),
        shell=args.shell,
        restart=args.restart,
        backoff=parse_backoff(args.backoff),
        # No crash-loop window: --max-restarts is the limit; a command that cannot be exec'd
        # at all ends the run (fatal, no cool-down) after a few tries.
        crash_loop=CrashLoopSpec(max_starts=0, cooldown=None),
        stop_timeout=_duration("--stop-timeout", args.stop_timeout),
        watchdog=_duration("--watchdog", args.watchdog),
        ready=args.ready,
        check=check,
    )
    logging.basicConfig(level=logging.WARNING, format="heartline: %(message)s")
    # Each exit is told by one line of the run's own (see _Narrator); the supervisor's lines
    # about the same exit would say it twice. Its other warnings (a watchdog, a SIGKILL,
    # processes left behind) stay.
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_told_twice)
    # Forked before the event loop and the Supervisor's threads exist (see _runguard).
    guard: RunGuard | None = None
    try:
        guard = RunGuard.start(stop_signal=spec.stop_signal, stop_timeout=spec.stop_timeout)
    except OSError as e:
        log.warning("cannot start the guard process (%s): if heartline run is killed, "
                    "its command keeps running", e.strerror or e)  # fmt: skip
    try:
        limit = None if args.max_restarts == "forever" else int(args.max_restarts)
        return asyncio.run(_run(spec, limit, guard, quiet=args.quiet))
    finally:
        if guard is not None:
            guard.close()


def _duration(option: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise UsageError(f"{option}: {e}") from None


#: The supervisor's log lines that a _Narrator line already says.
_TOLD = frozenset({
    "%s: cannot start: %s",
    "%s: %s; retry in %s",
    "%s: %s; not retried (cooldown = never): start it by hand",
})  # fmt: skip


def _not_told_twice(record: logging.LogRecord) -> bool:
    return not (record.name.startswith("heartline.supervise") and record.msg in _TOLD)


class _Narrator:
    """One line on stderr for each exit of the command: how it ended and what comes next."""

    def __init__(self, argv: list[str], limit: int | None) -> None:
        self.what = shlex.join(argv)
        if len(self.what) > 60:
            self.what = self.what[:57] + "..."
        self.limit = limit
        self.told: object = None

    def __call__(self, p: Program) -> None:
        snap = p.snapshot()
        last = snap["last_exit"]
        if last is None or p.last_exit is self.told:
            return
        state = p.state
        if state in (State.STOPPING, State.STOPPED):
            return  # stopped on purpose (Ctrl-C, SIGTERM): nothing to explain
        ended = f"{self.what}: {last['text']}"
        if last["reason"] == "spawn-failed":
            ended = f"cannot start: {last['detail']}"
        if state is State.BACKOFF:
            nxt = "restarting " + snap["detail"].rpartition("retry ")[2]
        elif state in (State.STARTING, State.RUNNING):
            nxt = "restarting now"
        elif state is State.FATAL and last["reason"] == "spawn-failed":
            nxt = f"giving up after {p.history.spawn_failures} tries"
        elif state is State.FATAL:
            nxt = "giving up: " + snap["detail"].split(";")[0]
        elif "restart limit" in snap["detail"]:
            nxt = f"giving up after {p.restarts} restart(s) (--max-restarts {self.limit})"
        elif last["reason"] == "exit" and last["code"] == 0:
            nxt = "done"
        else:
            nxt = snap["detail"] or "not restarted"
        count = ""
        if state in (State.BACKOFF, State.STARTING, State.RUNNING):
            total = "" if self.limit is None else f" of {self.limit}"
            count = f" (restart {p.restarts + (state is State.BACKOFF)}{total})"
        self.told = p.last_exit
        sys.stderr.write(f"heartline: {ended}; {nxt}{count}\n")
        sys.stderr.flush()


async def _run(
    spec: ProgramSpec, max_restarts: int | None, guard: RunGuard | None, *, quiet: bool = False
) -> int:
    loop = asyncio.get_running_loop()
    sup = Supervisor(
        {spec.name: spec},
        loop=loop,
        log_dir=None,
        capture=False,
        max_restarts=max_restarts,
        holder=guard,
        # Orphans among the command's descendants come back to us: what a daemonizing command
        # leaves behind is stopped with it, not left under init.
        subreaper=become_subreaper(),
    )
    loop.add_signal_handler(signal.SIGCHLD, sup.on_sigchld)
    if guard is not None:
        guard.mark(sup.env_for(spec)["NOTIFY_SOCKET"])
        guard.watch(loop)
    prog = sup.programs[spec.name]
    done = asyncio.Event()

    def changed(p: Program) -> None:
        if p.state in (State.EXITED, State.STOPPED) or (
            p.state is State.FATAL and p.retry_at is None
        ):
            done.set()

    sup.listeners.append(changed)
    if not quiet:
        sup.listeners.append(_Narrator(list(spec.command), max_restarts))

    def stop() -> None:
        sup.background(prog.stop())

    stops = (signal.SIGTERM, signal.SIGINT)
    passed = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
    for sig in stops:
        loop.add_signal_handler(sig, stop)
    for sig in passed:
        loop.add_signal_handler(sig, prog.send_signal, sig)
    await sup.start(["all"])
    await done.wait()
    sup.close()
    # The default dispositions again before asyncio.run closes the loop: closing it shuts the
    # pipe the signals wake it through before it drops its handlers, and a signal landing in
    # between (SIGCHLD from the guard, which leaves on bye) made Python print "Exception
    # ignored when trying to write to the signal wakeup fd" and a traceback on stderr.
    for sig in (signal.SIGCHLD, *stops, *passed):
        loop.remove_signal_handler(sig)
    if guard is not None and prog.pid is None:
        guard.bye()
    info = prog.last_exit
    if info is None:
        return 0
    if info.code is not None:
        return info.code
    if info.signal is not None:
        return 128 + info.signal
    return EXIT_SPAWN_FAILED
