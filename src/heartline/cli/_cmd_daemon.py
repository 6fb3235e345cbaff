"""The daemon's life: `up` (in the foreground, or `--detach`ed until it says it is ready), `down`,
and the files that set one up, `init` (a sample config) and `systemd-unit`.

`up` loads heartline.daemon only once the config has been read, and `up --detach` never does:
it starts `heartline up` again in the background and waits on a pipe for its first word.
"""

from __future__ import annotations

import argparse
import os
import sys

from heartline.cli._main import client, config_path, echo
from heartline.errors import HeartlineError, UsageError


def cmd_up(args: argparse.Namespace) -> int | None:
    from heartline.config import load_config

    path = os.path.abspath(config_path(args))
    config = load_config(path)
    if args.detach:
        return _detach(path, config.daemon.log_dir)
    from heartline.daemon import run_daemon, setup_logging

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
        echo(f"heartline daemon started (pid {proc.pid}); log: {log_path}\n")
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

    with client(args) as c:
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
    echo("heartline daemon stopped\n")
    return 0


def cmd_systemd_unit(args: argparse.Namespace) -> None:
    from heartline.cli._render import systemd_unit_text

    config = os.path.abspath(args.config or "/etc/heartline/heartline.toml")
    exe = sys.argv[0]
    if os.path.basename(exe) == "heartline":
        exe = os.path.abspath(exe)
    else:
        exe = f"{sys.executable} -m heartline"
    echo(systemd_unit_text(exe, config))


def cmd_init(args: argparse.Namespace) -> int:
    """Print or write the commented sample configuration."""
    from heartline.config import SAMPLE

    if args.out is None:
        echo(SAMPLE)
        return 0
    try:
        with open(args.out, "x" if not args.force else "w") as f:
            f.write(SAMPLE)
    except FileExistsError:
        raise UsageError(f"{args.out} exists; pass --force to overwrite it") from None
    except OSError as e:
        raise UsageError(f"cannot write {args.out}: {e.strerror}") from None
    echo(f"wrote {args.out}; start it with: heartline -c {args.out} up\n")
    return 0
