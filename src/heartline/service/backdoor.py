"""A Python prompt inside a running program, over an owner-only unix socket.

``install()`` binds a unix socket and serves an interactive interpreter on it; ``connect()`` (and
later ``heartline attach``) gives a terminal with line editing, and plain
``socat - UNIX-CONNECT:PATH`` works too. Nothing runs until ``install()`` is called, and there is
never a TCP listener.

**Who may connect.** The socket lives in a directory only its owner may enter (0700, checked:
one owned by someone else or open to group/other is refused) and is itself 0600. Whatever the
file modes, the peer's credentials (``SO_PEERCRED``) are checked on every connection: only the
same uid or root get a prompt; anyone else gets a one-line refusal and the connection is closed.

**Where.** ``$XDG_RUNTIME_DIR/heartline/backdoor/``, else ``/run/heartline/backdoor`` for root,
else ``/tmp/heartline-<uid>/backdoor``; the file is ``<prog>-<pid>.sock``. A stale socket left by
a dead process (nobody answers) is removed at start; a live one (someone answers) or a path that
is not a socket is refused. The socket file is removed by :meth:`Backdoor.close` and at exit;
when SIGTERM ends a program that left it at its default, a small handler removes the file and
lets SIGTERM end the program as before (it only runs once the main thread returns to Python).
Sockets of processes that died without either (SIGKILL) are swept from the default directory
by the next ``install()`` there.
A path given to ``install()`` needs an existing directory that only we or root may write (or a
sticky one); it need not be 0700, the peer check still applies. The socket is bound under a
temporary name in that directory and renamed into place once 0600 and listening, so
``/proc/net/unix`` shows the temporary name (``.<pid>-<n>.tmp``) for it.

**Sessions.** Each connection gets its own thread and namespace (sessions are rare, and a thread
blocked in ``recv()`` costs nothing). The process's ``sys.stdout``, ``sys.stderr`` and
``sys.displayhook`` are never touched: the session's namespace has its own ``print``, and the
value of each top-level expression statement is shown by the session itself. Helpers at the
prompt: ``threads()``, ``tasks()``, ``objects()``, ``report()``, ``help()``, and ``main`` (the
program's ``__main__`` module).

**await.** ``await`` at the prompt runs on the program's event loop: the loop that was running
when ``install()`` was called, the one given as ``loop=``, or else the only running loop found
among live objects. It waits ``await_timeout`` seconds, then cancels.

**Audit.** The logger ``heartline.backdoor`` gets an INFO line per session opened and closed and
per command (the peer's uid and pid, the command cut to 200 characters), and a WARNING per
refused peer.

**Limits.** Functions defined at the prompt keep printing to their session when the program
calls them later from its own threads (nothing is printed once the session has ended). Code at
the prompt runs in the session's thread like any other thread: a command that loops forever
keeps its session busy (the program goes on; disconnecting does not stop it).
``sys.stdout.write`` and C code still write to the program's own stdout: use ``print``. Only
top-level expression statements are echoed (not those inside ``for`` blocks). ``input()`` reads
the program's stdin. A forked child inherits no backdoor (its exit leaves the parent's alone).
"""

from __future__ import annotations

import ast
import atexit
import builtins
import contextlib
import errno
import gc
import logging
import os
import re
import socket
import stat
import struct
import sys
import threading
import traceback

from heartline.errors import HeartlineError

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from types import CodeType

__all__ = [
    "Backdoor",
    "BackdoorError",
    "BackdoorInUse",
    "UnsafePath",
    "connect",
    "default_path",
    "install",
]

log = logging.getLogger("heartline.backdoor")

PROMPT = ">>> "
PROMPT_MORE = "... "
#: Longest socket path Linux accepts (sun_path is 108 bytes with the terminating NUL).
_MAX_PATH = 107
#: A line longer than this ends the session (nobody types a megabyte).
_MAX_LINE = 1 << 20
#: Characters of a command kept in the audit log.
_AUDIT_CHARS = 200
#: Seconds a write to a session may block (a client that stops reading) before it fails.
_SEND_TIMEOUT = 30.0
#: Seconds close() waits for the accept thread.
_JOIN_TIMEOUT = 5.0
_FILENAME = "<backdoor>"
_TOP_LEVEL_AWAIT: int = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
# codeop's flags, spelled out: codeop itself toggles the process-wide warning filters while it
# compiles (warnings.catch_warnings), which is not thread-safe and not ours to change.
_INCOMPLETE_FLAGS = 0x4000 | 0x200  # PyCF_ALLOW_INCOMPLETE_INPUT | PyCF_DONT_IMPLY_DEDENT

_active_lock = threading.Lock()
_active: dict[str, Backdoor] = {}


class BackdoorError(HeartlineError):
    """The backdoor cannot be installed or reached."""


class UnsafePath(BackdoorError):
    """The socket path or its directory is unsafe: not a socket, not ours, or open to others."""


class BackdoorInUse(BackdoorError):
    """Something already answers on the socket path."""

    exit_code = 6


# --- paths and permissions -------------------------------------------------------------------


def default_dir() -> str:
    """Directory of the default socket path (see the module's documentation)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "heartline", "backdoor")
    if os.getuid() == 0:
        return "/run/heartline/backdoor"
    return f"/tmp/heartline-{os.getuid()}/backdoor"


def default_path(pid: int | None = None) -> str:
    """``<default dir>/<prog>-<pid>.sock`` for this program (or for ``pid``)."""
    return os.path.join(default_dir(), f"{_prog_name()}-{pid or os.getpid()}.sock")


def _prog_name() -> str:
    arg0 = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else "python"
    name = os.path.basename(arg0)
    if name in ("__main__.py", "__init__.py"):
        name = os.path.basename(os.path.dirname(arg0)) or "python"
    name = name.removesuffix(".py")
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:40] or "python"


def _check_dir(path: str, *, private: bool) -> None:
    """Refuse ``path`` unless it is a real directory (not a symlink) owned by us or root and
    writable by nobody else; with ``private``, owned by us and closed to group and other."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{path} is not a directory")
    uid = os.getuid()
    if private:
        if st.st_uid != uid:
            raise UnsafePath(f"{path} belongs to uid {st.st_uid}, not to us (uid {uid})")
        if st.st_mode & 0o077:
            raise UnsafePath(
                f"{path} is open to group or other (mode {stat.S_IMODE(st.st_mode):04o}); "
                "it must be 0700"
            )
        return
    if st.st_uid not in (uid, 0):
        raise UnsafePath(f"{path} belongs to uid {st.st_uid}, neither us (uid {uid}) nor root")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise UnsafePath(
            f"{path} is writable by group or other (mode {stat.S_IMODE(st.st_mode):04o})"
        )


def _make_dir(path: str, *, private: bool) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    _check_dir(path, private=private)


def ensure_private_dir(path: str) -> None:
    """Create ``path`` (0700) and any missing parents below an existing ancestor, refusing any
    existing part that others could tamper with; ``path`` itself must end up ours and 0700."""
    path = os.path.abspath(path)
    missing: list[str] = []
    head = path
    while not os.path.lexists(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    if path not in missing:
        _check_dir(path, private=True)
        return
    for part in reversed(missing):
        _make_dir(part, private=part == path)


def _probe(path: str) -> None:
    """Make ``path`` free for a new socket: remove a stale socket, refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UnsafePath(f"{path} exists and is not a socket; not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        # Nobody listens: a socket left by a process that died. Only unlink what we looked at.
        try:
            again = os.lstat(path)
        except FileNotFoundError:
            return
        if (again.st_dev, again.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(path)
            log.info("backdoor: removed stale socket %s", path)
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BackdoorError(f"cannot check {path}: {exc}") from exc
    finally:
        probe.close()
    raise BackdoorInUse(f"{path} is in use: another process answers on it")


_SOCKET_NAME = re.compile(r"^(?:.+-(\d+)\.sock|\.(\d+)-\d+\.tmp)$")
#: Entries looked at per sweep, so a directory flooded with files cannot stall install().
_SWEEP_LIMIT = 1000


def _sweep(directory: str) -> None:
    """Remove the sockets of dead processes from our private default directory.

    A program killed with SIGKILL never runs its atexit hook, so every such death would leave
    a ``<prog>-<pid>.sock`` behind for ever. Only entries named after a pid that no longer
    exists are looked at, and each goes through :func:`_probe`, which unlinks a socket only
    when nobody answers on it.
    """
    try:
        names = os.listdir(directory)[:_SWEEP_LIMIT]
    except OSError:
        return
    for name in names:
        m = _SOCKET_NAME.match(name)
        if m is None:
            continue
        pid = int(m.group(1) or m.group(2))
        if pid == os.getpid() or os.path.exists(f"/proc/{pid}"):
            continue
        with contextlib.suppress(OSError, BackdoorError):
            _probe(os.path.join(directory, name))


def _remove_on_sigterm() -> None:
    """Remove the socket files when SIGTERM ends the program the default way.

    SIGTERM's default action ends a process without running atexit hooks, which left a socket
    behind for every program stopped by a supervisor. Only when the program left SIGTERM at
    its default (and from the main thread, where handlers are set) is a handler installed; it
    unlinks the files, restores the default and sends SIGTERM again, so the program still dies
    of SIGTERM. A program with a SIGTERM handler of its own is left alone: its handler usually
    ends in sys.exit(), which runs the atexit hook.
    """
    import signal

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_term(signum: int, _frame: object) -> None:
        for bd in list(_active.values()):
            if bd._pid == os.getpid():
                with contextlib.suppress(OSError):
                    st = os.lstat(bd.path)
                    if (st.st_dev, st.st_ino) == bd._ident:
                        os.unlink(bd.path)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_term)


# --- server ----------------------------------------------------------------------------------


def install(
    path: str | os.PathLike[str] | None = None,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    await_timeout: float = 30.0,
) -> Backdoor:
    """Serve a prompt on a unix socket at ``path`` (default: :func:`default_path`).

    ``loop`` is the event loop ``await`` at the prompt runs on; by default the loop running when
    ``install()`` is called, if any. Raises :class:`UnsafePath` or :class:`BackdoorInUse` when
    the path cannot be used safely.
    """
    if loop is None and "asyncio" in sys.modules:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
    return Backdoor(path, loop=loop, await_timeout=await_timeout)


class Backdoor:
    """A listening backdoor socket and its sessions. Use :func:`install` to make one."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        await_timeout: float = 30.0,
    ) -> None:
        if path is None:
            ensure_private_dir(default_dir())
            _sweep(default_dir())
            path = default_path()
        else:
            path = os.path.abspath(os.fspath(path))
            _check_dir(os.path.dirname(path), private=False)
        if len(os.fsencode(path)) > _MAX_PATH:
            raise BackdoorError(f"socket path is longer than {_MAX_PATH} bytes: {path}")
        #: Where the socket is.
        self.path: str = path
        #: The event loop ``await`` at the prompt runs on (may be set later).
        self.loop = loop
        self.await_timeout = await_timeout
        self._pid = os.getpid()
        self._closed = False
        self._lock = threading.Lock()
        self._sessions: dict[int, _Session] = {}
        self._count = 0
        with _active_lock:
            if path in _active:
                raise BackdoorInUse(f"{path} is in use by this process")
            _probe(path)
            self._sock, self._ident = self._bind(path)
            _active[path] = self
        self._thread = threading.Thread(
            target=self._accept_loop, name="heartline-backdoor", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)
        _remove_on_sigterm()
        log.info("backdoor: listening on %s", path)

    @staticmethod
    def _bind(path: str) -> tuple[socket.socket, tuple[int, int]]:
        # Bound under a temporary name, made 0600, listening, and only then renamed into place:
        # the path never shows a socket with the umask's mode, nor one that refuses connections.
        tmp = os.path.join(os.path.dirname(path), f".{os.getpid()}-{threading.get_ident()}.tmp")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            sock.bind(tmp)
            try:
                os.chmod(tmp, 0o600)
                sock.listen(8)
                os.rename(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
            st = os.lstat(path)
        except BaseException:
            sock.close()
            raise
        return sock, (st.st_dev, st.st_ino)

    def __enter__(self) -> Backdoor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._sessions)} sessions"
        return f"<Backdoor {self.path} ({state})>"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Stop listening, end every session and remove the socket file. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sessions = list(self._sessions.values())
        atexit.unregister(self.close)
        with _active_lock:
            if _active.get(self.path) is self:
                del _active[self.path]
        if os.getpid() != self._pid:
            # A forked child shares the parent's sockets: shutting them down (or unlinking the
            # file) would end the parent's backdoor. Only this process's descriptor goes.
            self._sock.close()
            return
        with contextlib.suppress(OSError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._ident:
                os.unlink(self.path)
        # shutdown() wakes a thread blocked in accept() (close() alone does not, on Linux).
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT)
        self._sock.close()
        for session in sessions:
            session.hang_up()
        log.info("backdoor: closed %s", self.path)

    uninstall = close

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError as exc:
                if self._closed:
                    return
                if exc.errno in (errno.EBADF, errno.EINVAL, errno.ENOTSOCK):
                    log.error("backdoor: %s stopped listening: %s", self.path, exc)
                    return
                log.warning("backdoor: accept failed: %s", exc)
                # Out of descriptors and the like: a short pause instead of a busy loop.
                threading.Event().wait(0.1)
                continue
            try:
                self._admit(conn)
            except Exception:
                log.exception("backdoor: could not start a session")
                conn.close()

    def _admit(self, conn: socket.socket) -> None:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", raw)
        if uid not in (os.getuid(), 0):
            log.warning("backdoor: refused peer uid %d pid %d", uid, pid)
            with contextlib.suppress(OSError):
                conn.sendall(f"heartline backdoor: permission denied for uid {uid}\n".encode())
            conn.close()
            return
        with self._lock:
            if self._closed:
                conn.close()
                return
            self._count += 1
            session = _Session(self, conn, self._count, uid=uid, pid=pid)
            self._sessions[session.number] = session
        threading.Thread(
            target=session.serve, name=f"heartline-backdoor-session-{session.number}", daemon=True
        ).start()

    def _forget(self, session: _Session) -> None:
        with self._lock:
            self._sessions.pop(session.number, None)

    def _find_loop(self) -> asyncio.AbstractEventLoop | None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            return loop
        if "asyncio" not in sys.modules:
            return None
        import asyncio

        running = [
            o
            for o in gc.get_objects()
            if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()
        ]
        return running[0] if len(running) == 1 else None


class _EndSession(Exception):
    pass


class _Quit:
    def __repr__(self) -> str:
        return "Use exit() or Ctrl-D (EOF) to end the session; the program keeps running."

    def __call__(self, code: object = None) -> None:
        raise _EndSession


_HELP = """\
heartline backdoor: a Python prompt inside pid {pid}. Each session has its own namespace.
  threads()              every thread's stack
  tasks()                the asyncio tasks of the program's loop, with their await chains
  objects()              the most common types among live objects (gc)
  objects(T or "name")   the live objects of a type, as a list
  report()               the program's report (heartline.service.reports), if available
  main                   the program's __main__ module
  await ...              runs on the program's event loop (timeout {timeout:g} s)
  help(obj)              documentation of obj
  exit() or Ctrl-D       end the session; the program keeps running
print() writes to this session; sys.stdout is still the program's own.
"""


class _Session:
    """One connection: reads lines, runs complete commands, writes their output back.

    Not a ``code.InteractiveInterpreter``: its compiler (codeop) swaps the process-wide warning
    filters while it compiles, its 'single' mode prints through the process-wide
    ``sys.displayhook``, and its tracebacks go through ``sys.excepthook`` when the program set
    one, and set ``sys.last_*``. Each of those would reach outside the session.
    """

    def __init__(
        self, backdoor: Backdoor, conn: socket.socket, number: int, *, uid: int, pid: int
    ) -> None:
        self.backdoor = backdoor
        self.conn = conn
        self.number = number
        self.uid = uid
        self.pid = pid
        self._buffer: list[str] = []
        self._pending = b""
        self._broken = False
        self.namespace: dict[str, object] = {
            "__name__": "__backdoor__",
            "__builtins__": builtins,
            "print": self.print,
            "help": self.help,
            "exit": _Quit(),
            "quit": _Quit(),
            "threads": self.threads,
            "tasks": self.tasks,
            "objects": self.objects,
            "report": self.report,
            "main": sys.modules.get("__main__"),
        }
        if "asyncio" in sys.modules:
            self.namespace["asyncio"] = sys.modules["asyncio"]

    # output

    def write(self, text: str) -> None:
        """Send ``text`` to the client; after a failed write the session drops its output."""
        if self._broken or not text:
            return
        try:
            self.conn.sendall(text.encode("utf-8", "backslashreplace"))
        except OSError:
            self._broken = True

    def print(
        self,
        *args: object,
        sep: str | None = " ",
        end: str | None = "\n",
        file: object = None,
        flush: bool = False,
    ) -> None:
        """print() for the session: to the client unless ``file`` is given."""
        if file is not None:
            builtins.print(*args, sep=sep, end=end, file=file, flush=flush)  # type: ignore[call-overload]
            return
        sep = " " if sep is None else sep
        end = "\n" if end is None else end
        self.write(sep.join(str(a) for a in args) + end)

    def help(self, obj: object = None) -> None:
        """Without argument: the backdoor's helpers; else the documentation of ``obj``."""
        if obj is None:
            self.write(_HELP.format(pid=os.getpid(), timeout=self.backdoor.await_timeout))
            return
        import pydoc

        self.write(pydoc.plain(pydoc.render_doc(obj)))

    # helpers

    def threads(self) -> None:
        """Write every thread's stack to the session."""
        from heartline.service._stacks import format_report

        me = threading.get_ident()
        self.write(format_report("threads", marks={me: "this backdoor session"}))

    def tasks(self) -> None:
        """Write the asyncio tasks of the program's loop and their await chains."""
        loop = self.backdoor._find_loop()
        if loop is None:
            self.write("tasks(): no event loop known (pass loop= to install())\n")
            return
        from heartline.service._stacks import format_report

        skip = list(sys._current_frames())
        self.write(format_report("asyncio tasks", skip=skip, loops=[loop]))

    def objects(self, kind: type | str | None = None, *, limit: int = 20) -> list[object] | None:
        """Without argument, write the ``limit`` most common types among objects the garbage
        collector tracks; with a type (or its name, ``"Foo"`` or ``"module.Foo"``), return its
        live instances."""
        everything = gc.get_objects()
        if kind is None:
            counts: dict[type, int] = {}
            for o in everything:
                counts[type(o)] = counts.get(type(o), 0) + 1
            top = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
            lines = [f"{n:>9}  {t.__module__}.{t.__qualname__}" for t, n in top]
            self.write(f"{len(everything)} objects tracked by gc\n" + "\n".join(lines) + "\n")
            return None
        if isinstance(kind, type):
            return [o for o in everything if isinstance(o, kind)]
        name = kind

        def matches(t: type) -> bool:
            return name in (t.__name__, t.__qualname__, f"{t.__module__}.{t.__qualname__}")

        return [o for o in everything if matches(type(o))]

    def report(self) -> None:
        """Write the program's report (heartline.service.reports), when that module exists."""
        import importlib

        try:
            reports = importlib.import_module("heartline.service.reports")
        except ImportError:
            self.write("report(): not available (no heartline.service.reports); try threads()\n")
            return
        text = reports.generate(fmt="text")
        self.write(text if isinstance(text, str) else f"{text!r}\n")

    # the loop

    def hang_up(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)

    def serve(self) -> None:
        log.info("backdoor session %d opened: peer uid %d pid %d", self.number, self.uid, self.pid)
        try:
            self.conn.setsockopt(
                socket.SOL_SOCKET,
                socket.SO_SNDTIMEO,
                struct.pack("ll", int(_SEND_TIMEOUT), 0),
            )
            self.write(
                f"heartline backdoor: pid {os.getpid()} ({_prog_name()}), "
                f"Python {sys.version.split()[0]}; help() lists the helpers, Ctrl-D ends.\n"
            )
            prompt = PROMPT
            while not self._broken:
                self.write(prompt)
                line = self._readline()
                if line is None:
                    break
                prompt = PROMPT_MORE if self.push(line) else PROMPT
        except _EndSession:
            pass
        except Exception:
            log.exception("backdoor session %d failed", self.number)
        finally:
            self.backdoor._forget(self)
            self.conn.close()
            log.info("backdoor session %d closed", self.number)

    def _readline(self) -> str | None:
        while b"\n" not in self._pending:
            if len(self._pending) > _MAX_LINE:
                self.write("line too long; closing the session\n")
                return None
            try:
                chunk = self.conn.recv(65536)
            except OSError:
                return None
            if not chunk:
                if self._pending:
                    # A last line without newline (socat at EOF): run it.
                    line, self._pending = self._pending, b""
                    return line.decode("utf-8", "replace").rstrip("\r")
                return None
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode("utf-8", "replace").rstrip("\r")

    def push(self, line: str) -> bool:
        """Add a line; run the command once complete. True while more lines are needed."""
        self._buffer.append(line)
        source = "\n".join(self._buffer)
        try:
            incomplete = _incomplete(source)
        except (SyntaxError, ValueError, OverflowError) as exc:
            self._buffer.clear()
            self._audit(source)
            self.write("".join(traceback.format_exception_only(type(exc), exc)))
            return False
        if incomplete:
            return True
        self._buffer.clear()
        if source.strip():
            self._audit(source)
            self.run(source)
        return False

    def _audit(self, source: str) -> None:
        text = source if len(source) <= _AUDIT_CHARS else source[: _AUDIT_CHARS - 3] + "..."
        log.info(
            "backdoor session %d (uid %d pid %d) command: %r", self.number, self.uid, self.pid, text
        )

    def run(self, source: str) -> None:
        """Run each top-level statement; show the value of each expression statement."""
        try:
            tree = ast.parse(source, _FILENAME, "exec")
            for stmt in tree.body:
                if isinstance(stmt, ast.Expr):
                    code = compile(
                        ast.Expression(stmt.value), _FILENAME, "eval", _TOP_LEVEL_AWAIT, True
                    )
                    self._display(self._call(code))
                else:
                    module = ast.Module([stmt], type_ignores=[])
                    self._call(compile(module, _FILENAME, "exec", _TOP_LEVEL_AWAIT, True))
        except _EndSession:
            raise
        except SystemExit:
            self.write("SystemExit: the session ends; the program keeps running\n")
            raise _EndSession from None
        except BaseException as exc:
            self._show_error(exc)

    def _call(self, code: CodeType) -> object:
        import inspect

        value = eval(code, self.namespace)  # noqa: S307 - the point of a backdoor
        if not code.co_flags & inspect.CO_COROUTINE:
            return value
        return self._await(value)

    def _await(self, coro: object) -> object:
        import asyncio

        assert asyncio.iscoroutine(coro)
        loop = self.backdoor._find_loop()
        if loop is None or not loop.is_running():
            coro.close()
            raise RuntimeError(
                "await needs the program's running event loop: none is known "
                "(call install() inside the loop, or pass loop=)"
            )
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        timeout = self.backdoor.await_timeout
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(
                f"await did not finish within {timeout:g} s on the program's loop; cancelled"
            ) from None

    def _display(self, value: object) -> None:
        if value is None:
            return
        self.namespace["_"] = value
        try:
            text = repr(value)
        except Exception as exc:
            text = f"<{type(value).__name__} (repr failed: {exc!r})>"
        self.write(text + "\n")

    def _show_error(self, exc: BaseException) -> None:
        # Only the frames of the command itself, not the backdoor's or concurrent.futures'.
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != _FILENAME:
            tb = tb.tb_next
        if tb is None:
            tb = exc.__traceback__
        self.write("".join(traceback.format_exception(type(exc), exc, tb)))


def _incomplete(source: str) -> bool:
    """True if ``source`` needs more lines; raises SyntaxError if it can never compile."""
    if not any(s and not s.startswith("#") for s in (x.strip() for x in source.split("\n"))):
        return False
    flags = _INCOMPLETE_FLAGS | _TOP_LEVEL_AWAIT
    try:
        compile(source, _FILENAME, "single", flags, True)
        return False
    except SyntaxError:
        pass
    # As the interactive interpreter does: a block is complete once a blank line follows it.
    try:
        compile(source + "\n", _FILENAME, "single", flags, True)
        return True
    except SyntaxError as exc:
        if "incomplete input" in str(exc):
            return True
    compile(source, _FILENAME, "single", _TOP_LEVEL_AWAIT, True)  # raises the real error
    return False


# --- client ----------------------------------------------------------------------------------


def connect(path: str | os.PathLike[str]) -> None:
    """An interactive terminal on the backdoor at ``path``: lines are edited with readline and
    sent; output is printed. EOF (Ctrl-D) or Ctrl-C ends it. Raises :class:`BackdoorError` when
    nothing can be reached there (missing, stale or forbidden socket)."""
    path = os.fspath(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except FileNotFoundError:
        sock.close()
        raise BackdoorError(f"no backdoor at {path}") from None
    except PermissionError:
        sock.close()
        raise BackdoorError(f"permission denied: {path}") from None
    except ConnectionRefusedError:
        sock.close()
        raise BackdoorError(f"nobody listens on {path} (stale socket)") from None
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 - input() edits lines once it is imported
    try:
        _client_loop(sock, input, lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    finally:
        sock.close()


def _client_loop(
    sock: socket.socket,
    read: Callable[[str], str],
    show: Callable[[str], object],
) -> None:
    pending = ""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            show(pending)
            return
        pending += chunk.decode("utf-8", "replace")
        prompt = next((p for p in (PROMPT, PROMPT_MORE) if pending.endswith(p)), None)
        if prompt is None:
            # Print complete lines as they come; keep a possible partial prompt.
            cut = pending.rfind("\n") + 1
            show(pending[:cut])
            pending = pending[cut:]
            continue
        show(pending[: -len(prompt)])
        pending = ""
        try:
            line = read(prompt)
        except EOFError:
            show("\n")
            return
        except KeyboardInterrupt:
            show("\n")
            return
        try:
            sock.sendall(line.encode() + b"\n")
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                return
            raise
