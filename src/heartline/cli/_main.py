"""Commands of the `heartline` CLI.

Imports stay lazy: a cold `heartline status` loads click, the config loader and the small API
client, nothing else.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from heartline.errors import HeartlineError, UsageError

# Exit codes beyond the ones the errors carry (see heartline.errors).
EXIT_INTERRUPTED = 130


class _Obj:
    def __init__(self, config: str | None, socket: str | None) -> None:
        self.config_arg = config
        self.socket_arg = socket

    def config_path(self) -> str:
        from heartline.config import default_config_path

        return self.config_arg or default_config_path()

    def socket_path(self) -> str:
        if self.socket_arg:
            return self.socket_arg
        if os.environ.get("HEARTLINE_SOCKET"):
            return os.environ["HEARTLINE_SOCKET"]
        from heartline.config import load_config
        from heartline.config._loader import default_run_dir

        path = self.config_path()
        if self.config_arg or os.environ.get("HEARTLINE_CONFIG") or os.path.exists(path):
            return load_config(path).daemon.socket_path
        return os.path.join(default_run_dir(), "heartline.sock")

    def client(self) -> Any:
        from heartline.api import Client

        return Client(self.socket_path())


def fail(err: HeartlineError) -> NoReturn:
    click.echo(f"heartline: {err}", err=True)
    sys.exit(err.exit_code)


def main() -> None:
    try:
        cli.main(prog_name="heartline", standalone_mode=False)
    except HeartlineError as e:
        fail(e)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    sys.exit(0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    metavar="FILE",
    help="Config file (default: $HEARTLINE_CONFIG, ./heartline.toml, "
    "/etc/heartline/heartline.toml).",
)
@click.option(
    "-s",
    "--socket",
    metavar="PATH",
    help="Control socket of the daemon (default: from the config).",
)
@click.version_option(package_name="heartline", prog_name="heartline")
@click.pass_context
def cli(ctx: click.Context, config: str | None, socket: str | None) -> None:
    """Keep programs running, restart them on crash, and show what they do."""
    ctx.obj = _Obj(config, socket)


# --- daemon ------------------------------------------------------------------------------
@cli.command()
@click.option(
    "-c", "--config", "config_opt", metavar="FILE", help="Config file (same as the global -c)."
)
@click.option("--detach", is_flag=True, help="Run in the background; return once it is ready.")
@click.pass_obj
def up(obj: _Obj, config_opt: str | None, detach: bool) -> None:
    """Run the supervisor daemon (in the foreground unless --detach)."""
    from heartline.config import load_config

    if config_opt:
        obj.config_arg = config_opt
    path = os.path.abspath(obj.config_path())
    config = load_config(path)
    if detach:
        _detach(path, config.daemon.log_dir)
        return
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

    run_daemon(path, ready=ready)


def _detach(path: str, log_dir: str) -> None:
    import subprocess

    os.makedirs(log_dir, mode=0o750, exist_ok=True)
    log_path = os.path.join(log_dir, "heartline.log")
    r, w = os.pipe()
    with open(log_path, "ab") as logf:
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
        click.echo(f"heartline daemon started (pid {proc.pid}); log: {log_path}")
        return
    code = proc.wait()
    with open(log_path, "rb") as f:
        f.seek(max(0, os.path.getsize(log_path) - 4096))
        last = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    reason = last[-1] if last else f"exit code {code}"
    click.echo(f"heartline: the daemon did not start: {reason}", err=True)
    sys.exit(code or 1)


@cli.command()
@click.option(
    "-t",
    "--timeout",
    default=60.0,
    show_default=True,
    help="Seconds to wait for the daemon to exit.",
)
@click.pass_obj
def down(obj: _Obj, timeout: float) -> None:
    """Stop every program, then the daemon."""
    import select

    with obj.client() as c:
        pid = c.get("/v1/status")["daemon"]["pid"]
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = -1
        c.post("/v1/shutdown", {})
    if pidfd >= 0:
        readable, _, _ = select.select([pidfd], [], [], timeout)
        os.close(pidfd)
        if not readable:
            click.echo(
                f"heartline: the daemon (pid {pid}) is still stopping after {timeout:g}s", err=True
            )
            sys.exit(1)
    click.echo("heartline daemon stopped")


# --- status and control ------------------------------------------------------------------
@cli.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@click.pass_obj
def status(obj: _Obj, names: tuple[str, ...], as_json: bool) -> None:
    """Show the state of programs."""
    from heartline.cli._render import print_json, status_table

    with obj.client() as c:
        doc = c.get("/v1/status", name=list(names)) if names else c.get("/v1/status")
    if as_json:
        print_json(doc)
    else:
        click.echo(status_table(doc["programs"]), nl=False)


def _control(obj: _Obj, action: str, names: tuple[str, ...]) -> None:
    from heartline.cli._render import control_lines

    if not names:
        raise UsageError(f"name the programs to {action} (or `all`)")
    with obj.client() as c:
        doc = c.post(f"/v1/{action}", {"names": list(names)})
    click.echo(control_lines(action, doc), nl=False)


@cli.command()
@click.argument("names", nargs=-1)
@click.pass_obj
def start(obj: _Obj, names: tuple[str, ...]) -> None:
    """Start programs (NAME..., or `all`)."""
    _control(obj, "start", names)


@cli.command()
@click.argument("names", nargs=-1)
@click.pass_obj
def stop(obj: _Obj, names: tuple[str, ...]) -> None:
    """Stop programs: stop signal to the group, SIGKILL after stop_timeout."""
    _control(obj, "stop", names)


@cli.command()
@click.argument("names", nargs=-1)
@click.pass_obj
def restart(obj: _Obj, names: tuple[str, ...]) -> None:
    """Stop then start programs."""
    _control(obj, "restart", names)


@cli.command("signal")
@click.argument("sig")
@click.argument("names", nargs=-1)
@click.pass_obj
def signal_cmd(obj: _Obj, sig: str, names: tuple[str, ...]) -> None:
    """Send signal SIG (HUP, USR1, 15...) to the main process of programs."""
    if not names:
        raise UsageError("name the programs to signal (or `all`)")
    with obj.client() as c:
        doc = c.post(
            "/v1/signal", {"names": list(names), "signal": int(sig) if sig.isdigit() else sig}
        )
    for r in doc["results"]:
        click.echo(f"{r['name']}: {'signalled' if r['sent'] else 'not running'}")


@cli.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output.")
@click.option(
    "-n",
    "--lines",
    default=10,
    show_default=True,
    type=click.IntRange(0, 100_000),
    help="Lines of history.",
)
@click.option("--stderr", is_flag=True, help="Show stderr instead of stdout.")
@click.pass_obj
def logs(obj: _Obj, name: str, follow: bool, lines: int, stderr: bool) -> None:
    """Print a program's captured output."""
    from heartline.api import Client

    query: dict[str, Any] = {"stream": "stderr" if stderr else "stdout", "lines": lines}
    out = sys.stdout.buffer
    with obj.client() as c:
        if not follow:
            out.write(c.get(f"/v1/logs/{name}", **query))
            return
        for chunk in c.stream(Client.url(f"/v1/logs/{name}", follow="true", **query)):
            out.write(chunk)
            out.flush()


@cli.command()
@click.pass_obj
def reload(obj: _Obj) -> None:
    """Read the config again and apply the difference (only changed programs are touched)."""
    with obj.client() as c:
        diff = c.post("/v1/reload", {})
    for key in ("added", "removed", "changed"):
        if diff[key]:
            click.echo(f"{key}: {', '.join(diff[key])}")
    if not any(diff.values()):
        click.echo("no changes")


@cli.command("reopen-logs")
@click.pass_obj
def reopen_logs(obj: _Obj) -> None:
    """Reopen every log file (after logrotate moved them)."""
    with obj.client() as c:
        c.post("/v1/reopen-logs", {})
    click.echo("log files reopened")


# --- one command, no config ----------------------------------------------------------------
@cli.command(context_settings={"ignore_unknown_options": False})
@click.option(
    "--restart",
    "policy",
    type=click.Choice(["always", "on-failure", "never"]),
    default="on-failure",
    show_default=True,
)
@click.option(
    "--max-restarts",
    type=click.IntRange(0),
    default=None,
    help="Stop restarting after N restarts (default: no limit).",
)
@click.option(
    "--backoff",
    default="100ms..30s",
    show_default=True,
    metavar="INITIAL[..MAX]",
    help="Back-off between consecutive quick failures.",
)
@click.option(
    "--stop-timeout",
    default="10s",
    show_default=True,
    help="Grace after the stop signal before SIGKILL.",
)
@click.option("--shell", is_flag=True, help="Run CMD through /bin/sh -c.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(  # noqa: PLR0917 - click passes options positionally
    policy: str,
    max_restarts: int | None,
    backoff: str,
    stop_timeout: str,
    shell: bool,
    command: tuple[str, ...],
) -> None:
    """Supervise one command in the foreground: heartline run [OPTIONS] -- CMD ARGS...

    Exits with the command's exit code once it stops restarting it (128+N when killed by
    signal N, 127 when it could not be started).
    """
    from heartline.cli._run import run_one

    sys.exit(
        run_one(
            list(command),
            policy=policy,
            max_restarts=max_restarts,
            backoff=backoff,
            stop_timeout=stop_timeout,
            shell=shell,
        )
    )


@cli.command("systemd-unit")
@click.option(
    "-c", "--config", "config_opt", metavar="FILE", help="Config file the unit runs with."
)
@click.pass_obj
def systemd_unit(obj: _Obj, config_opt: str | None) -> None:
    """Print a systemd unit file that runs the heartline daemon."""
    from heartline.cli._render import systemd_unit_text

    config = os.path.abspath(config_opt or obj.config_arg or "/etc/heartline/heartline.toml")
    exe = (
        os.path.abspath(sys.argv[0])
        if os.path.basename(sys.argv[0]) == "heartline"
        else f"{sys.executable} -m heartline"
    )
    click.echo(systemd_unit_text(exe, config), nl=False)
