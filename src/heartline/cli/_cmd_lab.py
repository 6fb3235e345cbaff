"""`heartline lab`: lab hosts, a cluster of namespaces on this machine (up, down, status,
exec, crash, boot, cut, heal). The work is in heartline.cluster's Lab; this module parses,
prints and exits."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING

from heartline.cli._main import echo
from heartline.errors import LabError, UsageError

if TYPE_CHECKING:
    from heartline.cluster import Lab, LabStatus


def _open(args: argparse.Namespace) -> Lab:
    from heartline.cluster import Lab

    if getattr(args, "command", None) and args.lab_command != "exec":
        raise UsageError(f"lab {args.lab_command} takes no command after --")
    return Lab.open(args.dir)


def cmd_up(args: argparse.Namespace) -> None:
    from heartline.cluster import Lab

    if getattr(args, "command", None):
        raise UsageError("lab up takes no command after --")
    import signal

    # Stopped by TERM or HUP as by Ctrl-C: `up` undoes what it made so far (only SIGKILL
    # leaves that to `lab down`).
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    began = time.monotonic()
    lab = Lab.up(args.n, args.dir, programs=args.programs, timeout=args.timeout,
                 backend=args.backend)  # fmt: skip
    s = lab.status()
    echo(
        f"lab {s['id']} up in {time.monotonic() - began:.1f}s: {len(s['hosts'])} hosts on "
        f"{s['network']}, backend {s['backend']} ({s['backend_kind']}, keeper pid "
        f"{s['keeper_pid']})\n"
    )
    echo(status_table(s))
    echo(
        f"  ssh -F {s['ssh_config']} {s['hosts'][0]['name']}\n"
        f"  heartline lab exec {s['hosts'][0]['name']} --dir {s['dir']} -- CMD\n"
        f"  heartline -c {s['config']} hosts\n"
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_down(args: argparse.Namespace) -> None:
    lab = _open(args)
    n = len(lab.hosts)
    lab.down()
    echo(f"lab {lab.state.id} down: {n} hosts' namespaces, links, processes and files removed\n")


def status_table(s: LabStatus) -> str:
    lines = [f"{'HOST':<8} {'ADDRESS':<15} {'STATE':<9} {'INIT':>7} {'SSHD':>7} {'DAEMON':>7}"]
    for h in s["hosts"]:
        pids = [str(p) if p else "-" for p in (h["init_pid"], h["sshd_pid"], h["daemon_pid"])]
        lines.append(f"{h['name']:<8} {h['address']:<15} {h['state']:<9} "
                     f"{pids[0]:>7} {pids[1]:>7} {pids[2]:>7}")  # fmt: skip
    return "\n".join(lines) + "\n"


def cmd_status(args: argparse.Namespace) -> None:
    s = _open(args).status()
    if args.json:
        echo(json.dumps(s, indent=2) + "\n")
        return
    keeper = f"pid {s['keeper_pid']}" if s["keeper_pid"] else "down"
    phase = "" if s["phase"] == "up" else f" ({s['phase']}: `heartline lab down` clears it)"
    echo(f"lab {s['id']} in {s['dir']}{phase}: {s['network']}, backend {s['backend']} "
         f"({s['backend_kind']}, keeper {keeper})\n")  # fmt: skip
    echo(status_table(s))


def cmd_exec(args: argparse.Namespace) -> None:
    command = list(args.command)
    if not command:
        raise UsageError("lab exec: give the command: heartline lab exec HOST -- CMD ARGS...")
    argv, env = _open(args).exec_argv(args.host, command)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, env)  # noqa: S606 - nsenter exits with the command's status
    except OSError as e:
        raise LabError(f"exec: cannot run nsenter: {e.strerror} (install util-linux)") from None


def cmd_crash(args: argparse.Namespace) -> None:
    lab = _open(args)
    lab.crash(args.host)
    if args.host == "backend":
        echo(f"backend crashed: the lab's {lab.state.backend_kind} was killed\n")
        return
    echo(f"{args.host} crashed: every process of its pid namespace was killed\n")


def cmd_boot(args: argparse.Namespace) -> None:
    lab = _open(args)
    lab.boot(args.host)
    if args.host == "backend":
        s = lab.status()
        echo(f"backend up again ({s['backend_kind']} pid {s['keeper_pid']})\n")
        return
    h = next(h for h in lab.status()["hosts"] if h["name"] == args.host)
    echo(f"{args.host} up again (init pid {h['init_pid']}, sshd {h['sshd_pid']}, "
         f"daemon {h['daemon_pid']})\n")  # fmt: skip


def cmd_cut(args: argparse.Namespace) -> None:
    _link(args, up=False)


def cmd_heal(args: argparse.Namespace) -> None:
    _link(args, up=True)


def _link(args: argparse.Namespace, *, up: bool) -> None:
    lab = _open(args)
    if (lab.heal if up else lab.cut)(args.host):
        echo(f"{args.host} {'healed (its link is up)' if up else 'cut off (its link is down)'}\n")
    else:
        echo(f"{args.host} {'was not cut' if up else 'was cut already'}\n")
