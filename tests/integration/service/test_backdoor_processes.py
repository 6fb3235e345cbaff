"""The backdoor in real programs: sessions over a plain unix socket evaluate code inside the
running program, on its event loop when asked to await, without touching its stdout; the socket
is private, refuses other users and disappears when the program exits."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

#: Bounds a broken test; a healthy one takes a fraction of a second.
LIMIT = 20

ASYNC_APP = """
import asyncio, sys, threading
from heartline.service import backdoor

stop = threading.Event()
emit = threading.Event()
emitted = threading.Event()

def app_worker_waiting():
    stop.wait()

def app_printer():
    emit.wait()
    if not stop.is_set():
        print("APP-OUTPUT from the program itself", flush=True)
        emitted.set()

threading.Thread(target=app_worker_waiting, name="app-worker").start()
threading.Thread(target=app_printer, name="app-printer", daemon=True).start()

async def main():
    backdoor.install(sys.argv[1])
    print("ready", flush=True)
    # The program runs until its stdin closes.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    stop.set()
    emit.set()

asyncio.run(main())
print("bye", flush=True)
"""

SYNC_APP = """
import sys
from heartline.service import backdoor

backdoor.install(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
print("bye", flush=True)
"""


def wait_for(fn: Callable[[], object], timeout: float = LIMIT, what: str = "condition") -> None:
    """Call ``fn`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


class App:
    """A program with the backdoor installed at ``path``; it exits once its stdin is closed."""

    def __init__(self, source: str, directory: Path) -> None:
        prog = directory / "prog.py"
        prog.write_text(textwrap.dedent(source).lstrip("\n"))
        self.path = directory / "bd.sock"
        self.proc = subprocess.Popen(
            [sys.executable, str(prog), str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: self.path.exists() or self.proc.poll() is not None, what="the socket")
        assert self.proc.poll() is None, self.proc.communicate()

    def finish(self) -> tuple[int, str, str]:
        """Close stdin, let the program end normally; its exit code, stdout and stderr."""
        out, err = self.proc.communicate(input="", timeout=LIMIT)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=LIMIT)


class Session:
    """A client on a plain socket that reads up to each prompt (as `socat` would show it)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(LIMIT)
        self.sock.connect(str(path))
        self.banner = self.read_to_prompt()

    def read_to_prompt(self, prompts: tuple[bytes, ...] = (b">>> ", b"... ")) -> str:
        data = b""
        while not data.endswith(prompts):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"session ended; got {data!r}")
            data += chunk
        return data[:-4].decode()

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def ask(self, line: str) -> str:
        self.send(line)
        return self.read_to_prompt()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A private temporary directory with a short path (unix socket paths are limited)."""
    directory = Path(tempfile.mkdtemp(prefix="hl-bd-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def start(short_dir: Path) -> Iterator[Callable[[str], App]]:
    """Start programs in ``short_dir``; kill whatever is still running at the end."""
    apps: list[App] = []

    def run(source: str) -> App:
        app = App(source, short_dir)
        apps.append(app)
        return app

    try:
        yield run
    finally:
        for app in apps:
            app.kill()


@pytest.fixture
def sessions() -> Iterator[Callable[[Path], Session]]:
    """Open sessions; all closed at the end."""
    opened: list[Session] = []

    def open_session(path: Path) -> Session:
        s = Session(path)
        opened.append(s)
        return s

    try:
        yield open_session
    finally:
        for s in opened:
            s.close()


def test_expressions_statements_and_blocks(
    start: Callable[[str], App], sessions: Callable[[Path], Session]
) -> None:
    """A session shows a banner, then evaluates expressions (echoing their repr), statements
    (silent), multi-line blocks (after a blank line, with the '... ' prompt) and shows errors as
    tracebacks; the program keeps running and ends normally."""
    app = start(SYNC_APP)
    s = sessions(app.path)
    assert f"heartline backdoor: pid {app.proc.pid}" in s.banner
    assert s.ask("import os") == ""
    assert s.ask("os.getpid()") == f"{app.proc.pid}\n"
    assert s.ask("total = 0") == ""
    s.send("for i in range(4):")
    assert s.sock.recv(4) == b"... "
    assert s.ask("    total += i") == ""
    assert s.ask("") == ""
    assert s.ask("total, 'text'") == "(6, 'text')\n"
    assert s.ask("def f(x):") == ""
    assert s.ask("    return x * 2") == ""
    assert s.ask("") == ""
    assert s.ask("f(21)") == "42\n"
    assert s.ask("f(") == ""
    assert s.ask("  'a')") == "'aa'\n"
    assert "ZeroDivisionError: division by zero" in s.ask("f(1/0)")
    assert s.ask("main.__name__") == "'__main__'\n"
    s.close()
    code, out, err = app.finish()
    assert (code, out) == (0, "ready\nbye\n"), err


def test_threads_shows_the_programs_threads(
    start: Callable[[str], App], sessions: Callable[[Path], Session]
) -> None:
    """threads() lists every thread of the program by name, with the function it is in."""
    app = start(ASYNC_APP)
    text = sessions(app.path).ask("threads()")
    assert "Thread 'app-worker' (ident 0x" in text
    assert "in app_worker_waiting" in text
    assert "Thread 'MainThread'" in text
    assert "<-- this backdoor session" in text


def test_await_runs_on_the_programs_loop(
    start: Callable[[str], App], sessions: Callable[[Path], Session]
) -> None:
    """`await` at the prompt runs on the program's event loop (in its main thread) and gives
    the result; tasks() shows the program's task."""
    app = start(ASYNC_APP)
    s = sessions(app.path)
    assert s.ask("await asyncio.sleep(0, result=42)") == "42\n"
    assert s.ask("import threading") == ""
    assert s.ask("async def where(): return threading.current_thread().name") == ""
    assert s.ask("") == ""
    assert s.ask("await where()") == "'MainThread'\n"
    assert s.ask("r = await asyncio.sleep(0, result='kept')") == ""
    assert s.ask("r") == "'kept'\n"
    assert "Task 'Task-1' coroutine main()" in s.ask("tasks()")
    code, _, err = app.finish()
    assert code == 0, err


def test_await_without_a_loop_says_why(
    start: Callable[[str], App], sessions: Callable[[Path], Session]
) -> None:
    """In a program without an event loop, `await` fails with a message naming the cause, and
    the session goes on."""
    app = start(SYNC_APP)
    s = sessions(app.path)
    assert s.ask("import asyncio") == ""
    text = s.ask("await asyncio.sleep(0)")
    assert "RuntimeError: await needs the program's running event loop" in text
    assert s.ask("1 + 1") == "2\n"


def test_two_sessions_have_their_own_namespace_and_output(
    start: Callable[[str], App], sessions: Callable[[Path], Session]
) -> None:
    """Two sessions open at once keep separate variables, and output printed concurrently by
    each goes to its own client only."""
    app = start(SYNC_APP)
    one, two = sessions(app.path), sessions(app.path)
    assert one.ask("name = 'one'") == ""
    assert "NameError" in two.ask("name")
    assert two.ask("name = 'two'") == ""
    assert one.ask("name") == "'one'\n"
    loop = "for i in range(300): print(name, i)"
    one.send(loop)
    two.send(loop)
    one.send("")
    two.send("")
    # "... " after the first line, then the output and ">>> ", as one or several chunks.
    out_one = one.read_to_prompt((b">>> ",)).removeprefix("... ")
    out_two = two.read_to_prompt((b">>> ",)).removeprefix("... ")
    assert out_one.split() == [w for i in range(300) for w in ("one", str(i))]
    assert out_two.split() == [w for i in range(300) for w in ("two", str(i))]


def test_the_programs_stdout_stays_its_own(
    start: Callable[[str], App], sessions: Callable[[Path], Session]
) -> None:
    """While a session is open, what the program prints goes to its own stdout, not to the
    session; what the session evaluates and prints does not reach the program's stdout."""
    app = start(ASYNC_APP)
    s = sessions(app.path)
    assert s.ask("print('SESSION-PRINT'); 12345") == "SESSION-PRINT\n12345\n"
    assert s.ask("main.emit.set()") == ""
    assert s.ask("main.emitted.wait(10)") == "True\n"
    assert "APP-OUTPUT" not in s.ask("'still here'")
    code, out, err = app.finish()
    assert code == 0, err
    assert out == "ready\nAPP-OUTPUT from the program itself\nbye\n"


def test_socket_is_private_and_removed_at_exit(
    start: Callable[[str], App], sessions: Callable[[Path], Session]
) -> None:
    """The socket file is 0600 while the program runs and is gone once it exits normally."""
    app = start(SYNC_APP)
    assert stat.S_IMODE(os.lstat(app.path).st_mode) == 0o600
    assert stat.S_ISSOCK(os.lstat(app.path).st_mode)
    sessions(app.path).ask("1")  # a session still open at exit does not keep the file
    code, _, err = app.finish()
    assert code == 0, err
    assert not app.path.exists()
    assert err == ""


def test_the_client_helper_drives_a_session(start: Callable[[str], App]) -> None:
    """backdoor.connect(path) sends the lines it reads, prints the output and ends at EOF."""
    app = start(SYNC_APP)
    code = "import sys; from heartline.service import backdoor; backdoor.connect(sys.argv[1])"
    client = subprocess.run(
        [sys.executable, "-c", code, str(app.path)],
        input="6 * 7\nfor c in 'ab':\n    print(c)\n\n",
        capture_output=True,
        text=True,
        timeout=LIMIT,
    )
    assert client.returncode == 0, client.stderr
    assert "heartline backdoor: pid" in client.stdout
    assert "42\n" in client.stdout
    assert "a\nb\n" in client.stdout


NOBODY_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print("connect failed:", type(exc).__name__)
    sys.exit(0)
data = b""
while chunk := s.recv(4096):
    data += chunk
print("got:", data.decode())
"""


def run_as_nobody(path: Path) -> str:
    setpriv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    proc = subprocess.run(
        [*setpriv, "/usr/bin/python3", "-I", "-c", NOBODY_CLIENT, str(path)],
        capture_output=True,
        text=True,
        timeout=LIMIT,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


needs_nobody = pytest.mark.skipif(
    os.getuid() != 0 or not shutil.which("setpriv") or not os.path.exists("/usr/bin/python3"),
    reason="needs root, setpriv and /usr/bin/python3 to run a client as nobody",
)


@needs_nobody
def test_another_user_is_refused_by_peer_credentials(
    start: Callable[[str], App], short_dir: Path
) -> None:
    """Even with the file modes opened up on purpose (directory 0711, socket 0666), a client
    running as nobody gets a one-line refusal and no prompt: SO_PEERCRED decides."""
    app = start(SYNC_APP)
    short_dir.chmod(0o711)
    os.chmod(app.path, 0o666)
    out = run_as_nobody(app.path)
    assert out == "got: heartline backdoor: permission denied for uid 65534\n\n"
    code, _, err = app.finish()
    assert code == 0, err


@needs_nobody
def test_another_user_cannot_even_connect_with_default_modes(
    start: Callable[[str], App], short_dir: Path
) -> None:
    """With the modes the backdoor sets (socket 0600), nobody's connect() is refused by the
    kernel, whether the directory is private (0700) or only traversable (0711)."""
    app = start(SYNC_APP)
    assert run_as_nobody(app.path) == "connect failed: PermissionError\n"
    short_dir.chmod(0o711)
    assert run_as_nobody(app.path) == "connect failed: PermissionError\n"


FORK_APP = """
import os, sys
from heartline.service import backdoor

bd = backdoor.install(sys.argv[1])
pid = os.fork()
if pid == 0:
    sys.exit(0)  # the child's exit runs atexit, which closes its copy of the backdoor
os.waitpid(pid, 0)
print("child gone", flush=True)
sys.stdin.read()
"""


def test_a_forked_child_leaves_the_parents_backdoor_alone(
    start: Callable[[str], App], sessions: Callable[[Path], Session]
) -> None:
    """A child forked after install() that exits normally does not remove the socket file nor
    stop the parent's backdoor."""
    app = start(FORK_APP)
    assert app.proc.stdout is not None
    assert app.proc.stdout.readline() == "child gone\n"
    assert app.path.exists()
    assert sessions(app.path).ask("1 + 2") == "3\n"
    code, _, err = app.finish()
    assert code == 0, err
    assert not app.path.exists()


LATE_LOOP_APP = """
import asyncio, sys
from heartline.service import backdoor

backdoor.install(sys.argv[1])  # before the loop exists

async def main():
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def test_await_finds_a_loop_started_after_install(
    start: Callable[[str], App], sessions: Callable[[Path], Session]
) -> None:
    """When install() ran before the program started its loop, `await` uses the one running
    loop of the process."""
    app = start(LATE_LOOP_APP)
    assert app.proc.stdout is not None
    assert app.proc.stdout.readline() == "ready\n"
    s = sessions(app.path)
    assert s.ask("import asyncio") == ""
    assert s.ask("await asyncio.sleep(0, result='late')") == "'late'\n"
    code, _, err = app.finish()
    assert code == 0, err


SHORT_AWAIT_APP = """
import asyncio, sys
from heartline.service import backdoor

async def main():
    backdoor.install(sys.argv[1], await_timeout=0.3)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def test_an_await_that_takes_too_long_is_cancelled(
    start: Callable[[str], App], sessions: Callable[[Path], Session]
) -> None:
    """An awaited coroutine still running after await_timeout is cancelled on the program's
    loop, with a message saying so; the session and the loop go on."""
    app = start(SHORT_AWAIT_APP)
    s = sessions(app.path)
    assert s.ask("import asyncio, time") == ""
    assert s.ask("state = []") == ""
    assert s.ask("async def slow():") == ""
    assert s.ask("    try: await asyncio.sleep(30)") == ""
    assert s.ask("    except asyncio.CancelledError: state.append('cancelled'); raise") == ""
    assert s.ask("") == ""
    text = s.ask("await slow()")
    assert (
        "TimeoutError: await did not finish within 0.3 s on the program's loop; cancelled" in text
    )
    assert s.ask("await asyncio.sleep(0, result=state)") == "['cancelled']\n"
    code, _, err = app.finish()
    assert code == 0, err


DEFAULT_PATH_APP = """
import sys
from heartline.service import backdoor

bd = backdoor.install()
print(bd.path, flush=True)
sys.stdin.read()
"""


def test_sockets_of_killed_programs_are_swept_from_the_default_directory(short_dir: Path):
    """A program SIGKILLed leaves its socket; the next install() in that directory removes it,
    and leaves a live program's socket alone."""
    env = {**os.environ, "XDG_RUNTIME_DIR": str(short_dir)}
    procs: list[subprocess.Popen[str]] = []

    def start() -> tuple[subprocess.Popen[str], Path]:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(DEFAULT_PATH_APP)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        procs.append(proc)
        assert proc.stdout is not None
        return proc, Path(proc.stdout.readline().strip())

    try:
        killed, stale = start()
        live, kept = start()
        killed.kill()
        killed.wait(LIMIT)
        assert stale.exists()  # SIGKILL: no atexit hook ran
        _third, fresh = start()
        assert not stale.exists()
        assert kept.exists() and fresh.exists()
        assert live.poll() is None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=LIMIT)


def test_socket_is_removed_when_sigterm_ends_the_program(short_dir: Path):
    """A program that leaves SIGTERM at its default still dies of SIGTERM, and its socket goes
    with it; one with a SIGTERM handler of its own keeps its handler."""
    env = {**os.environ, "XDG_RUNTIME_DIR": str(short_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(DEFAULT_PATH_APP)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        path = Path(proc.stdout.readline().strip())
        assert path.exists()
        proc.terminate()
        assert proc.wait(LIMIT) == -15
        assert not path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=LIMIT)
    own = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
            import signal
            from heartline.service import backdoor
            mine = lambda *a: None
            signal.signal(signal.SIGTERM, mine)
            bd = backdoor.install()
            assert signal.getsignal(signal.SIGTERM) is mine
            bd.close()
            print("kept")
        """),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=LIMIT,
    )
    assert own.stdout.strip() == "kept", own.stderr
