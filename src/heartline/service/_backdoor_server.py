"""The backdoor's server: the listening socket, its accept thread, the peer check on every
connection, and the sockets' removal at close, exit and SIGTERM.

Part of :mod:`heartline.service.backdoor`, which re-exports :class:`Backdoor` and makes one in
:func:`~heartline.service.backdoor.install`; each admitted connection is served by a
:class:`~heartline.service._backdoor_session.Session` in a thread of its own.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import gc
import os
import socket
import struct
import sys
import threading

from heartline.service._backdoor_paths import (
    BackdoorError,
    BackdoorInUse,
    check_dir,
    default_dir,
    default_path,
    ensure_private_dir,
    log,
    probe,
    sweep,
)
from heartline.service._backdoor_session import Session

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio

#: Longest socket path Linux accepts (sun_path is 108 bytes with the terminating NUL).
_MAX_PATH = 107
#: Seconds close() waits for the accept thread.
_JOIN_TIMEOUT = 5.0

_active_lock = threading.Lock()
_active: dict[str, Backdoor] = {}


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
            sweep(default_dir())
            path = default_path()
        else:
            path = os.path.abspath(os.fspath(path))
            check_dir(os.path.dirname(path), private=False)
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
        self._sessions: dict[int, Session] = {}
        self._count = 0
        with _active_lock:
            if path in _active:
                raise BackdoorInUse(f"{path} is in use by this process")
            probe(path)
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
            session = Session(self, conn, self._count, uid=uid, pid=pid)
            self._sessions[session.number] = session
        threading.Thread(
            target=session.serve, name=f"heartline-backdoor-session-{session.number}", daemon=True
        ).start()

    def _forget(self, session: Session) -> None:
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
