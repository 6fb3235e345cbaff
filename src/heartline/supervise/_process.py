"""Spawning a program and collecting its exit, without a thread or a poll loop.

Why pidfd: a pidfd becomes readable when its process exits, so the event loop learns of every
death at once with one file descriptor per child and no SIGCHLD handler, no waitpid() loop and
no watcher thread (asyncio's default child watcher on 3.11 runs one thread per child). The pidfd
also pins the identity of the process: signals sent through it can never hit a recycled pid.
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from heartline._util import OWN_CHILDREN
from heartline.errors import SupervisorError
from heartline.supervise._policy import ExitInfo

_CLD_EXITED = 1
_CLD_KILLED = 2
_CLD_DUMPED = 3


@dataclass
class Spawned:
    pid: int
    pidfd: int
    stdout: int | None
    stderr: int | None


class SpawnFailed(SupervisorError):
    """The program could not be started (exec failed, bad user, bad cwd)."""


def _identity(
    user: str | None, group: str | None
) -> tuple[int | None, int | None, list[int] | None]:
    """The uid, gid and supplementary groups to run as (None: the daemon's own)."""
    if user is None and group is None:
        return None, None, None
    if os.geteuid() != 0:
        raise SpawnFailed("user/group need the daemon to run as root")
    uid = gid = None
    groups: list[int] | None = None
    pw = _user(user) if user is not None else None
    if group is not None:
        try:
            gid = (grp.getgrnam(group) if not group.isdigit() else grp.getgrgid(int(group))).gr_gid
        except KeyError:
            raise SpawnFailed(f"no such group {group!r}") from None
    if pw is not None:
        uid = pw.pw_uid
        if gid is None:
            gid = pw.pw_gid
        # The groups the user is a member of, with the configured group as the primary one:
        # initgroups(3) as su -g does it. The user's own primary group is kept only when
        # /etc/group lists the user in it; otherwise `group =` would not take it away.
        groups = os.getgrouplist(pw.pw_name, gid)
    return uid, gid, groups


def _user(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    except KeyError:
        raise SpawnFailed(f"no such user {user!r}") from None


def identity_env(user: str | None) -> dict[str, str]:
    """HOME, USER and LOGNAME of the user a program runs as (empty for the daemon's own).

    They go between the daemon's environment and the program's own ``env``: a program run as
    www-data must not get root's HOME, but its config can still set one.
    """
    if user is None:
        return {}
    try:
        pw = _user(user)
    except SpawnFailed:
        return {}  # spawn() reports the unknown user
    return {"USER": pw.pw_name, "LOGNAME": pw.pw_name, "HOME": pw.pw_dir}


def spawn(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: str | None = None,
    user: str | None = None,
    group: str | None = None,
    umask: int | None = None,
    capture: bool = True,
    merge_stderr: bool = False,
    discard: bool = False,
) -> Spawned:
    """Start ``argv`` in a new session (so its process group can be signalled as one).

    Returns the pid, a pidfd and the read ends of its stdout/stderr pipes (non-blocking), or
    raises SpawnFailed with a one-line reason. ``capture=False`` lets the child inherit ours.
    """
    uid, gid, groups = _identity(user, group)
    out_r = out_w = err_r = err_w = -1
    try:
        if capture:
            try:
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                if not merge_stderr:
                    err_r, err_w = os.pipe2(os.O_CLOEXEC)
            except OSError as e:
                raise SpawnFailed(f"cannot create output pipes: {e.strerror}") from None
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_w if capture else (subprocess.DEVNULL if discard else None),
                stderr=(
                    (subprocess.STDOUT if merge_stderr else err_w)
                    if capture
                    else (subprocess.DEVNULL if discard else None)
                ),
                cwd=cwd,
                env=env,
                user=uid,
                group=gid,
                extra_groups=groups,
                umask=-1 if umask is None else umask,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            what = argv[0] if e.filename in (None, argv[0]) or cwd is None else f"cwd {cwd}"
            raise SpawnFailed(f"{what}: {e.strerror or e}") from None
        except (subprocess.SubprocessError, ValueError) as e:
            raise SpawnFailed(str(e)) from None
        # The pid is ours to reap, not Popen's: mark the Popen as done so neither its
        # destructor nor its module-level cleanup ever waits on (and steals) this child.
        proc.returncode = 0
        pid = proc.pid
        OWN_CHILDREN.add(pid)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as e:  # pragma: no cover - only under fd exhaustion
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise SpawnFailed(f"pidfd_open: {e.strerror}") from None
        if out_r >= 0:
            os.set_blocking(out_r, False)
        if err_r >= 0:
            os.set_blocking(err_r, False)
        result = Spawned(pid, pidfd, out_r if capture else None, err_r if err_r >= 0 else None)
        out_r = err_r = -1
        return result
    finally:
        for fd in (out_w, err_w, out_r, err_r):
            if fd >= 0:
                os.close(fd)


def reap(pidfd: int, before_reap: Callable[[], object] = lambda: None) -> ExitInfo | None:
    """Collect the exit of the process behind ``pidfd``; None if it has not exited.

    ``before_reap`` runs once the exit is known but while the process is still a zombie: its
    pid, which is also its process group id, cannot be recycled yet, so that is the moment to
    signal what is left of its group.

    A process adopted after a daemon restart is not our child: its status went to its new
    parent, so the exit is reported as ``unknown``.
    """
    flags = os.WEXITED | os.WNOHANG
    try:
        res = os.waitid(os.P_PIDFD, pidfd, flags | os.WNOWAIT)
    except ChildProcessError:
        before_reap()
        return ExitInfo(
            "unknown", detail="exit status unavailable (adopted after a daemon restart)"
        )
    except InterruptedError:
        return None
    if res is None or res.si_code not in (_CLD_EXITED, _CLD_KILLED, _CLD_DUMPED):
        return None  # not exited (stopped/continued notifications are not exits)
    before_reap()
    os.waitid(os.P_PIDFD, pidfd, flags)
    OWN_CHILDREN.discard(res.si_pid)
    if res.si_code == _CLD_EXITED:
        return ExitInfo("exit", code=res.si_status)
    return ExitInfo("signal", signal=res.si_status)
