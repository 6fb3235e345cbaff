"""Looking inside programs: `top` (CPU, memory, IO and descriptors per program), `report`
(stacks, tasks, process) and `attach` (a Python prompt on a program's backdoor).

`report` and `attach` also take the pid of a process heartline does not supervise, when the
daemon does not know the name or is not running.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from heartline.cli._main import client, echo
from heartline.errors import DaemonNotRunning, HeartlineError, UsageError


def cmd_top(args: argparse.Namespace) -> int | None:
    from heartline.cli._render import to_json, top_table

    if args.interval <= 0:
        raise UsageError("--interval must be above zero")
    with client(args) as c:
        while True:
            doc = c.get("/v1/top")
            if args.json:
                echo(to_json(doc))
            else:
                table = top_table(doc, sort=args.sort, tree=args.tree)
                echo(table if args.once else "\x1b[H\x1b[2J" + table)
            if args.once:
                return 0
            time.sleep(args.interval)


def cmd_report(args: argparse.Namespace) -> int:
    """A report from a supervised program (through the daemon) or from any process by pid."""
    from heartline.errors import ControlError, UnknownProgram

    if args.signal is not None:
        # A signal by hand is for a process outside heartline only: a supervised program gets
        # its own report_signal from the daemon, which knows whether the program handles it.
        if not args.target.isdigit():
            raise UsageError(
                f"--signal is for a pid heartline does not supervise, not {args.target!r}: "
                "drop it (the daemon sends the program's report_signal)"
            )
        return _report_pid(int(args.target), as_json=args.json, signum=args.signal)
    fmt = "json" if args.json else "text"
    try:
        with client(args) as c:
            out = c.post(
                "/v1/report", {"name": args.target, "format": fmt, "timeout": args.timeout}
            )
    except (UnknownProgram, ControlError) as e:
        if not args.target.isdigit() or not isinstance(e, UnknownProgram | DaemonNotRunning):
            raise
        return _report_pid(int(args.target), as_json=args.json, signum=None)
    if isinstance(out, bytes):
        sys.stdout.buffer.write(out)
    else:
        from heartline.cli._render import to_json

        echo(to_json(out))
    return 0


def _report_pid(pid: int, *, as_json: bool, signum: int | None) -> int:
    """A report of a process heartline does not supervise: py-spy's, which needs no signal, or
    the one its heartline reports write on ``signum``.

    Never a signal unless asked for: a process that catches SIGUSR2 may mean something else
    by it (nginx upgrades its binary, unicorn re-executes itself).
    """
    import shutil
    import signal as signals
    import subprocess

    from heartline._util import handles_signal

    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            name = f.read().strip()
    except OSError:
        raise UsageError(f"no process {pid} (and no program of that name)") from None
    if signum is None:
        spy = shutil.which("py-spy")
        if spy:
            argv = [spy, "dump", "--pid", str(pid)] + (["--json"] if as_json else [])
            return subprocess.run(argv, check=False).returncode
        # Not a usage error: the command line is fine, there is just nothing to report with.
        raise HeartlineError(
            f"pid {pid} ({name}) is not supervised by heartline and py-spy is not installed: "
            "install py-spy (pip install py-spy) to read its stacks without a signal, or pass "
            "--signal SIG to send the signal its heartline reports listen on (USR2 by default)"
        )
    signame = signals.Signals(signum).name
    if not handles_signal(pid, signum):
        raise HeartlineError(
            f"pid {pid} ({name}) does not catch {signame}, which would end it: nothing sent "
            "(is heartline.service.reports installed there, and on which signal?)"
        )
    sys.stderr.write(
        f"heartline: sending {signame} to pid {pid} ({name}): if it installed "
        "heartline.service.reports, its report goes to its report directory "
        "($HEARTLINE_REPORT_DIR, else reports.default_directory())\n"
    )
    sys.stderr.flush()
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        raise UsageError(f"pid {pid} ({name}) ended before {signame} was sent") from None
    except PermissionError:
        raise UsageError(
            f"not allowed to send {signame} to pid {pid} ({name}): run as its user"
        ) from None
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    """A terminal on the backdoor of a supervised program (by name) or of any pid."""
    from heartline.cli._attach import attach
    from heartline.errors import UnknownProgram

    target = args.target
    try:
        with client(args) as c:
            progs = c.status([target])["programs"]
    except (UnknownProgram, DaemonNotRunning):
        if not target.isdigit():
            raise
        return attach(int(target))
    running = [pid for p in progs if (pid := p["pid"])]
    if len(running) != 1:
        raise UsageError(f"{target}: name one running instance ({len(running)} running)")
    return attach(running[0])
