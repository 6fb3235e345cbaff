"""The `heartline` command line: the parser, and main(), which runs the command it names.

Built on argparse (importing click alone costs about 40 ms here, half of the status budget;
argparse is nearly free), and cold calls are kept cheap in two ways: only the named command's
sub-parser is built, and each command's code lives in a module of its group (_cmd_daemon,
_cmd_control, _cmd_inside, _cmd_lock, _cmd_cluster, _cmd_lab, _run), named here by a
"module:function" string and imported after parsing. A cold `heartline status` loads the API
client and the renderer, not the lock client, the supervisor or asyncio. Those modules take
the few helpers they share (where the daemon is, a client for it, echo) from this one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from heartline import __version__
from heartline.errors import HeartlineError, UsageError

if TYPE_CHECKING:
    from heartline.api import Client

_COMMANDS = (
    "up", "down", "status", "top", "report", "attach", "start", "stop", "restart", "signal",
    "logs", "reload", "reopen-logs", "run", "systemd-unit", "init", "lock", "locks", "lockd",
    "hosts", "place", "rolling", "move", "lab", "chaos",
)  # fmt: skip

# Exit codes beyond the ones the errors carry (see heartline.errors).
EXIT_INTERRUPTED = 130
EXIT_USAGE = 2

#: What a command runs: its parsed arguments in, its exit code out (None for 0).
Handler = Callable[[argparse.Namespace], int | None]


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
        passed: list[str] | None = None
        if command == "chaos":
            # `chaos check` and `chaos proxy` take their own options (they also run as
            # modules): everything after the word goes to them untouched.
            at = argv.index("chaos") + 1
            if at < len(argv) and argv[at] in ("check", "proxy"):
                argv, passed = argv[: at + 1], argv[at + 1 :]
        if command in ("lock", "place", "rolling", "lab") and "--" in argv:
            # Everything after `--` is the command, untouched (argparse would otherwise let a
            # positional swallow the options that follow NAME).
            cut = argv.index("--")
            argv, tail = argv[:cut], argv[cut + 1 :]
        args = build_parser(command).parse_args(argv)
        if command in ("lock", "place", "rolling"):
            args.command = tail
        elif command == "lab":
            args.command = [*getattr(args, "command", []), *tail]
        if passed is not None:
            args.args = passed
        # -c/-s may come before or after the command; both parsers share the actions, so the
        # defaults are filled in here rather than by argparse (which would let one clobber
        # the other).
        for name in ("config", "socket"):
            if not hasattr(args, name):
                setattr(args, name, None)
        code = _handler(args.handler)(args)
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


def _handler(spec: str) -> Handler:
    """The function a "module:function" spec of build_parser names, its module imported now.

    __import__ rather than importlib.import_module: a console script has not loaded importlib,
    which would cost the cold start about a millisecond.
    """
    module, _, name = spec.partition(":")
    found: Handler = getattr(__import__(f"heartline.cli.{module}", fromlist=[name]), name)
    return found


# --- what the commands share ------------------------------------------------------------
# Here rather than in a module of their own: every command that talks to the daemon needs them,
# and one module fewer to find and load is a tenth of a millisecond of each cold call.
def config_path(args: argparse.Namespace) -> str:
    from heartline.config import default_config_path

    return str(args.config or default_config_path())


def socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    if os.environ.get("HEARTLINE_SOCKET"):
        return os.environ["HEARTLINE_SOCKET"]
    from heartline.config import default_run_dir, socket_from_config

    path = config_path(args)
    if args.config or os.environ.get("HEARTLINE_CONFIG") or os.path.exists(path):
        return socket_from_config(path)
    return os.path.join(default_run_dir(), "heartline.sock")


def client(args: argparse.Namespace) -> Client:
    from heartline.api import Client

    return Client(socket_path(args))


def echo(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# --- option values -------------------------------------------------------------------------
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


def _max_restarts(text: str) -> str:
    """--max-restarts: a whole number, or ``forever`` (checked here: importing heartline run's
    module would load asyncio into every command's cold start)."""
    if text == "forever" or (text.isascii() and text.isdigit() and len(text) < 10):
        return text
    raise argparse.ArgumentTypeError(f"expected a number of restarts or 'forever', got {text!r}")


def _lab_hosts(text: str) -> int:
    """`lab up N`: a number of hosts, 1 to 64 (heartline.cluster's MAX_HOSTS, not imported
    here: the cold start stays without the lab's code)."""
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 64):
        raise argparse.ArgumentTypeError(f"N must be a number of hosts from 1 to 64, got {text!r}")
    return int(text)


def _nonnegative(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(text)


# --- the parser ----------------------------------------------------------------------------
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


def _lock_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        metavar="URL",
        default=None,
        help="heartline://HOST:PORT, heartlines://HOST:PORT (TLS) or etcd://HOST:PORT[,...] "
        "(etcds:// with TLS) (default: $HEARTLINE_LOCK_URL or heartline://127.0.0.1:7717)",
    )
    p.add_argument("--token-file", metavar="FILE", default=None,
                   help="lockd client token (default: $HEARTLINE_LOCK_TOKEN_FILE)")  # fmt: skip
    p.add_argument("--ca-file", metavar="FILE", default=None, help="CA bundle for TLS")
    p.add_argument(
        "--cert-file",
        metavar="FILE",
        default=None,
        help="etcds:// client certificate (default: $HEARTLINE_LOCK_CERT_FILE)",
    )
    p.add_argument(
        "--key-file",
        metavar="FILE",
        default=None,
        help="its private key, mode 600 (default: $HEARTLINE_LOCK_KEY_FILE)",
    )


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; with ``only``, just that subcommand's parser is built.

    Building every sub-parser costs several milliseconds of every cold call; a known
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

    # One scratch parser takes the arguments of every command not asked for (a new parser
    # each cost about 0.6 ms, twenty-odd times per cold call); "resolve" lets their options
    # repeat.
    scratch = _Parser(add_help=False, conflict_handler="resolve")

    def add(name: str, handler: str, text: str, *, daemon: bool = True) -> argparse.ArgumentParser:
        """A subcommand, run by ``handler`` ("module:function" in heartline.cli, imported only
        once this command is chosen); ``daemon`` ones talk to the daemon and take -c/-s."""
        if only in _COMMANDS and name != only:
            return scratch
        p = sub.add_parser(name, help=text, description=text, parents=[common] if daemon else [])
        p.set_defaults(handler=handler)
        return p

    p = add(
        "up", "_cmd_daemon:cmd_up", "Run the supervisor daemon (in the foreground unless --detach)."
    )
    p.add_argument("--detach", action="store_true", help="run in the background; return once ready")
    p = add("down", "_cmd_daemon:cmd_down", "Stop every program, then the daemon.")
    p.add_argument("-t", "--timeout", type=float, default=60.0, help="seconds to wait (60)")
    p = add(
        "attach", "_cmd_inside:cmd_attach", "Open a terminal on a program's backdoor (NAME or PID)."
    )
    p.add_argument("target", metavar="NAME|PID")
    p = add(
        "report",
        "_cmd_inside:cmd_report",
        "Print a report (stacks, tasks, process) of a program or pid.",
    )
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
    p = add(
        "top",
        "_cmd_inside:cmd_top",
        "Live CPU, memory, IO and descriptors per program (Ctrl-C ends).",
    )
    p.add_argument(
        "--sort",
        choices=["cpu", "rss", "read", "write", "fds", "restarts", "name"],
        default="cpu",
    )
    p.add_argument("--tree", action="store_true", help="also show each program's processes")
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.add_argument("--json", action="store_true", help="print the API's JSON (with --once)")
    p.add_argument("-i", "--interval", type=float, default=2.0, help="seconds between updates")
    p = add("status", "_cmd_control:cmd_status", "Show the state of programs.")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    for action, text in (
        ("start", "Start programs (NAME..., or `all`)."),
        ("stop", "Stop programs: stop signal to the group, SIGKILL after stop_timeout."),
        ("restart", "Stop then start programs."),
    ):
        p = add(action, f"_cmd_control:cmd_{action}", text)
        p.add_argument("names", nargs="*", metavar="NAME")
    p = add(
        "signal",
        "_cmd_control:cmd_signal",
        "Send signal SIG (HUP, USR1, 15...) to programs' main process.",
    )
    p.add_argument("sig", metavar="SIG")
    p.add_argument("names", nargs="*", metavar="NAME")
    p = add("logs", "_cmd_control:cmd_logs", "Print a program's captured output.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("-n", "--lines", type=_nonnegative, default=10, help="lines of history (10)")
    p.add_argument("--stderr", action="store_true", help="show stderr instead of stdout")
    add("reload", "_cmd_control:cmd_reload", "Read the config again and apply the difference.")
    add(
        "reopen-logs",
        "_cmd_control:cmd_reopen_logs",
        "Reopen every log file (after logrotate moved them).",
    )
    p = add(
        "run",
        "_run:cmd_run",
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
        "_cmd_lock:cmd_lock",
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
        "_cmd_lock:cmd_locks",
        "List cluster locks: holders (host, pid, since, token), waiters.",
        daemon=False,
    )
    _lock_client_options(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("hosts", "_cmd_cluster:cmd_hosts",
            "List the cluster's hosts: load, memory, holds, report age, state.")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--watch", action="store_true", help="keep the table updated (Ctrl-C ends)")
    p = add(
        "place",
        "_cmd_cluster:cmd_place",
        "Run a command on the best host of the cluster: heartline place [OPTIONS] -- CMD ARGS... "
        "Exits with the command's exit code (255: ssh could not reach the host).",
    )
    p.add_argument("--need", metavar="cpus=N,mem=SIZE", default="",
                   help="what the command needs (default cpus=1); charged on the host while "
                   "it runs")  # fmt: skip
    p.add_argument("--label", action="append", default=[], metavar="LABEL",
                   help="only hosts with this label (repeatable)")  # fmt: skip
    p.add_argument("--group", metavar="GROUP", default=None, help="only hosts of this group")
    p.add_argument("--explain", action="store_true",
                   help="print each candidate, its inputs, score, verdict (stderr)")  # fmt: skip
    p.add_argument("--print", dest="print_only", action="store_true",
                   help="only print the chosen host (no hold, nothing runs)")  # fmt: skip
    p = add(
        "rolling",
        "_cmd_cluster:cmd_rolling",
        "Run a command on each host of a group, one at a time, under a cluster lock, each host "
        "passing a health gate before the next starts: heartline rolling --group G [OPTIONS] "
        "-- CMD ARGS... Exit 16: stopped at a host.",
    )
    p.add_argument("--group", metavar="GROUP", required=True, help="the hosts, in its order")
    p.add_argument("--lock", metavar="NAME", default=None,
                   help="the cluster lock (default heartline-rolling-GROUP)")  # fmt: skip
    gate = p.add_mutually_exclusive_group()
    gate.add_argument("--check", metavar="URL", default=None,
                      help="the health gate: an HTTP URL ({host}: the host's address)")  # fmt: skip
    gate.add_argument("--check-exec", metavar="SHELL-CMD", default=None,
                      help="the health gate: a shell command run on the host")  # fmt: skip
    p.add_argument("--healthy", metavar="N", type=int, default=3,
                   help="gate passes in a row a host needs (3)")  # fmt: skip
    p.add_argument("--timeout", metavar="DURATION", default="60s",
                   help="how long a host's gate may take to pass (60s)")  # fmt: skip
    p.add_argument("--pause", metavar="DURATION", default="0s", help="between two hosts (0s)")
    p.add_argument("--order", choices=["group", "load"], default="group",
                   help="the group's order (default), or the least loaded host first")  # fmt: skip
    p.add_argument("--notify", metavar="URL", default=None,
                   help="POST each event (started, host done, failures, finished) as "
                   "JSON")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue the stopped roll (kept in the backend) from the host it "
                   "stopped at")  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    p = add(
        "move",
        "_cmd_cluster:cmd_move",
        "Hand a singleton program over to another host: stop it where it runs, start it on "
        "HOST (default: the first host standing by). Exit 17: it could not be moved.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--to", metavar="HOST", default=None, help="the host to run it on")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p = add(
        "lab",
        "_cmd_lab:cmd_status",
        "Lab hosts: a cluster of namespaces on this machine, each host with its own "
        "address, hostname, processes, sshd and daemon (needs root).",
        daemon=False,
    )
    if only == "lab" or only not in _COMMANDS:
        _lab_commands(p)
    p = add(
        "chaos",
        "_cmd_chaos:cmd_list_faults",
        "Crash-recovery experiments: apply faults that always undo, measure time to detect "
        "and to recover (exit 20 deviated, 21 errored, 22 aborted, 24 refused).",
        daemon=False,
    )
    if only == "chaos" or only not in _COMMANDS:
        _chaos_commands(p)
    p = add("lockd", "_cmd_lock:cmd_lockd", "Run the lock server in the foreground.", daemon=False)
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
    add(
        "systemd-unit",
        "_cmd_daemon:cmd_systemd_unit",
        "Print a systemd unit that runs the heartline daemon.",
    )
    p = add(
        "init",
        "_cmd_daemon:cmd_init",
        "Print a commented sample heartline.toml (every key, its default).",
        daemon=False,
    )
    p.add_argument("--out", metavar="FILE", help="write it to FILE instead of printing it")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    return parser


def _chaos_commands(chaos: argparse.ArgumentParser) -> None:
    sub = chaos.add_subparsers(title="chaos commands", metavar="COMMAND", parser_class=_Parser,
                               dest="chaos_command")  # fmt: skip
    sub.required = True

    def add(name: str, text: str, *, own_help: bool = True) -> argparse.ArgumentParser:
        # check and proxy parse their own options (and --help): they also run as modules.
        p = sub.add_parser(name, help=text, description=text, add_help=own_help)
        p.set_defaults(handler=f"_cmd_chaos:cmd_{name.replace('-', '_')}")
        return p

    p = add("run", "Run an experiment: the steady state, each fault (undone however the run "
            "ends), probes every resolution, time to detect and to recover.")  # fmt: skip
    p.add_argument("experiment", metavar="EXPERIMENT.toml")
    p.add_argument("--dry-run", action="store_true",
                   help="print the targets, probes and exact commands; change nothing")  # fmt: skip
    p.add_argument("--json", action="store_true",
                   help="a JSON object per line: events as they come, then the result")  # fmt: skip
    p.add_argument("--report", metavar="DIR", default=None,
                   help="write DIR/report.html (self-contained) and DIR/result.json")  # fmt: skip
    p.add_argument("--allow-host-crash", metavar="HOST", action="append", default=[],
                   help="allow a crash fault to crash this real host's kernel (sysrq c); "
                   "name every such host")  # fmt: skip
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help="seed for the random picks (pick = \"one\"), to repeat a run")  # fmt: skip
    p.add_argument("--journal", metavar="DIR", default=None,
                   help="where the run's journal of applied faults lives (default: "
                   "RUN_DIR/chaos); `chaos undo --journal DIR` reads it")  # fmt: skip
    p = add("validate", "Check an experiment file; print what is wrong with file, line and key.")
    p.add_argument("experiment", metavar="EXPERIMENT.toml")
    p = add("list-faults", "The fault kinds, what each hits and how each is undone.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("undo", "Undo what crashed runs left applied (from their journals).")
    p.add_argument("--journal", metavar="DIR", default=None,
                   help="the journals' directory (default: RUN_DIR/chaos)")  # fmt: skip
    p = add("check", "Check a lock workload's history: no two holders at once, growing "
            "tokens, stale writes rejected, no command after its runner died "
            "(exit 23).", own_help=False)  # fmt: skip
    p = add("proxy", "Run a fault proxy in front of a TCP service (toxics on stdin).",
            own_help=False)  # fmt: skip


def _lab_commands(lab: argparse.ArgumentParser) -> None:
    sub = lab.add_subparsers(title="lab commands", metavar="COMMAND", parser_class=_Parser,
                             dest="lab_command")  # fmt: skip
    sub.required = True

    def add(name: str, text: str, *, host: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(handler=f"_cmd_lab:cmd_{name}")
        if host:
            p.add_argument("host", metavar="HOST", help="a lab host (lab1, lab2, ...)")
        p.add_argument("--dir", metavar="DIR", default=None,
                       help="the lab's directory (default: $HEARTLINE_LAB_DIR, else "
                       "/run/heartline-lab as root)")  # fmt: skip
        return p

    p = add("up", "Make N lab hosts (1 to 64) and the lab's backend (its lockd, or an etcd); "
            "write the lab's files (ssh_config, known_hosts, heartline.toml) into DIR.",
            host=False)  # fmt: skip
    p.add_argument("n", metavar="N", type=_lab_hosts, help="how many hosts")
    p.add_argument("--backend", choices=("lockd", "etcd"), default="lockd",
                   help="the lab's cluster backend: lockd with a token (the default), or etcd "
                   "with TLS and client certificates")  # fmt: skip
    p.add_argument(
        "--config",
        dest="programs",
        metavar="FILE",
        default=None,
        help="run FILE's [programs] (and [defaults]) on every host's daemon",
    )
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="give up when the hosts are not ready by then (30)")  # fmt: skip
    add("down", "Remove every namespace, link, process and file of the lab.", host=False)
    p = add("status", "The lab's hosts: address, state (up, cut, crashed), pids.", host=False)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add(
        "exec",
        "Run a command inside a host (its network, pid, mount and UTS namespaces): "
        "heartline lab exec HOST -- CMD ARGS... Exits with its exit code.",
    )
    # Not REMAINDER: it would swallow --dir after HOST; a command with options goes after --.
    p.add_argument("command", nargs="*", metavar="-- CMD ARGS")
    add(
        "crash",
        "Crash a host: every process of it killed at once (SIGKILL to its init); "
        "`backend`: SIGKILL the lab's lockd or etcd.",
    )
    add(
        "boot",
        "Bring a crashed host back: new init, its sshd and daemon started again; "
        "`backend`: start the lab's lockd again (its journal hands each lock back), or its "
        "etcd (on its data directory).",
    )
    add("cut", "Cut a host off the lab network (its link down).")
    add("heal", "Plug a cut host back in (its link up).")
