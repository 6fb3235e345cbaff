"""Cluster locks: `lock` (run a command while holding one), `locks` (list them) and `lockd`
(the lock server, in the foreground).

`heartline lock` is often called in loops, so its cold start counts: heartline.lock's public
names only, whose runner and backends load on first use; the server's package only for `lockd`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from heartline.cli._main import echo
from heartline.errors import UsageError

if TYPE_CHECKING:
    from heartline.lock import LockBackend


def cmd_lock(args: argparse.Namespace) -> int:
    from heartline.lock import check_limit, check_name, check_ttl, check_wait

    command = list(getattr(args, "command", []))
    check_name(args.name)
    if args.break_lock:
        if command:
            raise UsageError("--break takes no command: heartline lock --break NAME")
        backend = _backend(args)
        try:
            n = backend.break_lock(args.name)
        finally:
            backend.close()
        echo(f"lock {args.name!r}: {n} holder(s) dropped\n")
        return 0
    if not command:
        raise UsageError("name the command to run: heartline lock NAME [OPTIONS] -- CMD ARGS...")
    if args.try_lock and args.wait is not None:
        raise UsageError("-w/--wait and --try exclude each other; choose one")
    wait = 0.0 if args.try_lock else args.wait
    from heartline.lock import run_locked

    code = run_locked(
        args.name,
        command,
        url=args.server,
        limit=check_limit(args.limit),
        ttl=check_ttl(_seconds("--ttl", args.ttl)),
        wait=check_wait(wait),
        token_file=args.token_file,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
    )
    # The lock is released and the command gone: skip the interpreter's teardown (a few ms of
    # every run; `heartline lock` is often called in loops).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _seconds(option: str, text: str) -> float:
    from heartline._util import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise UsageError(f"{option} {text!r}: {e}") from None


def _backend(args: argparse.Namespace) -> LockBackend:
    """The backend the options name (``--server`` and the credentials)."""
    from heartline.lock import log_to_stderr_when_used, open_backend

    log_to_stderr_when_used()  # a backend's warning is a `heartline: ` line like the rest
    return open_backend(
        args.server, token_file=args.token_file, ca_file=args.ca_file,
        cert_file=args.cert_file, key_file=args.key_file,
    )  # fmt: skip


def cmd_locks(args: argparse.Namespace) -> None:
    from heartline.cli._render import locks_table, to_json

    backend = _backend(args)
    try:
        locks = backend.locks()
    finally:
        backend.close()
    if args.json:
        echo(to_json({"locks": [info.as_dict() for info in locks]}))
    else:
        echo(locks_table(locks))


def cmd_lockd(args: argparse.Namespace) -> int:
    import logging

    from heartline.lockd import serve

    logging.basicConfig(level=logging.INFO, format="lockd: %(message)s")
    data = None if args.no_data else (args.data or _default_lockd_dir())

    def ready(port: int) -> None:
        from heartline.service import notify

        notify.ready()
        echo(f"lockd ready on port {port}\n")

    return serve(
        args.listen,
        data,
        token_file=args.token_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        max_ttl=_seconds("--max-ttl", args.max_ttl),
        ready=ready,
    )


def _default_lockd_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/heartline/lockd"
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "heartline", "lockd")
