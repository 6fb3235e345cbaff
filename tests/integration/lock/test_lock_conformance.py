"""One suite, two backends: the same lock semantics on a real lockd and a real etcd.

Each test runs twice, against ``heartline lockd`` and against Debian's etcd (both started on
loopback by fixtures). Holders, runners and servers are killed with SIGKILL or frozen with
SIGSTOP; after each, the holders' own log shows that no two held the lock at once and that
fencing tokens only grew.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import wait_until

from heartline import Lock
from heartline.errors import LockLost, LockTimeout, UsageError
from heartline.lock import LeaseState, open_backend
from heartline.testing import LockdServer

HEARTLINE = [sys.executable, "-m", "heartline"]

#: A holder that logs "start TOKEN PID" when it gets the lock and "end"/"lost" when done.
WORKER = """
import os, sys, time
from heartline import Lock
url, name, log, hold, rounds, ttl = sys.argv[1:7]
lock = Lock(name, url=url, ttl=float(ttl))
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
for _ in range(int(rounds)):
    lock.acquire()
    os.write(fd, f"start {lock.token} {os.getpid()}\\n".encode())
    end = time.monotonic() + float(hold)
    while time.monotonic() < end:
        time.sleep(0.002)
    # A holder that was frozen past its lease knows it: it must not count as a holder.
    os.write(fd, f"{'lost' if lock.lost else 'end'} {lock.token} {os.getpid()}\\n".encode())
    lock.release()
"""


@dataclass
class Served:
    kind: str
    server: Any  # LockdServer or EtcdServer
    ttl: float  # a short lease that this backend honours

    @property
    def url(self) -> str:
        return str(self.server.url)

    def lock(self, name: str, **kw: Any) -> Lock:
        kw.setdefault("ttl", self.ttl)
        return Lock(name, url=self.url, **kw)


@pytest.fixture(params=["lockd", "etcd"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    if request.param == "lockd":
        with LockdServer(tmp_path / "lockd") as server:
            yield Served("lockd", server, ttl=1.0)
    else:
        # etcd rounds leases up to whole seconds and to its own minimum (about 2 s here).
        yield Served("etcd", request.getfixturevalue("etcd"), ttl=2.0)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts (each in its own group); all are killed at teardown."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGCONT)
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def spawn(procs: list[subprocess.Popen[bytes]], argv: list[str]) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(argv, start_new_session=True)
    procs.append(p)
    return p


def worker(served: Served, name: str, log: Path, *, hold: float, rounds: int = 1) -> list[str]:
    return [sys.executable, "-c", WORKER, served.url, name, str(log), str(hold), str(rounds),
            str(served.ttl)]  # fmt: skip


def records(log: Path) -> list[tuple[str, int, int]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        what, token, pid = line.split()
        out.append((what, int(token), int(pid)))
    return out


def check_no_overlap(log: Path) -> list[tuple[str, int, int]]:
    """Holders never overlap (a holder that learned it lost the lock does not count as one)
    and tokens grow with every grant."""
    recs = records(log)
    lost = {token for what, token, _ in recs if what == "lost"}
    active: set[int] = set()
    last = 0
    for what, token, _pid in recs:
        if what == "start":
            assert token > last, f"token {token} after {last}: tokens must only grow"
            last = token
            assert not (active - lost), f"token {token} granted while {active} held: {recs}"
            active.add(token)
        else:
            active.discard(token)
    return recs


def queue_len(served: Served, name: str) -> int:
    backend = open_backend(served.url)
    try:
        for info in backend.locks():
            if info.name == name:
                return len(info.waiters)
        return 0
    finally:
        backend.close()


# --- basic semantics ----------------------------------------------------------------------
def test_acquire_and_release_give_growing_tokens(served: Served) -> None:
    """A free lock is granted at once; each new grant carries a larger fencing token."""
    lock = served.lock("basic")
    tokens = []
    for _ in range(3):
        with lock:
            assert lock.held and not lock.lost
            tokens.append(lock.token)
        assert not lock.held
    lock.close()
    assert tokens == sorted(tokens) and len(set(tokens)) == 3


def test_waiters_are_granted_in_arrival_order(served: Served) -> None:
    """Five waiters queue one after another; releases grant them strictly in that order."""
    first = served.lock("fifo")
    first.acquire()
    order: list[int] = []
    threads = []
    locks = [served.lock("fifo") for _ in range(5)]

    def wait_turn(i: int) -> None:
        with locks[i]:
            order.append(i)

    for i in range(5):
        t = threading.Thread(target=wait_turn, args=(i,))
        t.start()
        threads.append(t)
        wait_until(lambda i=i: queue_len(served, "fifo") == i + 1, 10, f"waiter {i} queued")
    first.release()
    for t in threads:
        t.join(20)
    assert order == [0, 1, 2, 3, 4]
    for lk in [first, *locks]:
        lk.close()


def test_try_lock_and_timeout_leave_no_waiter_behind(served: Served) -> None:
    """--try on a held lock fails at once; a timed wait fails after its time; neither stays
    queued, so the next real waiter is not stuck behind a ghost."""
    holder = served.lock("busy")
    holder.acquire()
    other = served.lock("busy")
    with pytest.raises(LockTimeout):
        other.acquire(wait=0)
    started = time.monotonic()
    with pytest.raises(LockTimeout):
        other.acquire(wait=0.5)
    assert 0.4 <= time.monotonic() - started < 5
    assert queue_len(served, "busy") == 0
    holder.release()
    other.acquire(wait=5)
    assert other.token > holder.token
    holder.close()
    other.close()


def test_a_semaphore_admits_its_limit_and_refuses_a_different_limit(served: Served) -> None:
    """limit=2: two hold at once and a third waits; asking with another limit is an error."""
    a, b, c = (served.lock("sem", limit=2) for _ in range(3))
    a.acquire(wait=5)
    b.acquire(wait=5)
    with pytest.raises(LockTimeout):
        c.acquire(wait=0)
    with pytest.raises(UsageError, match="limit"):
        served.lock("sem", limit=3).acquire(wait=0)
    a.release()
    c.acquire(wait=5)
    assert c.token > b.token > a.token
    for lk in (a, b, c):
        lk.close()


def test_locks_lists_holders_and_waiters(served: Served) -> None:
    """`locks` shows each holder (host, pid, token) and the waiters in queue order."""
    holder = served.lock("listed")
    holder.acquire()
    waiter = served.lock("listed")
    t = threading.Thread(target=lambda: waiter.acquire(wait=20))
    t.start()
    wait_until(lambda: queue_len(served, "listed") == 1, 10, "one waiter")
    backend = open_backend(served.url)
    info = next(i for i in backend.locks() if i.name == "listed")
    backend.close()
    assert [h.token for h in info.holders] == [holder.token]
    assert info.holders[0].pid == os.getpid() and info.holders[0].host
    assert info.holders[0].since <= time.time()
    assert len(info.waiters) == 1 and info.waiters[0].pid == os.getpid()
    holder.release()
    t.join(20)
    assert waiter.held
    waiter.close()
    holder.close()


def test_breaking_a_lock_reaches_its_holder_as_lock_lost(served: Served) -> None:
    """An admin break: the sync holder sees .lost and LockLost at the end of its block; an
    async holder's block is cancelled at once and LockLost comes out of `async with`."""
    lock = served.lock("broken")
    with pytest.raises(LockLost), lock:
        backend = open_backend(served.url)
        assert backend.break_lock("broken") == 1
        backend.close()
        wait_until(lambda: lock.lost, 10, "the holder to learn of the break")

    async def main() -> str:
        alock = served.lock("broken-async")
        try:
            async with alock:
                breaker = open_backend(served.url)
                await asyncio.get_running_loop().run_in_executor(
                    None, breaker.break_lock, "broken-async"
                )
                breaker.close()
                await asyncio.sleep(30)
                return "not cancelled"
        except LockLost:
            return "lost"
        finally:
            alock.close()

    assert asyncio.run(asyncio.wait_for(main(), 20)) == "lost"
    lock.close()


# --- holders that die or freeze -----------------------------------------------------------
def test_a_killed_holder_frees_the_lock_for_the_next_waiter(
    served: Served, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """SIGKILL to the holder: lockd frees it when the connection drops; etcd when the lease
    runs out. Either way the next waiter gets it, and the two never overlap."""
    log = tmp_path / "holders.log"
    victim = spawn(procs, worker(served, "killed", log, hold=60))
    wait_until(lambda: records(log), 20, "the first holder")
    nxt = spawn(procs, worker(served, "killed", log, hold=0))
    wait_until(lambda: queue_len(served, "killed") == 1, 10, "the waiter queued")
    # The victim's hold ends here; it can write nothing after SIGKILL.
    with log.open("a") as f:
        f.write(f"killed {records(log)[0][1]} {victim.pid}\n")
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: len(records(log)) >= 4, served.ttl + 10, "the next holder")
    took = time.monotonic() - killed_at
    assert nxt.wait(10) == 0
    check_no_overlap(log)
    bound = 1.0 if served.kind == "lockd" else served.ttl + 1.5
    assert took < bound, f"next holder after {took:.2f}s"


def test_a_frozen_holder_loses_the_lock_after_its_ttl_without_overlap(
    served: Served, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """SIGSTOP the holder past its TTL: the waiter is granted; the holder, thawed, finds its
    lease lost (and logs "lost", not "end"), so no two holders overlapped."""
    log = tmp_path / "holders.log"
    frozen = spawn(procs, worker(served, "frozen", log, hold=served.ttl + 2))
    wait_until(lambda: records(log), 20, "the first holder")
    nxt = spawn(procs, worker(served, "frozen", log, hold=0))
    wait_until(lambda: queue_len(served, "frozen") == 1, 10, "the waiter queued")
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: len(records(log)) >= 3, served.ttl + 10, "the waiter granted")
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    assert nxt.wait(10) == 0 and frozen.wait(20) == 0
    recs = check_no_overlap(log)
    assert ("lost", recs[0][1], frozen.pid) in recs


def test_a_silent_server_makes_the_lease_suspect_then_lost_on_time(served: Served) -> None:
    """The server freezes (SIGSTOP) under a holder, so its renewals go unanswered and no
    message can come: on_state hears HELD at the grant, then SUSPECT at the margin before the
    lease's proven end and LOST at that end, each on time and in that order, and lock.state
    and on_lost say the same. Thawed, the server lets the lock go to the next holder although
    the first never released it, and nothing brings the lost lease back."""
    heard: list[tuple[LeaseState, float]] = []
    lost: list[LockLost] = []
    lock = served.lock("silent", on_lost=lost.append)
    lock.on_state(lambda state: heard.append((state, time.monotonic())))
    lease = lock.acquire(wait=5)
    assert lock.state is LeaseState.HELD and heard[0][0] is LeaseState.HELD
    pid = served.server.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: lock.state is LeaseState.SUSPECT, served.ttl + 5, "SUSPECT")
        wait_until(lambda: lost, served.ttl + 5, "LOST")
        changes = [(state, at) for state, at in heard if state is not LeaseState.HELD]
        assert [state for state, _ in changes] == [LeaseState.SUSPECT, LeaseState.LOST]
        # Told when it happened (give or take scheduling), not when some answer came.
        (_, suspect_at), (_, lost_at) = changes
        assert abs(suspect_at - lease.suspect_at) < 0.4, suspect_at - lease.suspect_at
        assert abs(lost_at - lease.valid_until) < 0.4, lost_at - lease.valid_until
        assert lock.state is LeaseState.LOST and lock.lost and lost[0].name == "silent"
    finally:
        os.kill(pid, signal.SIGCONT)
    nxt = served.lock("silent")
    nxt.acquire(wait=served.ttl + 10)
    assert nxt.token > lease.token
    assert lock.state is LeaseState.LOST
    assert [s for s, _ in heard if s is not LeaseState.HELD] == [LeaseState.SUSPECT,
                                                                  LeaseState.LOST]  # fmt: skip
    nxt.close()
    lock.close()
    assert lock.state is LeaseState.LOST


def test_many_holders_never_overlap_and_tokens_grow(
    served: Served, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Four processes take turns 5 times each; the log shows strict turns and growing tokens."""
    log = tmp_path / "holders.log"
    ps = [spawn(procs, worker(served, "turns", log, hold=0.005, rounds=5)) for _ in range(4)]
    for p in ps:
        assert p.wait(60) == 0
    recs = check_no_overlap(log)
    assert sum(1 for r in recs if r[0] == "start") == 20


def test_a_restarted_server_does_not_hand_a_held_lock_to_anyone_else(
    served: Served, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """The server is killed (SIGKILL) and started again while a holder holds and another
    process waits: the holder keeps the lock (its session resumes), the waiter gets it only
    after the holder is done, and tokens keep growing."""
    log = tmp_path / "holders.log"
    hold = served.ttl * 3 + 2
    holder = spawn(procs, worker(served, "restart", log, hold=hold))
    wait_until(lambda: records(log), 20, "the first holder")
    nxt = spawn(procs, worker(served, "restart", log, hold=0))
    wait_until(lambda: queue_len(served, "restart") == 1, 10, "the waiter queued")
    served.server.kill()
    served.server.start()
    assert holder.wait(hold + 30) == 0
    assert nxt.wait(30) == 0
    recs = check_no_overlap(log)
    assert [r[0] for r in recs] == ["start", "end", "start", "end"], recs
    lock = served.lock("restart")
    with lock:
        assert lock.token > recs[-1][1]
    lock.close()


# --- the runner ---------------------------------------------------------------------------
def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HEARTLINE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_runner_passes_the_exit_code_and_the_lock_to_its_command(served: Served) -> None:
    """`heartline lock NAME -- CMD` runs argv as is (no shell), hands it the lock's name and
    token, and exits with the command's own exit code."""
    code = "import os, sys; print(os.environ['HEARTLINE_LOCK_NAME'], " \
           "os.environ['HEARTLINE_LOCK_TOKEN'], sys.argv[1]); sys.exit(7)"  # fmt: skip
    r = run_cli("lock", "job", "--server", served.url, "--", sys.executable, "-c", code, "$HOME;x")
    assert r.returncode == 7, r.stderr
    name, token, arg = r.stdout.split()
    assert name == "job" and int(token) > 0 and arg == "$HOME;x"


def test_the_runner_refuses_when_busy_and_reports_unreachable_servers(served: Served) -> None:
    """--try on a held lock exits 75 without running the command; a server that is not there
    exits 69; a bad option exits 64. Each with a one-line message."""
    holder = served.lock("cli-busy")
    holder.acquire()
    r = run_cli("lock", "cli-busy", "--server", served.url, "--try", "--", "false")
    assert r.returncode == 75 and "busy" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("lock", "cli-busy", "--server", served.url, "-w", "0.3", "--", "false")
    assert r.returncode == 75
    holder.close()
    scheme = "heartline" if served.kind == "lockd" else "etcd"
    r = run_cli("lock", "x", "--server", f"{scheme}://127.0.0.1:9", "--", "true")
    assert r.returncode == 69 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = run_cli("lock", "x", "--server", served.url, "--bogus", "--", "true")
    assert r.returncode == 64 and r.stderr.count("\n") == 1


def test_the_runner_forwards_term_to_its_command(
    served: Served, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """SIGTERM to the runner goes to the command's process group; the runner exits with the
    command's status (143 here: killed by TERM)."""
    ready = tmp_path / "ready"
    code = f"import pathlib, time; pathlib.Path({str(ready)!r}).touch(); time.sleep(60)"
    runner = spawn(procs, [*HEARTLINE, "lock", "fwd", "--server", served.url, "--",
                           sys.executable, "-c", code])  # fmt: skip
    wait_until(ready.exists, 20, "the command to start")
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(20) == 128 + signal.SIGTERM


#: The first run writes its pid and sleeps, ignoring SIGTERM (so only a KILL ends it); the
#: next run writes "overlap" if that first process is still alive, else "ok".
CHECKER = """
import os, pathlib, signal, sys, time
pidfile, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
if pidfile.exists():
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
        alive = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        alive = False
    out.write_text("overlap" if alive else "ok")
else:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pidfile.write_text(str(os.getpid()))
    time.sleep(120)
"""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_the_command_never_outlives_its_runner_s_lock(
    how: str, served: Served, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """The runner is killed (SIGKILL) or frozen (SIGSTOP) while its command runs: the command
    is stopped before the lock can pass on, so when the next runner's command starts, the
    first command is already gone."""
    pidfile, out = tmp_path / "pid", tmp_path / "out"
    argv = [*HEARTLINE, "lock", "guarded", "--server", served.url, "--ttl", str(served.ttl),
            "--", sys.executable, "-c", CHECKER, str(pidfile), str(out)]  # fmt: skip
    first = spawn(procs, argv)
    wait_until(pidfile.exists, 20, "the first command")
    second = spawn(procs, argv)
    wait_until(lambda: queue_len(served, "guarded") == 1, 10, "the second runner queued")
    os.kill(first.pid, getattr(signal, how))  # the runner only, not its command's group
    try:
        wait_until(out.exists, served.ttl + 15, "the second command")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert out.read_text() == "ok"
    assert second.wait(20) == 0


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s children (forked by its main thread)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def running(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def seqpacket_backlog(pid: int) -> int | None:
    """Bytes waiting unread on ``pid``'s SOCK_SEQPACKET socket (the guard's channel to its
    runner), as `ss` reports them; None if it has none."""
    out = subprocess.run(["ss", "-x", "-a", "-p", "-H"], capture_output=True, text=True,
                         timeout=10, check=True).stdout  # fmt: skip
    for line in out.splitlines():
        if line.startswith("u_seq") and f"pid={pid}," in line:
            return int(line.split()[2])
    return None


def runner_with_guard(
    procs: list[subprocess.Popen[bytes]], argv: list[str], ready: Path, stderr: Path, **kw: Any
) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start a runner (stderr to a file), wait for its command; the runner, guard, command."""
    with open(stderr, "wb") as err:
        runner = subprocess.Popen(argv, stderr=err, start_new_session=True, **kw)
    procs.append(runner)
    wait_until(ready.exists, 20, "the command to start")
    [guard] = wait_until(lambda: children(runner.pid), 5, "the guard")
    [command] = wait_until(lambda: children(guard), 5, "the command")
    return runner, guard, command


def test_a_runner_frozen_past_its_lease_exits_79_and_says_why(
    served: Served, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """The runner is frozen (SIGSTOP) until its guard has stopped the command at the end of
    the lease, then thawed (SIGCONT): it exits 79 (the lock was lost, the command stopped),
    not with the command's 143, and says so in one line: that the lease ran out while it was
    frozen, not that it is resuming a session that is gone."""
    ready, stderr = tmp_path / "ready", tmp_path / "stderr"
    code = f"import pathlib, time; pathlib.Path({str(ready)!r}).touch(); time.sleep(60)"
    argv = [*HEARTLINE, "lock", "thawed", "--server", served.url, "--ttl",
            str(served.ttl), "--", sys.executable, "-c", code]  # fmt: skip
    runner, guard, command = runner_with_guard(procs, argv, ready, stderr)
    try:
        os.kill(runner.pid, signal.SIGSTOP)
        try:
            # The guard stops the command on its own, reports, and exits (a zombie until the
            # runner thaws).
            wait_until(lambda: not running(command) and not running(guard), served.ttl + 15,
                       "the guard to stop the command and exit")  # fmt: skip
        finally:
            os.kill(runner.pid, signal.SIGCONT)
        assert runner.wait(20) == 79, stderr.read_text()
        err = stderr.read_text()
        assert err.count("\n") == 1 and err.startswith("heartline: "), err
        assert "heartline: " not in err[len("heartline: ") :], err
        assert "lost" in err and "this process was frozen" in err and "resum" not in err, err
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(command, signal.SIGKILL)


def test_a_stop_crossing_the_guard_s_exit_report_is_not_taken_for_a_vanished_guard(
    served: Served, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """The guard exits with the runner's stop message (and renewal news) unread, just after
    reporting the command's exit. The runner's next read meets ECONNRESET before that report;
    it reads the report anyway and exits 79 for the broken lock, not 70 ("the guard process
    vanished"). Made deterministic by freezing the guard while the messages queue up, and the
    runner while the guard reports and exits."""
    import shutil

    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is needed to see the guard's unread messages")
    ready, stderr = tmp_path / "ready", tmp_path / "stderr"
    # The command ends when its stdin closes: the test decides when, with no signal.
    code = f"import os, pathlib; pathlib.Path({str(ready)!r}).touch(); os.read(0, 1)"
    argv = [*HEARTLINE, "lock", "crossing", "--server", served.url, "--ttl", str(served.ttl),
            "--", sys.executable, "-c", code]  # fmt: skip
    runner, guard, command = runner_with_guard(procs, argv, ready, stderr, stdin=subprocess.PIPE)
    assert runner.stdin is not None
    try:
        os.kill(guard, signal.SIGSTOP)
        try:
            # Renewal news (9 bytes each) piles up unread, then the runner's stop (1 byte)
            # once the lock is broken.
            wait_until(lambda: (seqpacket_backlog(guard) or 0) >= 9, served.ttl + 10,
                       "renewal news queued for the frozen guard")  # fmt: skip
            backend = open_backend(served.url)
            try:
                assert backend.break_lock("crossing") == 1
            finally:
                backend.close()
            wait_until(lambda: (seqpacket_backlog(guard) or 0) % 9 == 1, served.ttl + 10,
                       "the runner's stop queued")  # fmt: skip
            # The runner waits for the guard's report now; freeze it so that the guard is
            # gone before it reads.
            os.kill(runner.pid, signal.SIGSTOP)
            runner.stdin.close()
            wait_until(lambda: not running(command), 10, "the command to exit")
            # Thawed, the guard reads one message, sees the command gone, reports and exits.
            os.kill(guard, signal.SIGCONT)
            wait_until(lambda: not running(guard), 10, "the guard to exit")
        finally:
            os.kill(guard, signal.SIGCONT)
            os.kill(runner.pid, signal.SIGCONT)
        assert runner.wait(20) == 79, stderr.read_text()
        err = stderr.read_text()
        assert err.count("\n") == 1 and "lost" in err and "vanished" not in err, err
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(command, signal.SIGKILL)


def test_many_async_waiters_each_get_their_turn(served: Served) -> None:
    """Twelve tasks wait on one lock at once (more than a thread pool's worth): every one is
    granted in turn, one at a time; a cancelled waiter leaves no grant behind."""
    import asyncio

    async def main() -> list[int]:
        inside = 0
        order: list[int] = []

        async def one(i: int) -> None:
            nonlocal inside
            async with served.lock("async-many") as lock:
                inside += 1
                assert inside == 1
                order.append(lock.token)
                await asyncio.sleep(0.01)
                inside -= 1

        cancelled = asyncio.create_task(one(-1))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(12))), 60)
        return order

    tokens = asyncio.run(main())
    assert len(tokens) == 12 and tokens == sorted(tokens)
    assert queue_len(served, "async-many") == 0
