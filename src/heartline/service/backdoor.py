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

**Where the code is.** This module is the public face (:func:`install`, :func:`connect`, the
errors); paths, permissions and the errors are in ``_backdoor_paths``, the listening socket in
``_backdoor_server``, a session's prompt in ``_backdoor_session`` and the terminal client of
``heartline attach`` in ``_backdoor_client``.
"""

from __future__ import annotations

import os
import sys

from heartline.service._backdoor_client import connect
from heartline.service._backdoor_paths import (
    BackdoorError,
    BackdoorInUse,
    UnsafePath,
    default_path,
)
from heartline.service._backdoor_server import Backdoor

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio

__all__ = [
    "Backdoor",
    "BackdoorError",
    "BackdoorInUse",
    "UnsafePath",
    "connect",
    "default_path",
    "install",
]

# Defined in private modules and imported from this one: tracebacks, repr() and pickles name
# this module, as they did before the backdoor was split.
for _public in (Backdoor, BackdoorError, BackdoorInUse, UnsafePath):
    _public.__module__ = __name__
del _public


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
