"""Commands of the `heartline` CLI.

Built on argparse, and every command imports what it needs itself: a cold `heartline status`
loads the config reader and the small API client, nothing else. (Importing click alone costs
about 40 ms here, half of the status budget; argparse is nearly free.)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from heartline import __version__
from heartline.errors import DaemonNotRunning, HeartlineError, UsageError

_COMMANDS = (
    "up", "down", "status", "top", "report", "attach", "start", "stop", "restart", "signal",
    "logs", "reload", "reopen-logs", "run", "systemd-unit", "init", "lock", "locks", "lockd",
)  # fmt: skip

# Exit codes beyond the ones the errors carry (see heartline.errors).
EXIT_INTERRUPTED = 130
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) instead of a usage block."""

    #: The subcommand being parsed: errors the top-level parser reports for it (unrecognized
    #: arguments) point at that command's help.
    command: str | None = None

    def error(self, message: str) -> NoReturn:
        prog = f"{self.prog} {self.command}" if self.command else self.prog
        raise UsageError(f"{message} (see `{prog} --help`)")


def fail(err: HeartlineError) -> NoReturn:
    sys.stderr.write(f"heartline: {err}\n")
    sys.exit(err.exit_code)


def main(argv: list[str] | None = None) -> None:
    command = None
    try:
        argv = sys.argv[1:] if argv is None else argv
        command = _command_in(argv)
        tail: list[str] = []
        if command == "lock" and "--" in argv:
            # Everything after `--` is the command, untouched (argparse would otherwise let a
            # positional swallow the options that follow NAME).
            cut = argv.index("--")
            argv, tail = argv[:cut], argv[cut + 1 :]
        args = build_parser(command).parse_args(argv)
        if command == "lock":
            args.command = tail
        # -c/-s may come before or after the command; both parsers share the actions, so the
        # defaults are filled in here rather than by argparse (which would let one clobber
        # the other).
        for name in ("config", "socket"):
            if not hasattr(args, name):
                setattr(args, name, None)
        handler: Callable[[argparse.Namespace], int | None] = args.handler
        code = handler(args)
    except UsageError as e:
        if command in ("lock", "run"):
            # These pass their command's exit code through; 2 is a common one, so their own
            # usage errors get the reserved EX_USAGE instead (see the README).
            sys.stderr.write(f"heartline: {e}\n")
            sys.exit(64)
        fail(e)
    except HeartlineError as e:
        fail(e)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    sys.exit(code or 0)


# --- where the daemon is -----------------------------------------------------------------
def _config_path(args: argparse.Namespace) -> str:
    from heartline.config._locate import default_config_path

    return str(args.config or default_config_path())


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    if os.environ.get("HEARTLINE_SOCKET"):
        return os.environ["HEARTLINE_SOCKET"]
    from heartline.config._locate import default_run_dir, socket_from_config

    path = _config_path(args)
    if args.config or os.environ.get("HEARTLINE_CONFIG") or os.path.exists(path):
        return socket_from_config(path)
    return os.path.join(default_run_dir(), "heartline.sock")


def _client(args: argparse.Namespace) -> Any:
    from heartline.api import Client

    return Client(_socket_path(args))


def _echo(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# --- daemon ------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int | None:
    from heartline.config import load_config

    path = os.path.abspath(_config_path(args))
    config = load_config(path)
    if args.detach:
        return _detach(path, config.daemon.log_dir)
    from heartline.daemon import run_daemon
    from heartline.daemon._daemon import setup_logging

    setup_logging()
    ready_fd = os.environ.pop("HEARTLINE_READY_FD", "")

    def ready() -> None:
        if ready_fd.isdigit():
            try:
                os.write(int(ready_fd), b"ready\n")
                os.close(int(ready_fd))
            except OSError:
                pass

    try:
        run_daemon(path, ready=ready)
    except HeartlineError as e:
        if ready_fd.isdigit():
            # `up --detach` waits on this pipe: the reason reaches it even when the log file
            # cannot be written (a full disk).
            import contextlib

            with contextlib.suppress(OSError):
                os.write(int(ready_fd), f"error {e}\n".encode(errors="replace")[:4000])
        raise
    return None


def _detach(path: str, log_dir: str) -> int:
    import subprocess

    from heartline.errors import DaemonStartError

    log_path = os.path.join(log_dir, "heartline.log")
    try:
        os.makedirs(log_dir, mode=0o750, exist_ok=True)
        logf = open(log_path, "ab")  # noqa: SIM115 - closed right after the spawn
    except OSError as e:
        raise DaemonStartError(
            f"cannot open the daemon's log {log_path}: {e.strerror} (free space or fix the "
            "permissions, or choose another [daemon] log_dir)"
        ) from None
    r, w = os.pipe()
    with logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "heartline", "up", "-c", path],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            start_new_session=True,
            pass_fds=(w,),
            env={**os.environ, "HEARTLINE_READY_FD": str(w)},
        )
    os.close(w)
    with os.fdopen(r, "rb") as rf:
        got = rf.read()
    if got.startswith(b"ready"):
        _echo(f"heartline daemon started (pid {proc.pid}); log: {log_path}\n")
        return 0
    code = proc.wait()
    if got.startswith(b"error "):
        sys.stderr.write(f"heartline: the daemon did not start: {got[6:].decode().strip()}\n")
        return code or 1
    with open(log_path, "rb") as f:
        f.seek(max(0, os.path.getsize(log_path) - 4096))
        last = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    reason = last[-1].removeprefix("heartline: ") if last else f"exit code {code}"
    sys.stderr.write(f"heartline: the daemon did not start: {reason}\n")
    return code or 1


def cmd_down(args: argparse.Namespace) -> int:
    import select

    with _client(args) as c:
        pid = c.status()["daemon"]["pid"]
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = -1
        c.shutdown()
    if pidfd >= 0:
        readable, _, _ = select.select([pidfd], [], [], args.timeout)
        os.close(pidfd)
        if not readable:
            msg = f"the daemon (pid {pid}) is still stopping after {args.timeout:g}s"
            sys.stderr.write(f"heartline: {msg}\n")
            return 1
    _echo("heartline daemon stopped\n")
    return 0


# --- status and control ------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> None:
    from heartline.cli._render import status_table, to_json

    with _client(args) as c:
        # --json carries the figures `top` shows, for scripts.
        doc = c.status(args.names, resources=args.json)
    _echo(to_json(doc) if args.json else status_table(doc["programs"]))


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
        with _client(args) as c:
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

        _echo(to_json(out))
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


def _signal_number(text: str) -> int:
    """``--signal``'s value: a name (``USR2``, ``SIGUSR2``, ``usr2``) or a number."""
    import signal as signals

    try:
        if text.isdigit():
            return int(signals.Signals(int(text)))
        name = text.upper()
        return int(signals.Signals[name if name.startswith("SIG") else "SIG" + name])
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(
            f"unknown signal {text!r} (use a name such as USR2 or USR1, or a number)"
        ) from None


def cmd_attach(args: argparse.Namespace) -> int:
    """A terminal on the backdoor of a supervised program (by name) or of any pid."""
    from heartline.cli._attach import attach
    from heartline.errors import UnknownProgram

    target = args.target
    try:
        with _client(args) as c:
            progs = c.status([target])["programs"]
    except (UnknownProgram, DaemonNotRunning):
        if not target.isdigit():
            raise
        return attach(int(target))
    running = [p for p in progs if p["pid"]]
    if len(running) != 1:
        raise UsageError(f"{target}: name one running instance ({len(running)} running)")
    return attach(int(running[0]["pid"]))


def cmd_top(args: argparse.Namespace) -> int | None:
    from heartline.cli._render import to_json, top_table

    if args.interval <= 0:
        raise UsageError("--interval must be above zero")
    with _client(args) as c:
        while True:
            doc = c.get("/v1/top")
            if args.json:
                _echo(to_json(doc))
            else:
                table = top_table(doc, sort=args.sort, tree=args.tree)
                _echo(table if args.once else "\x1b[H\x1b[2J" + table)
            if args.once:
                return 0
            time.sleep(args.interval)


def _control(args: argparse.Namespace, action: str) -> None:
    from heartline.cli._render import control_lines

    if not args.names:
        raise UsageError(f"name the programs to {action} (or `all`)")
    with _client(args) as c:
        if action == "stop":
            _echo(control_lines(stopped=c.stop(args.names)))
        else:
            started = c.start(args.names) if action == "start" else c.restart(args.names)
            _echo(control_lines(started=started))


def cmd_signal(args: argparse.Namespace) -> None:
    if not args.names:
        raise UsageError("name the programs to signal (or `all`)")
    sig: str | int = int(args.sig) if args.sig.isdigit() else args.sig
    with _client(args) as c:
        doc = c.post("/v1/signal", {"names": list(args.names), "signal": sig})
    for r in doc["results"]:
        _echo(f"{r['name']}: {'signalled' if r['sent'] else 'not running'}\n")


def cmd_logs(args: argparse.Namespace) -> None:
    from heartline.api import Client

    if not 0 <= args.lines <= 100_000:
        raise UsageError("--lines must be from 0 to 100000")
    query: dict[str, Any] = {"stream": "stderr" if args.stderr else "stdout", "lines": args.lines}
    out = sys.stdout.buffer
    with _client(args) as c:
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
    with _client(args) as c:
        diff = c.post("/v1/reload", {})
    for key in ("added", "removed", "changed"):
        if diff[key]:
            _echo(f"{key}: {', '.join(diff[key])}\n")
    if not any(diff.values()):
        _echo("no changes\n")


def cmd_reopen_logs(args: argparse.Namespace) -> None:
    with _client(args) as c:
        c.post("/v1/reopen-logs", {})
    _echo("log files reopened\n")


# --- one command, no config ----------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from heartline.cli._run import run_one

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("name the command to run: heartline run [OPTIONS] -- CMD ARGS...")
    return run_one(command, args)


def cmd_systemd_unit(args: argparse.Namespace) -> None:
    from heartline.cli._render import systemd_unit_text

    config = os.path.abspath(args.config or "/etc/heartline/heartline.toml")
    exe = sys.argv[0]
    if os.path.basename(exe) == "heartline":
        exe = os.path.abspath(exe)
    else:
        exe = f"{sys.executable} -m heartline"
    _echo(systemd_unit_text(exe, config))


def cmd_init(args: argparse.Namespace) -> int:
    """Print or write the commented sample configuration."""
    from heartline.config._sample import SAMPLE

    if args.out is None:
        _echo(SAMPLE)
        return 0
    try:
        with open(args.out, "x" if not args.force else "w") as f:
            f.write(SAMPLE)
    except FileExistsError:
        raise UsageError(f"{args.out} exists; pass --force to overwrite it") from None
    except OSError as e:
        raise UsageError(f"cannot write {args.out}: {e.strerror}") from None
    _echo(f"wrote {args.out}; start it with: heartline -c {args.out} up\n")
    return 0


# --- locks ---------------------------------------------------------------------------------
def cmd_lock(args: argparse.Namespace) -> int:
    from heartline.lock import check_limit, check_name, check_ttl, check_wait

    command = list(getattr(args, "command", []))
    check_name(args.name)
    if args.break_lock:
        if command:
            raise UsageError("--break takes no command: heartline lock --break NAME")
        from heartline.lock import log_to_stderr_when_used, open_backend

        log_to_stderr_when_used()

        backend = open_backend(args.server, token_file=args.token_file, ca_file=args.ca_file)
        try:
            n = backend.break_lock(args.name)
        finally:
            backend.close()
        _echo(f"lock {args.name!r}: {n} holder(s) dropped\n")
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


def cmd_locks(args: argparse.Namespace) -> None:
    from heartline.cli._render import locks_table, to_json
    from heartline.lock import log_to_stderr_when_used, open_backend

    log_to_stderr_when_used()  # a backend's warning is a `heartline: ` line like the rest
    backend = open_backend(args.server, token_file=args.token_file, ca_file=args.ca_file)
    try:
        locks = backend.locks()
    finally:
        backend.close()
    if args.json:
        _echo(to_json({"locks": [info.as_dict() for info in locks]}))
    else:
        _echo(locks_table(locks))


def cmd_lockd(args: argparse.Namespace) -> int:
    import logging

    from heartline.lockd import serve

    logging.basicConfig(level=logging.INFO, format="lockd: %(message)s")
    data = None if args.no_data else (args.data or _default_lockd_dir())

    def ready(port: int) -> None:
        from heartline.service import notify

        notify.ready()
        _echo(f"lockd ready on port {port}\n")

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


def _lock_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        metavar="URL",
        default=None,
        help="heartline://HOST:PORT, heartlines://HOST:PORT (TLS) or etcd://HOST:PORT[,...] "
        "(default: $HEARTLINE_LOCK_URL or heartline://127.0.0.1:7717)",
    )
    p.add_argument("--token-file", metavar="FILE", default=None,
                   help="lockd client token (default: $HEARTLINE_LOCK_TOKEN_FILE)")  # fmt: skip
    p.add_argument("--ca-file", metavar="FILE", default=None, help="CA bundle for TLS")


# --- the parser ----------------------------------------------------------------------------
def _max_restarts(text: str) -> str:
    """--max-restarts: a whole number, or ``forever`` (checked here: importing heartline run's
    module would load asyncio into every command's cold start)."""
    if text == "forever" or (text.isascii() and text.isdigit() and len(text) < 10):
        return text
    raise argparse.ArgumentTypeError(f"expected a number of restarts or 'forever', got {text!r}")


def _nonnegative(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(text)


_GLOBAL_WITH_VALUE = ("-c", "--config", "-s", "--socket")


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named on the command line, if any (to build only its parser)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _GLOBAL_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; with ``only``, just that subcommand's parser is built.

    Building all thirteen sub-parsers costs several milliseconds of every cold call; a known
    command needs only its own (``--help`` and unknown commands still get the full set).
    """
    common = _Parser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="config file (default: $HEARTLINE_CONFIG, ./heartline.toml, "
        "/etc/heartline/heartline.toml)",
    )
    common.add_argument(
        "-s",
        "--socket",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="control socket of the daemon (default: from the config)",
    )
    parser = _Parser(
        prog="heartline",
        description="Keep programs running, restart them on crash, and show what they do.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"heartline {__version__}")
    parser.command = only if only in _COMMANDS else None
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(
        name: str, handler: Callable[..., Any], text: str, *, daemon: bool = True
    ) -> argparse.ArgumentParser:
        """A subcommand; ``daemon`` ones talk to the daemon and take -c/-s."""
        if only in _COMMANDS and name != only:
            return _Parser(add_help=False)  # a scratch parser nobody uses
        p = sub.add_parser(name, help=text, description=text, parents=[common] if daemon else [])
        p.set_defaults(handler=handler)
        return p

    p = add("up", cmd_up, "Run the supervisor daemon (in the foreground unless --detach).")
    p.add_argument("--detach", action="store_true", help="run in the background; return once ready")
    p = add("down", cmd_down, "Stop every program, then the daemon.")
    p.add_argument("-t", "--timeout", type=float, default=60.0, help="seconds to wait (60)")
    p = add("attach", cmd_attach, "Open a terminal on a program's backdoor (NAME or PID).")
    p.add_argument("target", metavar="NAME|PID")
    p = add("report", cmd_report, "Print a report (stacks, tasks, process) of a program or pid.")
    p.add_argument("target", metavar="NAME|PID")
    p.add_argument("--json", action="store_true", help="the JSON report")
    p.add_argument("-t", "--timeout", type=float, default=5.0, help="seconds to wait (5)")
    p.add_argument(
        "--signal",
        metavar="SIG",
        type=_signal_number,
        default=None,
        help="for a PID heartline does not supervise: send SIG (e.g. USR2) to ask its heartline "
        "reports for a report (only if it catches SIG); without it, py-spy dump is the only way "
        "(no signal is sent)",
    )
    p = add("top", cmd_top, "Live CPU, memory, IO and descriptors per program (Ctrl-C ends).")
    p.add_argument(
        "--sort",
        choices=["cpu", "rss", "read", "write", "fds", "restarts", "name"],
        default="cpu",
    )
    p.add_argument("--tree", action="store_true", help="also show each program's processes")
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.add_argument("--json", action="store_true", help="print the API's JSON (with --once)")
    p.add_argument("-i", "--interval", type=float, default=2.0, help="seconds between updates")
    p = add("status", cmd_status, "Show the state of programs.")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    for action, text in (
        ("start", "Start programs (NAME..., or `all`)."),
        ("stop", "Stop programs: stop signal to the group, SIGKILL after stop_timeout."),
        ("restart", "Stop then start programs."),
    ):
        p = add(action, lambda a, action=action: _control(a, action), text)
        p.add_argument("names", nargs="*", metavar="NAME")
    p = add("signal", cmd_signal, "Send signal SIG (HUP, USR1, 15...) to programs' main process.")
    p.add_argument("sig", metavar="SIG")
    p.add_argument("names", nargs="*", metavar="NAME")
    p = add("logs", cmd_logs, "Print a program's captured output.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("-n", "--lines", type=_nonnegative, default=10, help="lines of history (10)")
    p.add_argument("--stderr", action="store_true", help="show stderr instead of stdout")
    add("reload", cmd_reload, "Read the config again and apply the difference.")
    add("reopen-logs", cmd_reopen_logs, "Reopen every log file (after logrotate moved them).")
    p = add(
        "run",
        cmd_run,
        "Supervise one command in the foreground: heartline run [OPTIONS] -- CMD ARGS... "
        "Exits with the command's exit code once it stops restarting it (128+N when killed "
        "by signal N, 127 when it could not be started).",
        daemon=False,
    )
    p.add_argument("--restart", choices=["always", "on-failure", "never"], default="on-failure",
                   help="when to run CMD again (default: %(default)s)")  # fmt: skip
    p.add_argument("--max-restarts", type=_max_restarts, default="5", metavar="N|forever",
                   help="give up after N restarts (default: %(default)s, as a retry loop "
                   "would; 'forever' for a service or a tunnel)")  # fmt: skip
    p.add_argument("--backoff", default="1s..30s", metavar="INITIAL[..MAX]",
                   help="delay before the 2nd quick restart in a row, doubling up to MAX; the "
                   "first restart after a run of 10s or more is immediate (default: "
                   "%(default)s)")  # fmt: skip
    p.add_argument("--stop-timeout", default="10s", metavar="DURATION",
                   help="SIGKILL after this long when stopping (default: %(default)s)")  # fmt: skip
    p.add_argument("--shell", action="store_true", help="run CMD through /bin/sh -c")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no line on stderr for each exit and restart")  # fmt: skip
    p.add_argument(
        "--check",
        metavar="URL",
        help="health check: tcp://HOST:PORT, http(s)://... (restart after --check-failures)",
    )
    p.add_argument("--check-interval", default="10s", metavar="DURATION",
                   help="default: %(default)s")  # fmt: skip
    p.add_argument("--check-timeout", default="5s", metavar="DURATION",
                   help="default: %(default)s")  # fmt: skip
    p.add_argument("--check-grace", default="0s", metavar="DURATION",
                   help="no checks this long after a start (default: %(default)s)")  # fmt: skip
    p.add_argument("--check-failures", type=_nonnegative, default=3, metavar="N",
                   help="default: %(default)s")  # fmt: skip
    p.add_argument("--watchdog", default="0s", metavar="DURATION",
                   help="restart when no WATCHDOG=1 comes for this long (default: off)",
                   )  # fmt: skip
    p.add_argument("--ready", choices=["started", "notify", "check"], default="started",
                   help="default: %(default)s")  # fmt: skip
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")
    p = add(
        "lock",
        cmd_lock,
        "Run a command while holding a cluster lock: heartline lock NAME [OPTIONS] -- CMD "
        "ARGS... Exits with the command's exit code; reserved: 64 usage, 69 server "
        "unreachable, 75 not granted in time (or busy with --try), 77 not authorized, "
        "79 lock lost (the command was stopped).",
        daemon=False,
    )
    p.add_argument("name", metavar="NAME")
    _lock_client_options(p)
    p.add_argument("-w", "--wait", type=float, default=None, metavar="SECONDS",
                   help="give up after SECONDS (default: wait for ever)")  # fmt: skip
    p.add_argument("--try", dest="try_lock", action="store_true",
                   help="do not wait: exit 75 if the lock is busy")  # fmt: skip
    p.add_argument("-n", "--limit", type=int, default=1, metavar="N",
                   help="up to N holders at once (a semaphore; default 1)")  # fmt: skip
    p.add_argument("--ttl", default="10s", metavar="DURATION",
                   help="lease: a holder silent this long loses the lock (10s)")  # fmt: skip
    p.add_argument("--break", dest="break_lock", action="store_true",
                   help="drop every holder of NAME (needs an admin token)")  # fmt: skip
    p = add(
        "locks",
        cmd_locks,
        "List cluster locks: holders (host, pid, since, token), waiters.",
        daemon=False,
    )
    _lock_client_options(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("lockd", cmd_lockd, "Run the lock server in the foreground.", daemon=False)
    p.add_argument("--listen", default="127.0.0.1:7717", metavar="HOST:PORT",
                   help="address to listen on (127.0.0.1:7717; beyond loopback needs "
                   "--token-file)")  # fmt: skip
    p.add_argument("--data", metavar="DIR", default=None,
                   help="where grants are journaled (default /var/lib/heartline/lockd for "
                   "root, else ~/.local/state/heartline/lockd)")  # fmt: skip
    p.add_argument("--no-data", action="store_true",
                   help="keep nothing on disk (a restart forgets every grant)")  # fmt: skip
    p.add_argument("--token-file", metavar="FILE", default=None,
                   help="client tokens, one per line: TOKEN or `TOKEN admin`")  # fmt: skip
    p.add_argument("--tls-cert", metavar="FILE", default=None)
    p.add_argument("--tls-key", metavar="FILE", default=None)
    p.add_argument("--max-ttl", default="1h", metavar="DURATION",
                   help="longest lease a client may ask for (1h)")  # fmt: skip
    add("systemd-unit", cmd_systemd_unit, "Print a systemd unit that runs the heartline daemon.")
    p = add(
        "init",
        cmd_init,
        "Print a commented sample heartline.toml (every key, its default).",
        daemon=False,
    )
    p.add_argument("--out", metavar="FILE", help="write it to FILE instead of printing it")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    return parser
