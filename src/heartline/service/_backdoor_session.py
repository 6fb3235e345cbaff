"""One backdoor session: a connection's own namespace, its prompt, the commands it runs and
the output it writes back.

Part of :mod:`heartline.service.backdoor` (sessions are made by its server, one thread each);
:data:`PROMPT` and :data:`PROMPT_MORE` are also what its client recognises on the wire.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import gc
import os
import socket
import struct
import sys
import threading
import traceback

from heartline.errors import HeartlineError
from heartline.service._backdoor_paths import log, prog_name

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType

    from heartline.service._backdoor_server import Backdoor

#: What a session writes when it waits for a command, and for the rest of one.
PROMPT = ">>> "
PROMPT_MORE = "... "
#: A line longer than this ends the session (nobody types a megabyte).
_MAX_LINE = 1 << 20
#: Characters of a command kept in the audit log.
_AUDIT_CHARS = 200
#: Seconds a write to a session may block (a client that stops reading) before it fails.
_SEND_TIMEOUT = 30.0
_FILENAME = "<backdoor>"
_TOP_LEVEL_AWAIT: int = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
# codeop's flags, spelled out: codeop itself toggles the process-wide warning filters while it
# compiles (warnings.catch_warnings), which is not thread-safe and not ours to change.
_INCOMPLETE_FLAGS = 0x4000 | 0x200  # PyCF_ALLOW_INCOMPLETE_INPUT | PyCF_DONT_IMPLY_DEDENT


class _EndSession(HeartlineError):
    """exit() at the prompt: ends the session, not the program. A function defined at the
    prompt that calls exit() raises it in the program's own thread too, as a HeartlineError."""


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


class Session:
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
                f"heartline backdoor: pid {os.getpid()} ({prog_name()}), "
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
