"""The error tree of heartline.

One root, :class:`HeartlineError`. Each error carries the exit code the CLI uses for it and the
object it concerns (a program name, a file). Errors the user caused ("you did it": a bad config,
an unknown program) are kept apart from errors the world caused (a daemon that is not running,
an exec that failed).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ControlError",
    "DaemonAlreadyRunning",
    "DaemonNotRunning",
    "DaemonStartError",
    "HeartlineError",
    "LockAuthError",
    "LockError",
    "LockLost",
    "LockReleased",
    "LockServerUnreachable",
    "LockTimeout",
    "PermissionDenied",
    "ProtocolError",
    "SupervisorError",
    "UnknownProgram",
    "UnsafeTokenFile",
    "UsageError",
]


class HeartlineError(Exception):
    """Root of every error heartline raises on purpose."""

    #: Exit code of the CLI when this error ends it.
    exit_code: int = 1


class UsageError(HeartlineError):
    """The command line or an argument is wrong (you did it)."""

    exit_code = 2


class ConfigError(HeartlineError):
    """A configuration file is wrong; names the file, the key and the line."""

    exit_code = 2

    def __init__(
        self, message: str, *, file: str = "", key: str = "", line: int | None = None
    ) -> None:
        self.file = file
        self.key = key
        self.line = line
        self.reason = message
        where = file or "<config>"
        if line is not None:
            where += f":{line}"
        if key:
            where += f": {key}"
        # One line, whatever names and values the file holds.
        super().__init__(_printable(f"{where}: {message}"))


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


class ControlError(HeartlineError):
    """Talking to the daemon failed."""


class DaemonNotRunning(ControlError):
    """No daemon answers on the control socket (the world broke it)."""

    exit_code = 3


class PermissionDenied(ControlError):
    """The control socket or the daemon refused this user."""

    exit_code = 5


class DaemonAlreadyRunning(ControlError):
    """Another daemon already owns this run directory."""

    exit_code = 6


class DaemonStartError(ControlError):
    """The daemon cannot set itself up: its run or log directory cannot be created or
    written (a full disk, a read-only file system, no permission). The world broke it; the
    message names the path and the reason."""

    exit_code = 8


class ProtocolError(ControlError):
    """The daemon answered something this client does not understand."""

    exit_code = 7


class SupervisorError(HeartlineError):
    """A supervision request could not be carried out."""


class UnknownProgram(SupervisorError):
    """The named program is not in the configuration (you did it)."""

    exit_code = 4

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown program {name!r} (see `heartline status` for the names)")


class LockError(HeartlineError):
    """A lock could not be taken or kept. ``name`` is the lock concerned."""

    def __init__(self, message: str, *, name: str = "") -> None:
        self.name = name
        super().__init__(_printable(message))


class LockTimeout(LockError):
    """The lock was not granted within the wait (or at once, for a try-lock)."""

    exit_code = 75  # sysexits EX_TEMPFAIL: try again later


class LockLost(LockError):
    """The world took the lock away: the lease ran out, the server said so, or an admin broke it.

    Whatever the holder did after this may overlap with the next holder; the fencing token is
    what lets a resource refuse such late writes.
    """

    exit_code = 79


class LockReleased(LockError):
    """The lock was used after this holder released it (you did it)."""


class LockServerUnreachable(LockError):
    """No lock server answers at the URL (the world broke it)."""

    exit_code = 69  # sysexits EX_UNAVAILABLE


class LockAuthError(LockError):
    """The lock server refused the credentials, or the request needs an admin token."""

    exit_code = 77  # sysexits EX_NOPERM


class UnsafeTokenFile(LockError):
    """A client token file that other users could read or change: refused, as ssh refuses
    such a private key, before anything is sent (you did it: fix the file's mode)."""

    exit_code = 78  # sysexits EX_CONFIG: fix the file, then try again
