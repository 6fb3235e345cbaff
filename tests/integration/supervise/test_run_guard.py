"""`heartline run` killed with SIGKILL: its command never runs on unsupervised.

Every process a test starts carries a unique tag in its environment; teardown ends exactly the
processes with that tag (runner, guard, command, the command's children), whatever happened.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.conftest import HEARTLINE, PY, alive, tagged_pids, wait_until

GUARD_SAYS = "heartline run: the supervising process"


class Run:
    """One `heartline run` started by a test in a session of its own, stderr kept in a file."""

    def __init__(self, tmp: Path, tag: str) -> None:
        self.tmp = tmp
        self.tag = tag
        self.env = {**os.environ, "HEARTLINE_TEST_TAG": tag, "PYTHONUNBUFFERED": "1"}
        self.env.pop("NOTIFY_SOCKET", None)
        self.err = tmp / "run.err"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *options: str, code: str) -> subprocess.Popen[bytes]:
        argv = [*HEARTLINE, "run", *options, "--", PY, "-c", textwrap.dedent(code)]
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=self.env,
                start_new_session=True,
            )
        return self.proc

    def stderr(self) -> str:
        return self.err.read_text()

    def kill9(self, *, group: bool = False) -> None:
        """SIGKILL the runner (or its whole process group, as `kill -9 %1` does) and reap it."""
        assert self.proc is not None
        if group:
            os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL

    def left(self) -> list[int]:
        """Live processes of this run."""
        return tagged_pids(self.tag)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

        def gone() -> bool:
            # Kill again each round: a process may have been forked after the last listing.
            left = self.left()
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return not left

        wait_until(gone, 10, "tagged processes to exit")


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path, uuid.uuid4().hex)
    try:
        yield r
    finally:
        r.close()


def _pids(path: Path) -> list[int]:
    """Pids written one per line to ``path`` (a line counts once its newline is there)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [int(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _wait_pids(path: Path, n: int, what: str) -> list[int]:
    return wait_until(lambda: len(_pids(path)) >= n and _pids(path), 20, what)


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(p) for p in f.read().split()}


def _command(tmp: Path, *, on_term: str, child: str, prelude: str = "") -> str:
    """A command that appends its pid to ``tmp/term`` on each SIGTERM (then runs ``on_term``),
    starts ``child`` (/bin/sh code) in the command's process group, writes both pids to
    ``tmp/pids`` and waits."""
    return f"""
import os, signal, subprocess, sys, time
{prelude}
def on_term(*_):
    with open({str(tmp / "term")!r}, "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    {on_term}
signal.signal(signal.SIGTERM, on_term)
child = subprocess.Popen(["/bin/sh", "-c", {child!r}])
with open({str(tmp / "pids")!r}, "a") as f:
    f.write(f"{{os.getpid()}}\\n{{child.pid}}\\n")
while True:
    signal.pause()
"""


@pytest.mark.parametrize("group", [False, True], ids=["runner", "runner-group"])
def test_sigkill_of_run_stops_the_commands_group(run: Run, group: bool) -> None:
    """SIGKILL to `heartline run` (or to its whole process group, as `kill -9 %1` sends it)
    while the command runs: the command gets its stop signal, it and every process of its group
    end, nothing of the run is left (its guard included), and stderr says what happened."""
    code = _command(run.tmp, on_term="sys.exit(0)", child="exec sleep 600")
    runner = run.start("--stop-timeout", "60s", code=code)
    command, child = _wait_pids(run.tmp / "pids", 2, "the command and its child to start")
    run.kill9(group=group)
    wait_until(lambda: not alive(command) and not alive(child), 15, "the command's group to end")
    assert _pids(run.tmp / "term") == [command], "the command was not sent its stop signal"
    wait_until(lambda: not run.left(), 10, "every process of the run to end")
    assert f"{GUARD_SAYS} (pid {runner.pid}) is gone" in run.stderr()


def test_sigkill_of_run_kills_a_command_that_ignores_the_stop_signal(run: Run) -> None:
    """After SIGKILL to `heartline run`, a command (and a child in its group) that ignores
    SIGTERM is sent SIGKILL once the stop timeout has passed."""
    code = _command(run.tmp, on_term="pass", child="trap '' TERM; exec sleep 600")
    run.start("--stop-timeout", "4s", code=code)
    command, child = _wait_pids(run.tmp / "pids", 2, "the command and its child to start")
    run.kill9()
    _wait_pids(run.tmp / "term", 1, "the command to be sent its stop signal")
    sent = time.monotonic()
    assert alive(command) and alive(child)
    wait_until(lambda: not alive(command) and not alive(child), 15, "SIGKILL after the timeout")
    # Not before the stop timeout (a little slack: the signal was seen after it was sent).
    assert time.monotonic() - sent > 2
    wait_until(lambda: not run.left(), 10, "every process of the run to end")


def test_sigkill_of_run_after_restarts_stops_the_new_process(run: Run) -> None:
    """The command crashes twice and is restarted each time (the second time after a
    back-off), with a new pid and process group; SIGKILL to `heartline run` then stops the
    third process and its group."""
    runs = str(run.tmp / "runs")
    prelude = (
        f"with open({runs!r}, 'a') as f:\n    f.write('x')\n"
        f"if len(open({runs!r}).read()) < 3:\n    sys.exit(1)"
    )
    code = _command(run.tmp, on_term="sys.exit(0)", child="exec sleep 600", prelude=prelude)
    run.start("--restart", "on-failure", "--backoff", "300ms", "--stop-timeout", "60s", code=code)
    command, child = _wait_pids(run.tmp / "pids", 2, "the restarted command and its child")
    assert (run.tmp / "runs").read_text() == "xxx"
    run.kill9()
    wait_until(lambda: not alive(command) and not alive(child), 15, "the new group to end")
    assert _pids(run.tmp / "term") == [command]
    wait_until(lambda: not run.left(), 10, "every process of the run to end")


def _start_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[19])


def _boot_ticks() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK") // 10**9


def _open_writer(fifo: Path) -> int | None:
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader yet
        return None


def test_sigkill_of_run_during_a_backoff(run: Run) -> None:
    """SIGKILL to `heartline run` while it waits out a back-off: the command is not started
    again, nothing of the run is left, stderr says so. A process the command had moved out of
    its process group (setsid) was already stopped by the runner when the command exited
    (it came back to the runner, a child subreaper), with a line saying so."""
    pids, escaped, go = run.tmp / "pids", run.tmp / "escaped", run.tmp / "go"
    # The first failure is restarted at once, the second after the back-off (30s).
    code = f"""
import os, subprocess, sys
with open({str(pids)!r}, "a") as f:
    f.write(f"{{os.getpid()}}\\n")
if len(open({str(pids)!r}).read().split()) == 2:
    subprocess.Popen(["/bin/sh", "-c", "echo $$ > {escaped}.tmp && mv {escaped}.tmp {escaped}"
                      " && exec sleep 600"], start_new_session=True)
    with open({str(go)!r}, "rb") as f:  # a FIFO: blocks until the test opens and closes it
        f.read()
sys.exit(1)
"""
    os.mkfifo(go)
    runner = run.start("--restart", "on-failure", "--backoff", "30s", code=code)
    first, command = _wait_pids(pids, 2, "the command to start twice")
    wait_until(escaped.exists, 20, "the command to start a process in a session of its own")
    out = int(escaped.read_text())
    # Let the command exit (and so the back-off begin) only on a later clock tick than the
    # escaped process's start: the guard compares start times at that resolution.
    wait_until(lambda: _boot_ticks() > _start_ticks(out), 5, "the next clock tick")
    os.close(wait_until(lambda: _open_writer(go), 10, "the command to wait on the FIFO"))
    wait_until(lambda: not os.path.exists(f"/proc/{command}"), 20, "the command to be reaped")
    wait_until(lambda: not alive(out), 20, "the escaped process to be stopped with the command")
    assert runner.poll() is None
    run.kill9()
    wait_until(lambda: run.left() == [], 10, "all of the run to end")
    assert _pids(pids) == [first, command]
    assert "leaving 1 process behind" in run.stderr()
    assert "will not be restarted" in run.stderr()


@pytest.mark.parametrize("how", ["exit", "ctrl-c"])
def test_normal_exit_leaves_no_process(run: Run, how: str) -> None:
    """When `heartline run` ends on its own -- the command exited and is not restarted, or
    Ctrl-C (SIGINT to the whole foreground process group) had the runner stop it -- its guard
    has exited and been reaped by the time it exits (not even a zombie is left), nothing else of
    the run is left, the command was sent one stop signal at most, and the guard said nothing."""
    code = _command(run.tmp, on_term="sys.exit(5)", child="exec sleep 600")
    runner = run.start("--restart", "never" if how == "exit" else "always", code=code)
    command, _child = _wait_pids(run.tmp / "pids", 2, "the command and its child to start")
    (guard,) = _children(runner.pid) - {command}
    if how == "exit":
        os.kill(command, signal.SIGTERM)  # the command exits 5 of its own accord
    else:
        os.killpg(runner.pid, signal.SIGINT)
    assert runner.wait(30) == 5
    assert not os.path.exists(f"/proc/{guard}")
    assert run.left() == []
    assert len(_pids(run.tmp / "term")) == 1
    assert GUARD_SAYS not in run.stderr()


def test_sigkill_while_stopping_after_ctrl_c(run: Run) -> None:
    """Ctrl-C (SIGINT to the foreground process group) reaches the runner, which sends the stop
    signal; the guard is not ended by it. When the runner is then SIGKILLed before the command
    has stopped, the guard takes over: its own stop signal, then SIGKILL after the timeout."""
    code = _command(run.tmp, on_term="pass", child="trap '' TERM; exec sleep 600")
    runner = run.start("--stop-timeout", "5s", code=code)
    command, child = _wait_pids(run.tmp / "pids", 2, "the command and its child to start")
    os.killpg(runner.pid, signal.SIGINT)
    _wait_pids(run.tmp / "term", 1, "the runner to send the stop signal")
    run.kill9()
    wait_until(lambda: len(_pids(run.tmp / "term")) >= 2, 15, "the guard's stop signal")
    assert _pids(run.tmp / "term") == [command, command]
    wait_until(lambda: not alive(command) and not alive(child), 15, "SIGKILL after the timeout")
    wait_until(lambda: not run.left(), 10, "every process of the run to end")


#: Stands in for a runner killed between a spawn and telling its guard about it, which cannot
#: be hit on purpose through `heartline run` itself: it forks a real guard, starts processes
#: (each in a session of its own, like the Supervisor's spawns), tells the guard of none, writes
#: their pids and waits for its SIGKILL.
WINDOW_RUNNER = """
import os, signal, subprocess, sys, time
from heartline.cli._runguard import RunGuard, _boot_ticks

marker, out = sys.argv[1], sys.argv[2]
guard = RunGuard.start(stop_signal=signal.SIGTERM, stop_timeout=30.0)
guard.mark(marker)

def spawn(address):
    env = {**os.environ, "NOTIFY_SOCKET": address}
    return subprocess.Popen(["sleep", "600"], env=env, start_new_session=True).pid

def start_ticks(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[19])

earlier = spawn(marker)  # e.g. a process an earlier command left in a session of its own
while _boot_ticks() <= start_ticks(earlier):  # the guard compares at clock-tick resolution
    time.sleep(0.001)
guard.drop("run")  # the earlier command was reaped: from here on, nothing is known
spawned = spawn(marker)  # the runner dies before it can tell the guard
other = spawn(marker + "0")  # another run's command
with open(out, "w") as f:
    f.write(f"{guard.pid} {earlier} {spawned} {other}\\n")
signal.pause()
"""


def test_guard_stops_a_command_spawned_before_it_was_told(run: Run) -> None:
    """The runner dies after spawning a command but before telling its guard: the guard finds
    it (a session leader started since the last reap, carrying the run's notify address) and
    stops it. It leaves alone a process with that address started before the last reap, and
    one with another run's address."""
    out = run.tmp / "pids"
    marker = f"@heartline/notify/test-{run.tag}/3"
    with open(run.err, "wb") as err:
        run.proc = subprocess.Popen(
            [PY, "-c", WINDOW_RUNNER, marker, str(out)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=run.env,
            start_new_session=True,
        )
    guard, earlier, spawned, other = wait_until(
        lambda: out.exists() and out.read_text().endswith("\n") and out.read_text().split(),
        20,
        "the stand-in runner to start its processes",
    )
    run.kill9()
    wait_until(lambda: not alive(int(guard)), 15, "the guard to finish")
    assert not alive(int(spawned))
    assert alive(int(earlier)) and alive(int(other))
    assert f"stopping its command (pid {spawned})" in run.stderr()


def test_a_killed_guard_is_reported_and_the_run_goes_on(run: Run) -> None:
    """If the guard itself is killed, `heartline run` says so on stderr (a SIGKILL of it would
    now leave the command running) and goes on supervising: SIGTERM still stops the command."""
    code = _command(run.tmp, on_term="sys.exit(7)", child="exec sleep 600")
    runner = run.start(code=code)
    command, _child = _wait_pids(run.tmp / "pids", 2, "the command and its child to start")
    (guard,) = _children(runner.pid) - {command}
    os.kill(guard, signal.SIGKILL)
    wait_until(lambda: "the guard process" in run.stderr(), 10, "the warning")
    assert alive(command) and runner.poll() is None
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(15) == 7
    assert run.left() == []


def _kernel_has_group_flag() -> bool:
    from heartline.cli._runguard import PIDFD_SIGNAL_PROCESS_GROUP

    # Signal 0 to the group our own pid leads (none: ESRCH) tells whether the flag is known.
    pidfd = os.pidfd_open(os.getpid())
    try:
        signal.pidfd_send_signal(pidfd, 0, None, PIDFD_SIGNAL_PROCESS_GROUP)
    except OSError as e:
        return e.errno != errno.EINVAL
    finally:
        os.close(pidfd)
    return True


@pytest.mark.parametrize("kernel", ["group-flag", "no-group-flag"])
def test_guard_signals_a_group_only_while_it_is_certainly_the_commands(
    run: Run, kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard signals a command's group through a pidfd of its leader. With the kernel's
    process-group flag that reaches the group even after the leader was reaped. Without it
    (an older kernel; faked here with a flag no kernel knows) the guard signals the group by
    its id only while the leader lives, and leaves it alone once the id could be anyone's."""
    from heartline.cli import _runguard

    if kernel == "no-group-flag":
        monkeypatch.setattr(_runguard, "PIDFD_SIGNAL_PROCESS_GROUP", 1 << 30)
    elif not _kernel_has_group_flag():
        pytest.skip("this kernel has no PIDFD_SIGNAL_PROCESS_GROUP (Linux 6.9)")

    def group() -> tuple[subprocess.Popen[bytes], int]:
        leader = subprocess.Popen(
            ["/bin/sh", "-c", "sleep 600 & echo $!; wait"],
            stdout=subprocess.PIPE,
            env=run.env,
            start_new_session=True,
        )
        assert leader.stdout is not None
        with leader.stdout:
            return leader, int(leader.stdout.readline())

    # The leader alive: the whole group gets the signal either way.
    leader, member = group()
    g = _runguard._Group(leader.pid, os.pidfd_open(leader.pid))
    g.signal(signal.SIGKILL)
    assert leader.wait(10) == -signal.SIGKILL
    wait_until(lambda: not alive(member), 10, "the member to be killed")
    os.close(g.pidfd)
    # The leader gone and reaped, a member left: only the flag can reach it with certainty.
    leader, member = group()
    g = _runguard._Group(leader.pid, os.pidfd_open(leader.pid))
    leader.kill()
    leader.wait(10)
    g.signal(signal.SIGKILL)
    if kernel == "group-flag":
        wait_until(lambda: not alive(member), 10, "the member to be killed")
    else:
        assert alive(member)
    os.close(g.pidfd)
