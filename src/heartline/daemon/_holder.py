"""The fd holder: what lets a daemon killed with SIGKILL be replaced without a single restart.

Problem: programs write to pipes whose read ends live in the daemon. If the daemon dies, the
next write of every chatty program gets SIGPIPE and it dies too, so a daemon started again
could only restart them. The holder is a small process forked by the daemon at start that keeps
a second read end of every output pipe (passed over a socketpair with SCM_RIGHTS) and a pidfd
of every program. It never reads. While the daemon lives it only follows add/drop messages.

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


class Holder:
    """Daemon side of the holder."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self.alive = True

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
    fd_space = socket.CMSG_SPACE(_MAX_FDS * struct.calcsize("i"))
    while True:
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
    # The daemon vanished without a goodbye. Wait for a successor to end us; if none comes,
    # stop the programs so that nothing runs unsupervised.
    sock.close()
    try:
        time.sleep(adopt_timeout)
    finally:
        # Whatever went wrong while waiting, nothing may run unsupervised.
        _stop_all(held, grace)


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
