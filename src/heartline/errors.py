"""The error tree of heartline.

One root, :class:`HeartlineError`. Each error carries the exit code the CLI uses for it and the
object it concerns (a program name, a file). Errors the user caused ("you did it": a bad config,
an unknown program) are kept apart from errors the world caused (a daemon that is not running,
an exec that failed).
"""

from __future__ import annotations

#: Every exit code a heartline command or library uses, and what it means: one table for all.
#: Each error class carries its code (``exit_code``); ``heartline lock`` and ``heartline run``
#: pass their command's own code through, so their own outcomes use codes a command rarely
#: does (64 and up, from sysexits). README.md's table is this one; a test holds them equal.
EXIT_CODES: dict[int, str] = {
    0: "done",
    1: "the operation failed",
    2: "usage or configuration error",
    3: "no daemon answers on the control socket",
    4: "unknown program",
    5: "permission denied",
    6: "a daemon already runs with this run directory",
    7: "the daemon answered something this client does not understand",
    8: "the daemon cannot use its run or log directory",
    9: "something already answers on the backdoor's socket path",
    10: "hosts, place: the configuration has no [cluster] section",
    11: "place: no host fits the request (labels, capacity, memory), or none answers",
    12: "place: unknown host group or label",
    13: "place: the host's SSH key is unknown or changed (known_hosts refuses it)",
    14: "lab: a lab could not be made, changed or removed",
    15: "lab: no such lab, or no such host in it",
    16: "rolling: stopped at a host (its command or its health gate failed)",
    17: "move: the singleton could not be handed over",
    20: "chaos run: deviated (steady state lost, or a fault not recovered from in time)",
    21: "chaos run: errored (a fault could not be applied or undone, or a probe could not run)",
    22: "chaos run: aborted (Ctrl-C, SIGTERM or the halt file); every applied fault was undone",
    23: "chaos check: the history breaks a lock invariant",
    24: "chaos run: refused (blast radius exceeded, or a host crash not confirmed)",
    64: "lock, run: usage error",
    69: "lock, locks, hosts, place: the lock server (the cluster's backend) is unreachable",
    70: "lock: the guard process vanished",
    75: "lock: not granted in time, or busy with --try",
    77: "lock, locks: not authorized",
    78: "lock, locks: the token file (or the client key) is open to other users",
    79: "lock: the lock was lost while the command ran; the command was stopped",
    86: "a program's own watchdog found it stalled (heartline.service.watchdog)",
    127: "lock, run: the command could not be started",
    255: "place: ssh could not reach the host",
    130: "interrupted",
}
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_RUNNER_USAGE = 64
EXIT_UNREACHABLE = 69
EXIT_GUARD_VANISHED = 70
EXIT_NOT_GRANTED = 75
EXIT_NOT_AUTHORIZED = 77
EXIT_UNSAFE_TOKEN_FILE = 78
EXIT_LOCK_LOST = 79
EXIT_WATCHDOG = 86
EXIT_CANNOT_START = 127
EXIT_INTERRUPTED = 130
EXIT_SSH_FAILED = 255

__all__ = [
    "EXIT_CANNOT_START",
    "EXIT_CODES",
    "EXIT_FAILED",
    "EXIT_GUARD_VANISHED",
    "EXIT_INTERRUPTED",
    "EXIT_LOCK_LOST",
    "EXIT_NOT_AUTHORIZED",
    "EXIT_NOT_GRANTED",
    "EXIT_OK",
    "EXIT_RUNNER_USAGE",
    "EXIT_SSH_FAILED",
    "EXIT_UNREACHABLE",
    "EXIT_UNSAFE_TOKEN_FILE",
    "EXIT_USAGE",
    "EXIT_WATCHDOG",
    "BlastRadiusRefused",
    "ChaosAborted",
    "ChaosDeviated",
    "ChaosError",
    "ChaosErrored",
    "ClusterError",
    "ConfigError",
    "ControlError",
    "DaemonAlreadyRunning",
    "DaemonNotRunning",
    "DaemonStartError",
    "HeartlineError",
    "HistoryViolation",
    "HostKeyRefused",
    "LabError",
    "LabNotFound",
    "LockAuthError",
    "LockError",
    "LockLost",
    "LockReleased",
    "LockServerUnreachable",
    "LockTimeout",
    "MoveRefused",
    "NoHostFits",
    "NotInCluster",
    "PermissionDenied",
    "ProtocolError",
    "SshFailed",
    "SupervisorError",
    "UnknownHostSet",
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

    exit_code = EXIT_NOT_GRANTED  # sysexits EX_TEMPFAIL: try again later


class LockLost(LockError):
    """The world took the lock away: the lease ran out, the server said so, or an admin broke it.

    Whatever the holder did after this may overlap with the next holder; the fencing token is
    what lets a resource refuse such late writes.
    """

    exit_code = EXIT_LOCK_LOST


class LockReleased(LockError):
    """The lock was used after this holder released it (you did it)."""


class LockServerUnreachable(LockError):
    """No lock server answers at the URL (the world broke it)."""

    exit_code = EXIT_UNREACHABLE  # sysexits EX_UNAVAILABLE


class LockAuthError(LockError):
    """The lock server refused the credentials, or the request needs an admin token."""

    exit_code = EXIT_NOT_AUTHORIZED  # sysexits EX_NOPERM


class UnsafeTokenFile(LockError):
    """A client token file (or an etcd client key) that other users could read or change:
    refused, as ssh refuses such a private key, before anything is sent (you did it: fix the
    file's mode)."""

    exit_code = EXIT_UNSAFE_TOKEN_FILE  # sysexits EX_CONFIG: fix the file, then try again


class ClusterError(HeartlineError):
    """Working with the cluster (its hosts, reports, placements or lab) failed."""


class NotInCluster(ClusterError):
    """The configuration has no ``[cluster]`` section (you did it: add one, or pass ``-c``)."""

    exit_code = 10


class NoHostFits(ClusterError):
    """No host can take the request: labels, declared capacity or free memory rule every one
    out, or none of those that could has a fresh report."""

    exit_code = 11


class UnknownHostSet(ClusterError):
    """A host group or label that no host has (you did it)."""

    exit_code = 12


class HostKeyRefused(ClusterError):
    """SSH refused the host's key: unknown or changed (never accepted silently)."""

    exit_code = 13


class SshFailed(ClusterError):
    """SSH could not reach the host or log in (the world broke it); exit 255 as ssh's own."""

    exit_code = EXIT_SSH_FAILED


class LabError(ClusterError):
    """A lab host could not be made, changed or removed; names the step that failed."""

    exit_code = 14


class RollStopped(ClusterError):
    """`heartline rolling` stopped at a host: its command failed there, or its health gate did
    not pass in time; the hosts after it were left untouched."""

    exit_code = 16


class MoveRefused(ClusterError):
    """`heartline move` could not hand a singleton over: it is not a singleton, runs nowhere,
    the target does not stand by for it, or it did not start there in time."""

    exit_code = 17


class LabNotFound(ClusterError):
    """No lab in the directory, or no such host in it (you did it)."""

    exit_code = 15


class ChaosError(HeartlineError):
    """Base of the chaos experiments' errors (``heartline chaos``)."""


class ChaosDeviated(ChaosError):
    """An experiment ran to its end and the system did not pass: the steady state did not hold
    before or after, or a fault was not recovered from within its deadline."""

    exit_code = 20


class ChaosErrored(ChaosError):
    """An experiment could not do what it said: a fault could not be applied or undone, a
    target could not be found, or a probe could not run at all."""

    exit_code = 21


class ChaosAborted(ChaosError):
    """An experiment was stopped before its end (Ctrl-C, SIGTERM, the halt file); every fault
    it had applied was undone first."""

    exit_code = 22


class HistoryViolation(ChaosError):
    """``heartline chaos check``: the history breaks an invariant of the lock service."""

    exit_code = 23


class BlastRadiusRefused(ChaosError):
    """An experiment would hit more targets at once than its blast radius allows, the last
    healthy target of a group, or a real host's kernel without ``--allow-host-crash`` and
    the host named on the command line (you did it)."""

    exit_code = 24
