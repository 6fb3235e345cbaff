"""The fd holder: what lets a daemon killed with SIGKILL be replaced without a single restart.

Problem: programs write to pipes whose read ends live in the daemon. If the daemon dies, the
next write of every chatty program gets SIGPIPE and it dies too, so a daemon started again
could only restart them. The holder is a small process forked by the daemon at start that keeps
a second read end of every output pipe (passed over a socketpair with SCM_RIGHTS) and a pidfd
of every program. It never reads. While the daemon lives it only follows add/drop messages.

A singleton program runs under a cluster lock's lease, and must never outlive it: the daemon
*fences* it here, telling the holder after every renewal until when the lease is proven
(monotonic time, which both processes share) and handing over a copy of the lock's
connection (lockd lets a lock go only when the last copy of its session's connection closes).
If the daemon is frozen and that deadline draws near, the holder stops the program (stop
signal, SIGKILL before the deadline) on its own; if the daemon dies, the holder stops its
fenced programs at once and only then closes the connection. So the lock can pass to another
host only after the program here is gone, however the daemon ends.

When the daemon vanishes without saying goodbye, the pipes stay open (writes go on until the
pipe buffer fills), and the holder waits ``adopt_timeout`` for a successor: a new daemon reads
the state file, opens new read ends through /proc/PID/fd/N, and then ends the old holder. If no
successor comes in time, nothing may run unsupervised: the holder stops every program it knows
(stop signal to the group, SIGKILL after the grace period) and exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from heartline._util import OWN_CHILDREN, atomic_write, signal_leader, start_time

log = logging.getLogger(__name__)

_MAX_FDS = 2
#: Processes beyond the main one the holder follows per program (bounds one message).
_MAX_OTHERS = 256


@dataclass
class _Held:
    pid: int
    pidfd: int
    fds: list[int]
    stop_signal: int
    #: Processes of the program outside its main one's group: pid -> pidfd.
    others: dict[int, int] = field(default_factory=dict)


@dataclass
class _Fence:
    """A singleton's lease as the holder knows it: stop its processes ``lead`` seconds before
    ``until`` (the daemon moves it on at each renewal), SIGKILL ``grace`` later and before
    ``until``; ``conns`` keep its lock's session open until they are gone."""

    until: float
    lead: float
    grace: float
    conns: list[int]
    stopping_at: float | None = None
    killed: bool = False

    def kill_at(self) -> float | None:
        if self.stopping_at is None:
            return None
        return min(self.stopping_at + self.grace, self.until - 0.05)

    def close(self) -> None:
        for fd in self.conns:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.conns = []


class Holder:
    """Daemon side of the holder."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self.alive = True
        # Fences are sent from a lock's lease thread, the rest from the loop.
        self._mutex = threading.Lock()

    @classmethod
    def start(
        cls, run_dir: str, *, adopt_timeout: float, grace: float, keep_fds: tuple[int, ...] = ()
    ) -> Holder:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked holder (covered by integration tests)
            code = 0
            try:
                parent.close()
                _become_holder(child, adopt_timeout, grace)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        child.close()
        OWN_CHILDREN.add(pid)
        holder = cls(parent, pid)
        data = json.dumps({"pid": pid, "start_time": start_time(pid)})
        try:
            atomic_write(os.path.join(run_dir, "holder.json"), data.encode(), fsync=False)
        except BaseException:
            holder.close()  # a holder nobody can find would only get in the way
            raise
        return holder

    def _send(self, msg: bytes, fds: list[int] | None = None) -> None:
        if not self.alive:
            return
        anc = (
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
            if fds
            else []
        )
        try:
            with self._mutex:
                self.sock.sendmsg([msg], anc)
        except OSError as e:
            log.warning("fd holder is gone (%s); a daemon crash now would break program output", e)
            self.alive = False

    def add(self, key: str, pid: int, fds: list[int], stop_signal: int = signal.SIGTERM) -> None:
        self._send(json.dumps(["A", key, pid, stop_signal]).encode(), fds)

    def others(self, key: str, pids: list[int]) -> None:
        """The processes of program ``key`` beyond its main one (escaped or left behind)."""
        self._send(json.dumps(["O", key, pids[:_MAX_OTHERS]]).encode())

    def drop(self, key: str) -> None:
        self._send(json.dumps(["D", key]).encode())

    def fence(self, key: str, until: float, *, lead: float, grace: float, conn: int = -1) -> None:
        """Program ``key`` runs under a lease proven until ``until`` (monotonic): see the
        module doc. ``conn``: a new copy of the lock's connection to keep open (-1: none, or
        the same as before). Thread-safe."""
        self._send(
            json.dumps(["F", key, until, lead, grace]).encode(), [conn] if conn >= 0 else None
        )

    def unfence(self, key: str) -> None:
        """Program ``key`` no longer runs under a lease (its lock was given back)."""
        self._send(json.dumps(["F", key, 0, 0, 0]).encode())

    def abandon(self) -> None:
        """Leave without a goodbye: the holder then guards the programs (see module doc)."""
        self.sock.close()
        self.alive = False

    def close(self) -> None:
        """Say goodbye: the holder drops everything and exits; reap it."""
        self._send(json.dumps(["B"]).encode())
        self.sock.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        OWN_CHILDREN.discard(self.pid)


def previous_holder(run_dir: str) -> dict[str, int] | None:
    """The record of the holder a crashed daemon left, if any (read it before starting ours)."""
    try:
        with open(os.path.join(run_dir, "holder.json")) as f:
            rec = json.load(f)
        return {"pid": int(rec["pid"]), "start_time": int(rec["start_time"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def held_pids(rec: dict[str, int] | None) -> set[int]:
    """Pids of the live processes the holder described by ``rec`` has pidfds of.

    Read from /proc/PID/fdinfo: a pidfd's "Pid:" line names its process, or -1 once it died.
    """
    if rec is None or start_time(rec["pid"]) != rec["start_time"]:
        return set()
    base = f"/proc/{rec['pid']}"
    pids: set[int] = set()
    try:
        fds = os.listdir(f"{base}/fd")
    except OSError:
        return pids
    for fd in fds:
        try:
            if os.readlink(f"{base}/fd/{fd}") != "anon_inode:[pidfd]":
                continue
            with open(f"{base}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("Pid:"):
                        pid = int(line.split()[1])
                        if pid > 0:
                            pids.add(pid)
        except (OSError, ValueError):
            continue
    return pids


def end_previous_holder(rec: dict[str, int] | None) -> None:
    """End the holder a crashed daemon left (once its programs are adopted or gone)."""
    if rec is None:
        return
    pid = rec["pid"]
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if start_time(pid) == rec.get("start_time") and pid != os.getpid():
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(pidfd)


def _become_holder(
    sock: socket.socket, adopt_timeout: float, grace: float
) -> None:  # pragma: no cover
    # Forked from the daemon: drop the daemon's signal handlers and every fd but the socket,
    # and leave its session so that signals aimed at the daemon's group (a Ctrl-C, `timeout`)
    # do not end the holder before the daemon has said goodbye.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    os.setsid()
    os.closerange(3, sock.fileno())
    os.closerange(sock.fileno() + 1, 65536)
    held: dict[str, _Held] = {}
    fences: dict[str, _Fence] = {}
    fd_space = socket.CMSG_SPACE(_MAX_FDS * struct.calcsize("i"))
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    while True:
        timeout = _keep_fences(held, fences, time.monotonic())
        if not poller.poll(None if timeout is None else max(0.0, timeout) * 1000 + 1):
            continue
        try:
            msg, anc, _flags, _addr = sock.recvmsg(4096, fd_space)
        except InterruptedError:
            continue
        except OSError:
            msg, anc = b"", []
        fds: list[int] = []
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(struct.unpack(f"{len(data) // 4}i", data[: len(data) // 4 * 4]))
        if not msg:
            break
        try:
            cmd = json.loads(msg)
        except ValueError:
            cmd = []
        if cmd and cmd[0] == "A":
            _, key, pid, stop_sig = cmd
            _release(held.pop(key, None))
            held[key] = _Held(pid, _pidfd(pid), fds, stop_sig)
            continue
        if cmd and cmd[0] == "F":
            _fence(fences, cmd, fds)
            continue
        for fd in fds:
            os.close(fd)
        if cmd and cmd[0] == "O":
            _, key, pids = cmd
            h = held.get(key)
            if h is None:
                # Leftovers of a program whose main process is gone: kept under the key alone.
                h = held[key] = _Held(0, -1, [], signal.SIGTERM)
            for pid in [p for p in h.others if p not in pids]:
                os.close(h.others.pop(pid))
            for pid in pids:
                if pid not in h.others and (fd := _pidfd(pid)) >= 0:
                    h.others[pid] = fd
        elif cmd and cmd[0] == "D":
            _release(held.pop(cmd[1], None))
        elif cmd and cmd[0] == "B":
            return
    # The daemon vanished without a goodbye. Its singletons stop now: nobody renews their
    # leases any more. Then wait for a successor to end us; if none comes, stop the programs
    # so that nothing runs unsupervised.
    sock.close()
    _stop_fenced(held, fences)
    try:
        time.sleep(adopt_timeout)
    finally:
        # Whatever went wrong while waiting, nothing may run unsupervised.
        _stop_all(held, grace)


def _fence(fences: dict[str, _Fence], cmd: list[object], fds: list[int]) -> None:
    _, key, until, lead, grace = cmd
    assert isinstance(key, str) and isinstance(until, int | float)
    assert isinstance(lead, int | float) and isinstance(grace, int | float)
    fence = fences.get(key)
    if not until:  # unfenced: the lock was given back
        if fence is not None:
            fences.pop(key).close()
        for fd in fds:
            os.close(fd)
        return
    if fence is None:
        fence = fences[key] = _Fence(float(until), float(lead), float(grace), [])
    if fds:  # a new connection (the lock client reconnected): keep it instead
        fence.close()
        fence.conns = list(fds)
    if until > fence.until:
        fence.until, fence.lead, fence.grace = float(until), float(lead), float(grace)
        # Renewed in time: the daemon runs and holds the lock; a stop begun on the deadline
        # goes no further (what it stopped, the daemon sees exit and handles).
        fence.stopping_at, fence.killed = None, False


def _signal_program(h: _Held | None, sig: int) -> None:
    if h is None:
        return
    if _alive(h.pidfd):
        signal_leader(h.pid, h.pidfd, sig)
    for pid, fd in h.others.items():
        if _alive(fd):
            signal_leader(pid, fd, sig)


def _keep_fences(held: dict[str, _Held], fences: dict[str, _Fence], now: float) -> float | None:
    """Stop each fenced program whose lease's deadline came with no renewal from the daemon
    (it is frozen); returns the seconds until the next thing to do, or None."""
    wake: float | None = None
    for key, fence in fences.items():
        h = held.get(key)
        if fence.stopping_at is None and now >= fence.until - fence.lead:
            fence.stopping_at = now
            _signal_program(h, h.stop_signal if h is not None else signal.SIGTERM)
        kill_at = fence.kill_at()
        if kill_at is not None and not fence.killed and now >= kill_at:
            fence.killed = True
            _signal_program(h, signal.SIGKILL)
        due = fence.until - fence.lead if fence.stopping_at is None else kill_at
        if due is not None and not fence.killed:
            wake = due - now if wake is None else min(wake, due - now)
    return wake


def _stop_fenced(held: dict[str, _Held], fences: dict[str, _Fence]) -> None:  # pragma: no cover
    """The daemon is gone: stop every fenced program now, wait until it is gone (SIGKILL
    before its lease's end), then let its lock connections go."""
    now = time.monotonic()
    for key, fence in fences.items():
        if fence.stopping_at is None:
            fence.stopping_at = now
            h = held.get(key)
            _signal_program(h, h.stop_signal if h is not None else signal.SIGTERM)
    while True:
        timeout = _keep_fences(held, fences, time.monotonic())
        live = [
            fd
            for key in fences
            if (h := held.get(key)) is not None
            for fd in (h.pidfd, *h.others.values())
            if _alive(fd)
        ]
        if not live:
            break
        select.select(live, [], [], None if timeout is None else max(0.0, timeout) + 0.001)
    for fence in fences.values():
        fence.close()
    fences.clear()


def _pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except OSError:
        return -1


def _alive(pidfd: int) -> bool:
    if pidfd < 0:
        return False
    readable, _, _ = select.select([pidfd], [], [], 0)
    return not readable


def _stop_all(held: dict[str, _Held], grace: float) -> None:  # pragma: no cover
    # (pid, pidfd, signal to send first)
    live: list[tuple[int, int, int]] = []
    for h in held.values():
        if _alive(h.pidfd):
            live.append((h.pid, h.pidfd, h.stop_signal))
        live += [(pid, fd, h.stop_signal) for pid, fd in h.others.items() if _alive(fd)]
    for pid, fd, sig in live:
        signal_leader(pid, fd, sig)
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        select.select([fd for _, fd, _ in live], [], [], max(0.0, deadline - time.monotonic()))
        live = [item for item in live if _alive(item[1])]
    for pid, fd, _sig in live:
        signal_leader(pid, fd, signal.SIGKILL)


def _release(h: _Held | None) -> None:
    if h is None:
        return
    for fd in h.fds:
        os.close(fd)
    if h.pidfd >= 0:
        os.close(h.pidfd)
    for fd in h.others.values():
        os.close(fd)
