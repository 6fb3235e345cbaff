"""lockd on its own: durability details, the post-reboot hold, its data directory, the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import wait_until

from heartline import Lock
from heartline.errors import LockTimeout
from heartline.testing import LockdServer

HEARTLINE = [sys.executable, "-m", "heartline"]


@pytest.fixture
def lockd(tmp_path: Path) -> Iterator[LockdServer]:
    with LockdServer(tmp_path / "data") as server:
        yield server


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HEARTLINE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_tokens_keep_growing_across_restarts_even_without_a_journal(tmp_path: Path) -> None:
    """Tokens carry the epoch, which is bumped and fsynced at every start: even with its
    journal gone, a restarted lockd never hands out a token it used before."""
    server = LockdServer(tmp_path / "data")
    server.start()
    try:
        seen = []
        for _ in range(3):
            lock = Lock("epoch", url=server.url)
            with lock:
                seen.append(lock.token)
            lock.close()
            server.kill()
            (tmp_path / "data" / "journal").unlink()
            server.start()
        assert seen == sorted(seen) and len(set(seen)) == 3
    finally:
        server.stop()


def test_after_a_reboot_nothing_new_is_granted_for_one_longest_lease(tmp_path: Path) -> None:
    """A changed boot id means the journal's unsynced tail may be gone: lockd then grants
    nothing new for max_ttl (holders it forgot have stopped by then), and says so."""
    data = tmp_path / "data"
    server = LockdServer(data)
    server.start()
    lock = Lock("reboot", url=server.url, ttl=1.5)
    with lock:
        pass
    lock.close()
    server.kill()
    state = json.loads((data / "state.json").read_text())
    state["boot_id"] = "another-boot"
    (data / "state.json").write_text(json.dumps(state))
    server.start()
    try:
        started = time.monotonic()
        lock = Lock("reboot", url=server.url, ttl=1.5)
        with pytest.raises(LockTimeout):
            lock.acquire(wait=0)
        lock.acquire(wait=10)
        waited = time.monotonic() - started
        lock.close()
        assert 1.0 <= waited < 5, f"granted after {waited:.2f}s"
    finally:
        server.stop()


def test_a_torn_journal_line_is_skipped_and_a_broken_state_file_stops_the_start(
    tmp_path: Path,
) -> None:
    """A crash mid-write leaves a torn last record: it is skipped. An unreadable state file is
    not guessed at: lockd refuses to start with a one-line error (exit 2)."""
    data = tmp_path / "data"
    with LockdServer(data) as server:
        lock = Lock("torn", url=server.url)
        with lock:
            pass
        lock.close()
    with (data / "journal").open("ab") as f:
        f.write(b'{"g":"torn","t":99,')
    with LockdServer(data) as server:
        lock = Lock("torn", url=server.url)
        lock.acquire(wait=5)
        lock.close()
    (data / "state.json").write_text("{not json")
    r = cli("lockd", "--listen", "127.0.0.1:0", "--data", str(data))
    assert r.returncode == 2 and "state.json" in r.stderr and r.stderr.count("\n") == 1


def test_two_servers_cannot_share_a_data_directory(lockd: LockdServer) -> None:
    """A second lockd on the same --data refuses to start (exit 2), naming the directory."""
    r = cli("lockd", "--listen", "127.0.0.1:0", "--data", str(lockd.data_dir))
    assert r.returncode == 2 and "another lockd" in r.stderr


def test_lockd_refuses_to_listen_beyond_loopback_without_tokens() -> None:
    """No token file, a non-loopback address: refused before binding, exit 2, one line."""
    r = cli("lockd", "--listen", "0.0.0.0:7717", "--no-data")
    assert r.returncode == 2 and "--token-file" in r.stderr and r.stderr.count("\n") == 1


def test_the_runner_stops_its_command_when_the_lease_cannot_be_renewed(
    lockd: LockdServer, tmp_path: Path
) -> None:
    """The server stops answering (SIGSTOP): the runner stops its command (TERM) before the
    lease could run out and exits 79 soon after (not waiting on the server past the lease);
    the command never ran past the lease."""
    mark = tmp_path / "term"
    code = (
        "import signal, sys, time, pathlib\n"
        f"def term(*_): pathlib.Path({str(mark)!r}).write_text(str(time.monotonic())); "
        "sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        f"pathlib.Path({str(mark)!r} + '.up').write_text('')\n"
        "time.sleep(60)\n"
    )
    argv = [*HEARTLINE, "lock", "frozen-server", "--server", lockd.url, "--ttl", "2s", "--",
            sys.executable, "-c", code]  # fmt: skip
    runner = subprocess.Popen(
        argv,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(lambda: os.path.exists(f"{mark}.up"), 20, "the command to start")
        assert lockd.pid is not None
        os.kill(lockd.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            assert runner.wait(20) == 79
            # And it exits soon after: it does not wait on the frozen server past the lease.
            assert time.monotonic() - frozen_at < 4.0
        finally:
            os.kill(lockd.pid, signal.SIGCONT)
        termed_at = float(mark.read_text())
        # The last renewal was at most ttl/3 before the freeze; the lease ends 2 s after it.
        assert termed_at - frozen_at < 2.0
        assert runner.stderr is not None and "lease" in runner.stderr.read()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()
        if runner.stderr is not None:
            runner.stderr.close()


#: Holds a lock until it is lost, waits for the lease thread to finish with it, then prints
#: why it was lost.
FROZEN_HOLDER = """
import pathlib, sys, threading
from heartline import Lock
url, ready = sys.argv[1:3]
lost = threading.Event()
lock = Lock("frozen-holder", url=url, ttl=1.0, on_lost=lambda _e: lost.set())
lock.acquire()
pathlib.Path(ready).touch()
assert lost.wait(60)
for thread in threading.enumerate():
    if thread.name == "heartline-lockd":
        thread.join(10)
print(lock.lease.lost_error)
"""


def test_a_holder_frozen_past_its_lease_says_so_and_does_not_resume(
    lockd: LockdServer, tmp_path: Path
) -> None:
    """A holder frozen (SIGSTOP) until lockd has let its lock go, then thawed: its lease is
    lost "while this process was frozen", and it does not announce that it is resuming a
    session that lockd has ended (nothing on stderr)."""
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", FROZEN_HOLDER, lockd.url, str(ready)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # fmt: skip
    try:
        wait_until(ready.exists, 20, "the holder to hold the lock")
        os.kill(holder.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: "no lock" in cli("locks", "--server", lockd.url).stdout, 15,
                       "lockd to let the frozen holder's lock go")  # fmt: skip
        finally:
            os.kill(holder.pid, signal.SIGCONT)
        out, err = holder.communicate(timeout=30)
        assert holder.returncode == 0, err
        assert "frozen-holder" in out and "while this process was frozen" in out, out
        assert err == "", err
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()


def test_locks_and_break_through_the_cli(lockd: LockdServer) -> None:
    """`heartline locks` shows the holder with host, pid and token (table and JSON);
    `heartline lock --break` drops it and the holder learns it lost the lock."""
    lock = Lock("cli", url=lockd.url)
    lock.acquire()
    r = cli("locks", "--server", lockd.url)
    assert r.returncode == 0 and "cli:" in r.stdout and f"token {lock.token}" in r.stdout
    doc = json.loads(cli("locks", "--server", lockd.url, "--json").stdout)
    [entry] = doc["locks"]
    assert entry["holders"][0]["pid"] == os.getpid()
    r = cli("lock", "--break", "cli", "--server", lockd.url)
    assert r.returncode == 0 and "1 holder" in r.stdout
    wait_until(lambda: lock.lost, 10, "the holder to learn of the break")
    lock.close()
    assert "no lock" in cli("locks", "--server", lockd.url).stdout


def test_a_runner_killed_after_a_server_restart_still_frees_the_lock_last(
    lockd: LockdServer, tmp_path: Path
) -> None:
    """lockd restarts under a running `heartline lock` (it resumes its session on a new
    connection); then the runner is SIGKILLed. The guard holds the new connection too, so the
    next runner's command starts only after the first command is gone."""
    from tests.integration.lock.test_lock_conformance import CHECKER

    pidfile, out = tmp_path / "pid", tmp_path / "out"
    argv = [*HEARTLINE, "lock", "resumed", "--server", lockd.url, "--ttl", "3s", "--",
            sys.executable, "-c", CHECKER, str(pidfile), str(out)]  # fmt: skip
    first = subprocess.Popen(argv, start_new_session=True)
    second = None
    try:
        wait_until(pidfile.exists, 20, "the first command")
        lockd.kill()
        lockd.start()
        # The restored grant shows as not reconnected until the runner resumes its session.
        wait_until(lambda: (out := cli("locks", "--server", lockd.url).stdout) and "held" in out
                   and "not reconnected" not in out, 10, "the session resumed")  # fmt: skip
        second = subprocess.Popen(argv, start_new_session=True)
        wait_until(lambda: "1 waiter" in cli("locks", "--server", lockd.url).stdout, 10,
                   "the second runner queued")  # fmt: skip
        os.kill(first.pid, signal.SIGKILL)
        wait_until(out.exists, 20, "the second command")
        assert out.read_text() == "ok"
        assert second.wait(20) == 0
    finally:
        for p in (first, second):
            if p is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_a_break_reaches_an_idle_holder_at_once_whatever_its_ttl(lockd: LockdServer) -> None:
    """A holder with a 60 s lease that is asking nothing learns of a break within a second,
    not at its next renewal (20 s away)."""
    lock = Lock("long-lease", url=lockd.url, ttl=60)
    lock.acquire()
    assert cli("lock", "--break", "long-lease", "--server", lockd.url).returncode == 0
    wait_until(lambda: lock.lost, 1.0, "the holder to learn of the break")
    lock.close()


def test_an_interactive_command_can_read_the_terminal(lockd: LockdServer) -> None:
    """Run from a terminal, `heartline lock` hands the terminal to its command's process
    group (as a shell would), so a command that asks a question gets the answer instead of
    being stopped by SIGTTIN; the runner takes the terminal back afterwards."""
    import pty
    import select as sel

    code = "import sys; answer = input('continue? '); print('got', answer); sys.exit(3)"
    pid, master = pty.fork()
    if pid == 0:  # the child: a session leader with the pty as its terminal
        os.execv(sys.executable, [*HEARTLINE, "lock", "tty", "--server", lockd.url, "--",
                                  sys.executable, "-c", code])  # fmt: skip
    try:
        seen = b""
        deadline = time.monotonic() + 20
        sent = False
        while b"got yes" not in seen and time.monotonic() < deadline:
            ready, _, _ = sel.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            seen += chunk
            if b"continue?" in seen and not sent:
                os.write(master, b"yes\n")
                sent = True
        assert b"got yes" in seen, seen
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 3
    finally:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(master)


def test_a_long_command_line_in_any_script_runs(lockd: LockdServer) -> None:
    """The runner labels its grant with the command line; a long one in a non-Latin script
    (or with bytes that are not UTF-8) is cut to fit the protocol, not refused."""
    arg = "日本語の引数" * 60
    r = cli("lock", "label", "--server", lockd.url, "--", sys.executable, "-c",
            "import sys; print(len(sys.argv[1]))", arg)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(len(arg))


@pytest.mark.parametrize("state", ['{"epoch": 1, "max_ttl": "x"}', '{"epoch": true}', "[1]"])
def test_a_state_file_of_the_wrong_shape_stops_the_start_with_one_line(
    tmp_path: Path, state: str
) -> None:
    """A state file that is JSON but not lockd's (wrong types) is refused like an unreadable
    one: exit 2 and one line naming the file, no traceback."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "state.json").write_text(state)
    r = cli("lockd", "--listen", "127.0.0.1:0", "--data", str(data))
    assert r.returncode == 2 and "state.json" in r.stderr and r.stderr.count("\n") == 1
