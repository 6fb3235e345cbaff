"""`heartline run`: supervise one command in the foreground, with no config file."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import replace

from heartline._util import parse_duration
from heartline.config import BackoffSpec, CrashLoopSpec, ProgramSpec
from heartline.errors import UsageError
from heartline.supervise import Program, State, Supervisor

EXIT_SPAWN_FAILED = 127


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


def run_one(
    command: list[str],
    *,
    policy: str,
    max_restarts: int | None,
    backoff: str,
    stop_timeout: str,
    shell: bool,
) -> int:
    try:
        timeout = parse_duration(stop_timeout)
    except ValueError as e:
        raise UsageError(f"--stop-timeout: {e}") from None
    spec = ProgramSpec(
        name="run",
        group="run",
        command=tuple(command),
        shell=shell,
        restart=policy,
        backoff=parse_backoff(backoff),
        crash_loop=CrashLoopSpec(max_starts=0),
        stop_timeout=timeout,
    )
    return asyncio.run(_run(spec, max_restarts))


async def _run(spec: ProgramSpec, max_restarts: int | None) -> int:
    loop = asyncio.get_running_loop()
    sup = Supervisor(
        {spec.name: spec}, loop=loop, log_dir=None, capture=False, max_restarts=max_restarts
    )
    prog = sup.programs[spec.name]
    done = asyncio.Event()

    def changed(p: Program) -> None:
        if p.state in (State.EXITED, State.STOPPED) or (
            p.state is State.FATAL and p._timer is None
        ):
            done.set()

    sup.listeners.append(changed)

    def stop() -> None:
        sup.background(prog.stop())

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        loop.add_signal_handler(sig, prog.send_signal, sig)
    await sup.start(["all"])
    await done.wait()
    sup.close()
    info = prog.last_exit
    if info is None:
        return 0
    if info.reason == "exit" and info.code is not None:
        return info.code
    if info.reason == "signal" and info.signal is not None:
        return 128 + info.signal
    return EXIT_SPAWN_FAILED
