"""notify on the wire: real programs send to a real supervisor socket, as systemd would see it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator

import pytest
from tests.unit.service.conftest import Supervisor

#: WATCHDOG_USEC of these programs: the pinger looks every 50 ms.
USEC = 100_000
PERIOD = USEC / 2e6


class Listener(Supervisor):
    """The supervisor's end of NOTIFY_SOCKET: a datagram socket bound in a short directory."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="hl-wire-")
        self.path = os.path.join(self.directory, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(self.path)
        super().__init__(sock, self.path)

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def recv(self, timeout: float = 10.0) -> bytes:
        return super().recv(timeout)

    def until(self, last: bytes, timeout: float = 10.0) -> list[bytes]:
        """Every datagram up to and including the first equal to ``last``."""
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while not got or got[-1] != last:
            got.append(self.recv(max(0.0, deadline - time.monotonic())))
        return got


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A notify socket for one test, removed afterwards."""
    lst = Listener()
    try:
        yield lst
    finally:
        lst.close()


def start_py(code: str, listener: Listener, **env: str) -> subprocess.Popen[str]:
    """Start ``code`` supervised by ``listener`` with the watchdog of USEC microseconds."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_PID",)}
    full_env.update({"NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": str(USEC), **env})
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], stdin: str = "") -> tuple[str, str]:
    try:
        out, err = proc.communicate(stdin, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return out, err


SDNOTIFY_PROGRAM = """
    import time
    import sdnotify

    n = sdnotify.SystemdNotifier(debug=True)
    n.notify("READY=1")
    n.notify("STATUS=working")
    for _ in range(3):
        time.sleep(0.01)
        n.notify("WATCHDOG=1")
    n.notify("STOPPING=1")
"""

HEARTLINE_PROGRAM = """
    import sys, time
    from heartline.service import notify

    notify.ready()
    notify.status("working")
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        notify.kick()
        time.sleep(0.005)
    sys.stdin.read()  # the test says when the pings have been seen
    notify.stopping()
"""


def test_heartline_and_sdnotify_speak_the_same_wire_format(listener: Listener) -> None:
    """A program using the sdnotify package and one using heartline.service.notify deliver the
    same datagrams (READY=1, STATUS=..., WATCHDOG=1, STOPPING=1) to a supervisor socket."""
    proc = start_py(SDNOTIFY_PROGRAM, listener)
    theirs = listener.until(b"STOPPING=1")
    finish(proc)

    proc = start_py(HEARTLINE_PROGRAM, listener)
    ours = listener.until(b"WATCHDOG=1")
    finish(proc)
    ours += listener.until(b"STOPPING=1")

    assert theirs == [b"READY=1", b"STATUS=working"] + [b"WATCHDOG=1"] * 3 + [b"STOPPING=1"]
    assert ours[:2] == [b"READY=1", b"STATUS=working"]
    assert ours[-1] == b"STOPPING=1"
    assert set(ours[2:-1]) == {b"WATCHDOG=1"}
    assert set(ours) == set(theirs)


def test_abstract_socket_works_for_both(listener: Listener) -> None:
    """NOTIFY_SOCKET=@name reaches the same abstract socket from sdnotify and from heartline."""
    name = f"heartline-wire-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(10)
        for code in (
            "import sdnotify; sdnotify.SystemdNotifier(debug=True).notify('READY=1')",
            "from heartline.service import notify; assert notify.ready()",
        ):
            proc = start_py(code, listener, NOTIFY_SOCKET="@" + name)
            finish(proc)
            assert sock.recv(100) == b"READY=1"


def test_a_hung_program_stops_being_pinged(listener: Listener) -> None:
    """Pings follow kicks: once the program hangs (alive, but no longer kicking) the pinger
    sends nothing more, so the supervisor's watchdog can fire."""
    proc = start_py(
        """
        import sys, time
        from heartline.service import notify

        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            notify.kick()
            time.sleep(0.005)
        print("hung", flush=True)
        sys.stdin.read()  # alive, not kicking, until the test is done
        """,
        listener,
    )
    try:
        assert listener.recv() == b"WATCHDOG=1"
        assert proc.stdout is not None
        assert proc.stdout.readline() == "hung\n"
        listener.quiet_for(2 * PERIOD)  # the ping for the last kicks, if not sent yet
        assert listener.quiet_for(6 * PERIOD) == []
        assert proc.poll() is None
    finally:
        finish(proc)


def test_a_forked_child_does_not_ping_for_its_parent(listener: Listener) -> None:
    """After fork, the child has no pinger (WATCHDOG_PID names the parent) though it kicks;
    the parent's pinger keeps working; explicit messages still go from both."""
    proc = start_py(
        """
        import os, sys, threading
        os.environ["WATCHDOG_PID"] = str(os.getpid())
        from heartline.service import notify

        def pinger():
            return any(t.name == "heartline-notify-pinger" for t in threading.enumerate())

        kick = notify.kick  # the first look-up starts the pinger
        assert pinger()
        pid = os.fork()
        if pid == 0:
            for _ in range(100):
                kick()
                notify.kick()
            ok = not pinger()
            notify.status(f"child pinger absent: {ok}")
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        sys.stdin.readline()  # the test has seen that the child's kicks gave no ping
        kick()
        sys.stdin.read()  # the test has seen the parent's ping
        """,
        listener,
    )
    try:
        assert listener.recv() == b"STATUS=child pinger absent: True"
        assert listener.quiet_for(4 * PERIOD) == []
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert listener.recv() == b"WATCHDOG=1"
    finally:
        finish(proc)
