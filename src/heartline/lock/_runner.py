"""`heartline lock NAME -- CMD`: run a command only while holding a cluster lock.

Three processes, so the command never runs without the lock, whatever happens to the runner:

    runner (holds the lock: connection, lease renewal, signals)
      └─ guard (forked before the lock is asked for; single-threaded)
           └─ command (its own process group; HEARTLINE_LOCK_NAME / _TOKEN in its env)

* The guard starts the command once the runner holds the lock, and it keeps a copy of the
  runner's connection to the server. If the runner dies (even by SIGKILL) the guard sees its
  control socket close, stops the command's group (TERM, then KILL before the lease could end),
  and only then exits -- closing the last copy of the connection, which is when lockd lets the
  lock go. So the next holder starts after the command is gone, not before.
* The runner tells the guard how long the lease is proven for. If the runner is frozen
  (SIGSTOP) and stops renewing, the guard stops the command before that deadline on its own.
* If the runner cannot renew the lease, it has the guard stop the command (TERM -> grace ->
  KILL) so that it is dead before the lease can expire on the server, and exits EXIT_LOCK_LOST.
  So does a runner that was frozen while the guard stopped the command on its own.

Every line the runner writes (its own and the lock backends' warnings) is one line starting
with ``heartline: ``, as the CLI's errors do.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import sys
import time

from heartline.errors import (
    EXIT_CANNOT_START,
    EXIT_GUARD_VANISHED,
    EXIT_LOCK_LOST,
    EXIT_RUNNER_USAGE,
    LockLost,
)
from heartline.lock._lease import HELD, Lease, frozen_for, stop_grace
from heartline.lock._lock import Lock

#: Reserved exit codes (the command's own code is passed through otherwise).
# The runner's own outcomes (heartline.errors.EXIT_CODES holds the one table).
EXIT_USAGE = EXIT_RUNNER_USAGE
EXIT_INTERNAL = EXIT_GUARD_VANISHED
EXIT_NOT_FOUND = EXIT_CANNOT_START

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Messages on the runner <-> guard socket (SOCK_SEQPACKET, so each is one datagram).
_RUN, _UNTIL, _STOP, _PID, _EXIT = b"R", b"U", b"S", b"P", b"X"
#: Why the guard stopped the command, after the status in its exit report (and then when it
#: did, on the monotonic clock both processes share): the runner asked (or is gone), or the
#: lease's deadline came with no renewal news from the runner.
_ASKED, _DEADLINE = b"A", b"D"
_PREFIX = "heartline: "


# --- the guard ----------------------------------------------------------------------------
def _guard(ctl: socket.socket, argv: list[str], grace: float) -> int:
    """Runs in the forked guard process; returns its exit status."""
    msg, fds, _flags, _addr = socket.recv_fds(ctl, 4096, 1)
    if not msg.startswith(_RUN):
        return 0  # the runner did not get the lock (or died): nothing to run
    held_fds = list(fds)  # a copy of the lock connection: kept open until the command is gone
    until, env_blob = struct.unpack("!d", msg[1:9])[0], msg[9:]
    env = dict(os.environ)
    for item in env_blob.split(b"\0"):
        key, _, value = item.partition(b"=")
        if key:
            env[key.decode()] = value.decode()
    try:
        # posix_spawn rather than subprocess: a cold `heartline lock` should not pay for
        # importing subprocess; setpgroup=0 gives the command a process group of its own.
        pid = os.posix_spawnp(argv[0], argv, env, setpgroup=0)
    except OSError as e:
        sys.stderr.write(f"{_PREFIX}cannot run {argv[0]!r}: {e.strerror}\n")
        ctl.send(_EXIT + struct.pack("!i", -1))
        return 0
    pgid = pid
    tty = _give_terminal(pgid)
    ctl.send(_PID + struct.pack("!i", pgid))
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(ctl, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    # The runner passes on renewals in time to keep this deadline ahead (see _hold_and_run).
    lead = grace + 0.1
    stopping_at: float | None = None  # when TERM was sent
    why = b""  # _ASKED or _DEADLINE once the command is being stopped
    killed = False
    runner_gone = False
    while True:
        now = time.monotonic()
        if stopping_at is None and now >= until - lead:
            # No renewal news from the runner in time (frozen or dead): stop the command so it
            # is gone before the lease can end on the server.
            _signal_group(pgid, signal.SIGTERM)
            stopping_at = now
            why = _DEADLINE
        kill_at = None if stopping_at is None else min(stopping_at + grace, until - 0.05)
        if kill_at is not None and not killed and now >= kill_at:
            _signal_group(pgid, signal.SIGKILL)
            killed = True
        if stopping_at is None:
            timeout: float | None = until - lead - now
        else:
            timeout = None if killed or kill_at is None else kill_at - now
        events = poller.poll(None if timeout is None else max(0.0, timeout) * 1000 + 1)
        for fd, _ev in events:
            if fd == pidfd:
                status = _reap(pid)
                _signal_group(pgid, signal.SIGKILL)  # nothing of it may outlive the lock
                _take_terminal_back(tty)
                if not runner_gone:
                    with contextlib.suppress(OSError):
                        report = struct.pack("!i", status)
                        if stopping_at is not None:
                            report += why + struct.pack("!d", stopping_at)
                        ctl.send(_EXIT + report)
                for held in held_fds:
                    os.close(held)
                return 0
            data = b""
            with contextlib.suppress(OSError):
                data, fds, _flags, _addr = socket.recv_fds(ctl, 64, 1)
                if fds:  # the runner reconnected: hold the new connection instead
                    for held in held_fds:
                        os.close(held)
                    held_fds = list(fds)
            if not data:
                if not runner_gone:
                    runner_gone = True
                    poller.unregister(ctl)
                    if stopping_at is None:
                        _signal_group(pgid, signal.SIGTERM)
                        stopping_at = time.monotonic()
                        why = _ASKED
            elif data[:1] == _UNTIL:
                until = struct.unpack("!d", data[1:9])[0]
            elif data[:1] == _STOP and stopping_at is None:
                _signal_group(pgid, signal.SIGTERM)
                stopping_at = time.monotonic()
                why = _ASKED


def _give_terminal(pgid: int) -> int:
    """If we run in the foreground of a terminal, hand it to the command's group, as a shell
    does: in a group of its own but in the background, a command that reads the terminal would
    be stopped by SIGTTIN (and Ctrl-C now reaches it directly). Returns our group, or -1."""
    try:
        if not os.isatty(0) or os.tcgetpgrp(0) != os.getpgrp():
            return -1
        os.tcsetpgrp(0, pgid)
    except OSError:
        return -1
    # It may have read the terminal before it was given it, and been stopped for that.
    _signal_group(pgid, signal.SIGCONT)
    return os.getpgrp()


def _take_terminal_back(ours: int) -> None:
    if ours < 0:
        return
    # From the background, tcsetpgrp would earn us a SIGTTOU; ignore it meanwhile.
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(0, ours)
    finally:
        signal.signal(signal.SIGTTOU, old)


def _ignore(_signum: int, _frame: object) -> None:
    pass


def _reap(pid: int) -> int:
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return code if code >= 0 else 128 - code


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# --- the runner ---------------------------------------------------------------------------
def run_locked(
    name: str,
    argv: list[str],
    *,
    url: str | None,
    wait: float | None,
    limit: int,
    ttl: float,
    token_file: str | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> int:
    """Hold ``name``, run ``argv``, release; returns the exit code for the runner to exit with.
    Raises the lock errors (LockTimeout, LockServerUnreachable, LockAuthError, UsageError)
    when the command never ran."""
    grace = stop_grace(ttl)
    lock = Lock(name, url=url, ttl=ttl, limit=limit, wait=wait, token_file=token_file,
                ca_file=ca_file, cert_file=cert_file, key_file=key_file,
                label=" ".join(argv))  # fmt: skip
    # Opened now: a bad URL, token file or certificate stops us before the guard is forked.
    _ = lock.backend
    log_to_stderr_when_used()
    here, there = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the guard
        here.close()
        for sig in _FORWARDED:
            # The runner forwards these; the guard must outlive them. A handler, not SIG_IGN:
            # handlers are reset by exec, an ignored signal would stay ignored in the command.
            signal.signal(sig, _ignore)
        status = 1
        try:
            status = _guard(there, argv, grace)
        finally:
            os._exit(status)
    there.close()
    guard_pidfd = os.pidfd_open(pid)
    try:
        return _hold_and_run(lock, here, guard_pidfd)
    finally:
        here.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        os.close(guard_pidfd)
        lock.close()


def log_to_stderr_when_used() -> None:
    """The lock backends' warnings go to stderr as the runner's own lines are written.

    Without importing logging now if nobody has (about 5 ms of every cold start): the lockd
    client imports it only when it first logs, and sets this up then.
    """
    if "logging" in sys.modules:
        _log_to_stderr()
    else:
        from heartline.lock import _lockd

        _lockd.before_first_log(_log_to_stderr)


def _log_to_stderr() -> None:
    import logging

    class OneLine(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            text = record.getMessage()
            if record.exc_info is not None and record.exc_info[1] is not None:
                text = f"{text}: {record.exc_info[1]!r}"  # no traceback: one line
            return _PREFIX + " ".join(text.splitlines())

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLine())
    logger = logging.getLogger("heartline.lock")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def _say(text: str) -> None:
    sys.stderr.write(f"{_PREFIX}{text}\n")


def _hold_and_run(lock: Lock, ctl: socket.socket, guard_pidfd: int) -> int:
    lease = lock.acquire()
    conn = lock.backend.session_connection()
    sock_fd = _fileno(conn)
    env = f"HEARTLINE_LOCK_NAME={lock.name}\0HEARTLINE_LOCK_TOKEN={lease.token}".encode()
    socket.send_fds(ctl, [_RUN + struct.pack("!d", lease.valid_until) + env],
                    [sock_fd] if sock_fd >= 0 else [])  # fmt: skip
    pgid = 0
    forwarded: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        forwarded.append(signum)
        if pgid:
            _signal_group(pgid, signum)

    old = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    # Every change of the lease (a renewal, a loss) wakes the loop below; the changes only time
    # makes (SUSPECT, LOST) it sees by waking at the lease's own deadline, and it measures how
    # late that wake-up was to tell a frozen process from a lost connection.
    lease.on_state(lambda _state: _poke(wake_w))
    poller = select.poll()
    poller.register(ctl, select.POLLIN)
    poller.register(guard_pidfd, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    told = lease.valid_until
    stop_reason: LockLost | None = None
    late = 0.0  # how much later than it asked the last wait ended: the process did not run
    due: float | None = None  # when the last wait was to end, for the lease's deadline
    try:
        while True:
            now = time.monotonic()
            # A loss the backend reported (an admin's break, the server's word), or a lease
            # that turned SUSPECT: its margin is the time the guard needs to stop the command
            # (TERM, the grace, KILL) before the lease can end on the server.
            lost = lease.loss
            if lost is None and lease.state_at(now) is not HELD:
                lost = LockLost(_deadline_reason(lock.name, lease, now, late), name=lock.name)
            if lost is not None and stop_reason is None:
                # The guard stops the command (TERM, then KILL before the lease ends) and
                # reports its exit, as it would if this process were gone.
                stop_reason = lost
                _say(f"{lost}; stopping the command")
                with contextlib.suppress(OSError):
                    ctl.send(_STOP)
            if lease.valid_until > told and stop_reason is None:
                told = lease.valid_until
                now_conn = lock.backend.session_connection()
                fd = _fileno(now_conn) if now_conn is not conn else -1
                conn = now_conn
                with contextlib.suppress(OSError):
                    # After a reconnection (a lockd restart) the guard gets the new
                    # connection to hold, so a SIGKILLed runner still frees the lock last.
                    socket.send_fds(ctl, [_UNTIL + struct.pack("!d", told)],
                                    [fd] if fd >= 0 else [])  # fmt: skip
            timeout = None if stop_reason is not None else max(0.0, lease.suspect_at - now)
            due = None if timeout is None else now + timeout
            events = poller.poll(None if timeout is None else timeout * 1000 + 1)
            late = 0.0 if due is None else max(0.0, time.monotonic() - due)
            fds = {fd for fd, _ev in events}
            if wake_r in fds:
                with contextlib.suppress(OSError):
                    os.read(wake_r, 4096)
            if fds - {wake_r}:
                # Read every queued message before looking at the guard's death: its last
                # message (the command's exit status) may sit behind the pid it sent first.
                data = b"-"
                while True:
                    try:
                        data = ctl.recv(64, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    except ConnectionResetError:
                        # The guard exited with a message of ours unread (a stop crossing its
                        # exit report). The kernel reports that first, once, and what the
                        # guard sent is still queued behind it: read on.
                        continue
                    except OSError:
                        data = b""
                    if data[:1] == _PID:
                        pgid = struct.unpack("!i", data[1:5])[0]
                        for signum in forwarded:
                            _signal_group(pgid, signum)
                    elif data[:1] == _EXIT:
                        status = struct.unpack("!i", data[1:5])[0]
                        if status < 0:
                            return EXIT_NOT_FOUND
                        if stop_reason is None and data[5:6] == _DEADLINE:
                            # The guard stopped the command at the lease's deadline on its
                            # own; this process was due to wake before it (or just after,
                            # for the shortest leases) and did not.
                            (stopped_at,) = struct.unpack("!d", data[6:14])
                            frozen = due is not None and due <= stopped_at
                            stop_reason = lease.loss or LockLost(
                                _guard_reason(lock.name, lease, frozen), name=lock.name
                            )
                            _say(f"{stop_reason}; the guard stopped the command")
                        return EXIT_LOCK_LOST if stop_reason is not None else status
                    elif not data:
                        break
                if guard_pidfd in fds or not data:
                    if pgid:
                        _signal_group(pgid, signal.SIGKILL)
                    _say("the guard process vanished; the command was killed")
                    return EXIT_INTERNAL
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        # The wake pipe stays open: the backend's thread may still poke it until the lock is
        # closed, and the runner exits right after.


def _deadline_reason(name: str, lease: Lease, now: float, late: float) -> str:
    """Why the runner stops the command at the lease's deadline."""
    frozen = frozen_for(late)
    if frozen is None:
        return f"lock {name!r} (token {lease.token}): the lease could not be renewed in time"
    if now >= lease.valid_until:
        return f"lock {name!r} lost (token {lease.token}): {frozen}"
    return (f"lock {name!r} (token {lease.token}): this process was frozen (for at least "
            f"{late:.1f}s) until its lease was about to run out")  # fmt: skip


def _guard_reason(name: str, lease: Lease, frozen: bool) -> str:
    """Why the guard stopped the command on its own: this process was not running when it
    had to act (``frozen``), or the guard's deadline simply came first."""
    if frozen:
        why = "this process was frozen as its lease was running out"
    else:
        why = "the lease was about to run out before this process could pass a renewal on"
    return f"lock {name!r} lost (token {lease.token}): {why}"


def _poke(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, b"x")


def _fileno(sock: socket.socket | None) -> int:
    try:
        return sock.fileno() if sock is not None else -1
    except OSError:
        return -1
