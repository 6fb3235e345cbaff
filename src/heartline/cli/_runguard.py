"""The guard of `heartline run`: its command must not outlive it, even when it is SIGKILLed.

`heartline run` supervises its command in its own process, so SIGKILL to that process would
leave the command running under PID 1, unsupervised. A small guard process is forked before
anything starts; it keeps one end of a socketpair to the runner and learns from it every process
group the runner starts (through the Supervisor's holder hooks: ``add`` right after each spawn,
``drop`` right after each reap). When the runner goes without saying goodbye, however it went,
the guard reads EOF at once and stops the command's group as the runner would have: the stop
signal, then SIGKILL when the leader exits or the stop timeout passes.

Why a guard and not PR_SET_PDEATHSIG: the parent-death signal has to be set inside each child
between fork and exec (a preexec hook, which the Supervisor's spawn does not offer and which
costs the vfork fast path), it reaches the leader only and not the rest of its group, it is one
signal with no stop timeout before SIGKILL, and it fires when the *thread* that forked ends
(batch spawns run in worker threads). The guard covers the group, escalates, and being in a
session of its own it survives a SIGKILL sent to the runner's whole job (`kill -9 %1`).

Certainty about whom it signals. The runner, which has not reaped its child yet when it reports
it, passes the guard a pidfd of the leader. The guard signals the group through that pidfd
(PIDFD_SIGNAL_PROCESS_GROUP, Linux 6.9): the kernel resolves the group from the leader's pid
object, not from a number, so the signal reaches the leader's group even after the leader was
reaped, and nothing at all once the group is gone and its id could be reused. On older kernels
it falls back to killpg, but only while the leader is alive: then the id is certainly still the
command's; once the leader is gone the guard cannot tell, and does not signal the group.

The window between a spawn and the runner's ``add``. Spawn, pidfd and ``add`` run in one stretch
of the runner's event loop, so the only way to miss a group is the runner dying inside that
stretch (a millisecond or so). The guard closes it: when the runner dies and no group is known,
it looks in /proc for session leaders started since the last group was reaped whose environment
carries the runner's notify address (NOTIFY_SOCKET, random per run: only this runner's command
can have it) and stops those. A process the command itself moved into a session of its own
before that is left alone: it is not the command's group.

Ctrl-C stays the runner's: the guard leaves the terminal's process group and ignores the
signals a terminal sends, so SIGINT/SIGTERM go through the runner's normal stop path; after it,
the runner says goodbye and waits for the guard to exit, so a normal exit leaves nothing behind.

The guard imports nothing beyond what the runner has loaded already (cold start stays fast).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import signal
import socket
import struct
import sys
import time

from heartline._util import OWN_CHILDREN, read_stat

log = logging.getLogger(__name__)

#: pidfd_send_signal(2) flag: signal the process group of the pidfd's process (Linux 6.9).
PIDFD_SIGNAL_PROCESS_GROUP = 1 << 2

#: Runner -> guard messages (SOCK_SEQPACKET: one message per datagram).
_MARK, _ADD, _DROP, _BYE, _LEAVE = b"M", b"A", b"D", b"B", b"L"
#: How long a runner that said goodbye waits for its guard to exit.
_BYE_WAIT = 5.0
_HZ = os.sysconf("SC_CLK_TCK")


def _boot_ticks() -> int:
    """Now, in the clock of /proc/PID/stat's start time (clock ticks since boot)."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) * _HZ // 1_000_000_000


# --- the runner's side ----------------------------------------------------------------------
class RunGuard:
    """The runner's end: also the Supervisor's ``holder``, which reports every spawn and reap."""

    def __init__(self, sock: socket.socket, pid: int, pidfd: int) -> None:
        self.sock = sock
        self.pid = pid
        self.pidfd = pidfd
        self.alive = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._said_bye = False

    @classmethod
    def start(cls, *, stop_signal: int, stop_timeout: float) -> RunGuard:
        """Fork the guard; call before any thread exists (so before the event loop runs).
        Raises OSError when it cannot (no socket, no process left to fork)."""
        here, there = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        since = _boot_ticks()  # before the first spawn can happen
        runner = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the guard (covered by the integration tests)
            code = 0
            try:
                here.close()
                _guard(there, runner, stop_signal, stop_timeout, since)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        there.close()
        OWN_CHILDREN.add(pid)  # ours to reap, not an orphan of the command's
        return cls(here, pid, os.pidfd_open(pid))

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Warn if the guard ends before us (it never writes: its end readable means closed)."""
        self._loop = loop
        loop.add_reader(self.sock, self._lost)

    def _unwatch(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock)
            self._loop = None

    def _lost(self) -> None:
        self._unwatch()
        if self.alive:
            self.alive = False
            log.warning("the guard process (pid %d) is gone: if heartline run is killed now, "
                        "its command keeps running", self.pid)  # fmt: skip

    def mark(self, notify_socket: str) -> None:
        """The NOTIFY_SOCKET every command of this run gets (see the module doc)."""
        self._send(_MARK + notify_socket.encode())

    def add(self, key: str, pid: int, fds: list[int], stop_signal: int) -> None:
        """A new command process (the Supervisor calls this right after the spawn)."""
        try:
            # Exact: the child is ours and not reaped yet, so this pid is still the child.
            pidfd = os.pidfd_open(pid)
        except OSError:  # pragma: no cover - fd exhaustion
            log.warning("cannot hand pid %d to the guard: pidfd_open failed", pid)
            return
        try:
            self._send(_ADD + struct.pack("!ii", pid, stop_signal), [pidfd])
        finally:
            os.close(pidfd)

    def others(self, key: str, pids: list[int]) -> None:
        """Processes of the command outside its group: not handed to the guard, which stops
        the command's process group only (`heartline run` itself stops the others when the
        command's main process exits)."""

    def drop(self, key: str) -> None:
        """The command process was reaped (its group killed before): nothing to guard now."""
        self._send(_DROP + struct.pack("!q", _boot_ticks()))

    def bye(self) -> None:
        """The command is gone for good: the guard may leave without touching anything."""
        self._unwatch()
        self._send(_BYE)
        self._said_bye = True

    def close(self) -> None:
        """After :meth:`bye`, wait for the guard to exit. Without it (the runner is leaving on
        an error), the guard stops whatever still runs, as if the runner had been killed (but
        says nothing when nothing ran)."""
        self._unwatch()
        if not self._said_bye:
            self._send(_LEAVE)
        self.sock.close()
        if self._said_bye:
            ready, _, _ = select.select([self.pidfd], [], [], _BYE_WAIT)
            if not ready:  # pragma: no cover - a frozen guard
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
        OWN_CHILDREN.discard(self.pid)
        os.close(self.pidfd)

    def _send(self, msg: bytes, fds: list[int] | None = None) -> None:
        if not self.alive:
            return
        try:
            if fds:
                socket.send_fds(self.sock, [msg], fds, socket.MSG_NOSIGNAL)
            else:
                self.sock.send(msg, socket.MSG_NOSIGNAL)
        except OSError:
            self._lost()


# --- the guard ------------------------------------------------------------------------------
class _Group:
    """A command process group, known by a pidfd of its leader."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.pidfd = pidfd

    def leader_alive(self) -> bool:
        ready, _, _ = select.select([self.pidfd], [], [], 0)
        return not ready

    def signal(self, sig: int) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, sig, None, PIDFD_SIGNAL_PROCESS_GROUP)
            return
        except ProcessLookupError:
            return  # the group is gone
        except OSError as e:
            if e.errno != errno.EINVAL:
                return
        # A kernel without the flag: the group id is certainly the command's while its leader
        # lives; afterwards it could be anyone's.
        if self.leader_alive():
            with contextlib.suppress(OSError):
                os.killpg(self.pid, sig)


def _guard(sock: socket.socket, runner: int, stop_signal: int, timeout: float, since: int) -> None:
    # Signals a terminal sends to its foreground job are the runner's to act on; a session of
    # our own also keeps `kill -9 -PGID` and the terminal's job control away from the guard.
    # SIG_IGN is safe here: the guard never execs, so nothing inherits it.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)
    os.setsid()
    keep = sock.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)
    with contextlib.suppress(OSError):  # the guard reads nothing and writes only to stderr
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
    marker = b""
    group: _Group | None = None
    leaving = False  # the runner is exiting on an error, not killed
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 4096, 1)
        except OSError:
            msg, fds = b"", []
        if not msg:
            break
        kind = msg[:1]
        if kind == _ADD and fds:
            if group is not None:
                os.close(group.pidfd)
            pid, stop_signal = struct.unpack("!ii", msg[1:9])
            group = _Group(pid, fds[0])
            continue
        for fd in fds:
            os.close(fd)
        if kind == _DROP:
            if group is not None:
                os.close(group.pidfd)
                group = None
            since = struct.unpack("!q", msg[1:9])[0]
        elif kind == _MARK:
            marker = msg[1:]
        elif kind == _BYE:
            return
        elif kind == _LEAVE:
            leaving = True
    # The runner is gone without a goodbye.
    what = f"heartline run: the supervising process (pid {runner}) is gone"
    if group is not None and not group.leader_alive():
        # It went while handling the leader's exit: what the leader left in its group gets
        # SIGKILL, as the runner was about to send, and no restart follows.
        group.signal(signal.SIGKILL)
        group = None
        groups = []
    else:
        groups = [group] if group is not None else _spawned_since(marker, since) if marker else []
    if not groups:
        if not leaving:
            _say(f"{what}; no command was running, and it will not be restarted\n")
        return
    pids = ", ".join(str(g.pid) for g in groups)
    _say(f"{what}; stopping its command (pid {pids}): {_signame(stop_signal)}, "
         f"then SIGKILL after {timeout:g}s\n")  # fmt: skip
    _stop(groups, stop_signal, timeout)


def _stop(groups: list[_Group], stop_signal: int, timeout: float) -> None:
    """What the runner does: the stop signal to each group; SIGKILL to what a leader leaves in
    its group when it exits, and to every group still there at the timeout."""
    for g in groups:
        g.signal(stop_signal)
    deadline = time.monotonic() + timeout
    live = list(groups)
    while live:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([g.pidfd for g in live], [], [], left)
        for g in [g for g in live if g.pidfd in ready]:
            g.signal(signal.SIGKILL)
            live.remove(g)
    for g in live:
        g.signal(signal.SIGKILL)


def _spawned_since(marker: bytes, since: int) -> list[_Group]:
    """Session leaders started at or after clock tick ``since`` that carry ``NOTIFY_SOCKET=marker``.

    A process is first pinned by a pidfd; what /proc says about it afterwards is about that
    process if it is still alive after the reads (a live process's pid cannot be reused).
    """
    entry = b"NOTIFY_SOCKET=" + marker
    found: list[_Group] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        pid = int(name)
        if not _leader_since(pid, since):
            continue
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        g = _Group(pid, pidfd)
        if _leader_since(pid, since) and _carries(pid, entry) and g.leader_alive():
            found.append(g)
        else:
            os.close(pidfd)
    return found


def _leader_since(pid: int, since: int) -> bool:
    """``pid`` leads its own session and process group, started at clock tick ``since`` or later."""
    info = read_stat(pid)
    return info is not None and info.pgrp == info.session == pid and info.start_time >= since


def _carries(pid: int, entry: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry in f.read().split(b"\0")
    except OSError:
        return False


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _say(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, text.encode())
