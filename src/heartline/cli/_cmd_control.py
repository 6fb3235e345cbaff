"""Asking the daemon: `status`, `start`/`stop`/`restart`, `signal`, `logs`, `reload` and
`reopen-logs`. Each is one or two API calls and a few lines of text; the daemon decides.

`heartline status` is the call people make most: this module imports nothing at the top
beyond what every command has loaded already, and the renderer only when there is an answer.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from heartline.cli._main import client, echo
from heartline.errors import UsageError


def cmd_status(args: argparse.Namespace) -> None:
    from heartline.cli._render import status_table, to_json

    with client(args) as c:
        # --json carries the figures `top` shows, for scripts.
        doc = c.status(args.names, resources=args.json)
    echo(to_json(doc) if args.json else status_table(doc["programs"]))


def cmd_start(args: argparse.Namespace) -> None:
    _control(args, "start")


def cmd_stop(args: argparse.Namespace) -> None:
    _control(args, "stop")


def cmd_restart(args: argparse.Namespace) -> None:
    _control(args, "restart")


def _control(args: argparse.Namespace, action: str) -> None:
    from heartline.cli._render import control_lines

    if not args.names:
        raise UsageError(f"name the programs to {action} (or `all`)")
    with client(args) as c:
        if action == "stop":
            echo(control_lines(stopped=c.stop(args.names)))
        else:
            started = c.start(args.names) if action == "start" else c.restart(args.names)
            echo(control_lines(started=started))


def cmd_signal(args: argparse.Namespace) -> None:
    if not args.names:
        raise UsageError("name the programs to signal (or `all`)")
    sig: str | int = int(args.sig) if args.sig.isdigit() else args.sig
    with client(args) as c:
        doc = c.post("/v1/signal", {"names": list(args.names), "signal": sig})
    for r in doc["results"]:
        echo(f"{r['name']}: {'signalled' if r['sent'] else 'not running'}\n")


def cmd_logs(args: argparse.Namespace) -> None:
    from heartline.api import Client

    if not 0 <= args.lines <= 100_000:
        raise UsageError("--lines must be from 0 to 100000")
    query: dict[str, Any] = {"stream": "stderr" if args.stderr else "stdout", "lines": args.lines}
    out = sys.stdout.buffer
    with client(args) as c:
        if not args.follow:
            data = c.get(f"/v1/logs/{args.name}", **query)
            out.write(data)
            if not data and not args.stderr and args.lines:
                other = c.get(f"/v1/logs/{args.name}", stream="stderr", lines=1)
                if other:
                    sys.stderr.write(
                        f"heartline: {args.name} wrote nothing to stdout; its stderr has "
                        f"output: heartline logs {args.name} --stderr\n"
                    )
            return
        for chunk in c.stream(Client.url(f"/v1/logs/{args.name}", follow="true", **query)):
            out.write(chunk)
            out.flush()


def cmd_reload(args: argparse.Namespace) -> None:
    with client(args) as c:
        diff = c.post("/v1/reload", {})
    for key in ("added", "removed", "changed"):
        if diff[key]:
            echo(f"{key}: {', '.join(diff[key])}\n")
    if not any(diff.values()):
        echo("no changes\n")


def cmd_reopen_logs(args: argparse.Namespace) -> None:
    with client(args) as c:
        c.post("/v1/reopen-logs", {})
    echo("log files reopened\n")
