"""The backdoor's client, used by ``heartline attach``: a terminal on a backdoor socket.

Part of :mod:`heartline.service.backdoor`, which re-exports :func:`connect`. It speaks the
session's plain text: everything received is shown, and a prompt at the end of what came is
the cue to read a line from the terminal and send it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys

from heartline.service._backdoor_paths import BackdoorError
from heartline.service._backdoor_session import PROMPT, PROMPT_MORE

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


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
