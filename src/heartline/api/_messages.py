"""The messages of the control API, defined once.

The supervisor builds them, the daemon sends them, the CLI and the dashboard read them, and
``openapi.json`` documents them; a test holds the OpenAPI schemas and these types to the same
fields. They are TypedDicts: plain dicts on the wire and in code, checked by mypy.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict, get_args

#: How a run ended. ``exit``/``signal``: the process ended by itself (``code``/``signal`` set);
#: ``spawn-failed``: the exec never happened (``detail`` says why); ``unknown``: an adopted
#: process, whose status went to its previous parent; ``watchdog``, ``check``,
#: ``start-timeout``: the daemon stopped it for a missed heartbeat, failed health checks or no
#: readiness in time (code or signal then say how it ended).
ExitReason = Literal[
    "exit", "signal", "spawn-failed", "unknown", "watchdog", "check", "start-timeout"
]
EXIT_REASONS: tuple[ExitReason, ...] = get_args(ExitReason)

#: What the daemon stops a program for (the reasons of its own in :data:`ExitReason`).
StopReason = Literal["watchdog", "check", "start-timeout"]

ProgramState = Literal[
    "stopped", "starting", "running", "backoff", "stopping", "exited", "fatal", "standby"
]


class ExitRecord(TypedDict):
    reason: ExitReason
    code: int | None
    signal: int | None
    detail: str
    #: ``exit 3``, ``killed by SIGKILL``, ``watchdog: no heartbeat for 10s``.
    text: str


class WatchdogInfo(TypedDict):
    period: float
    last_beat_ago: float


class Health(TypedDict):
    ok: bool | None
    failures: int
    last: str
    checked: float | None


class Figures(TypedDict, total=False):
    """What a program's processes cost (None where /proc would not tell)."""

    cpu_pct: float | None
    rss: int | None
    read_bps: float | None
    write_bps: float | None
    fds: int | None


class SingletonInfo(TypedDict):
    """Where a singleton program runs, as its daemon knows it."""

    #: The cluster lock it runs under.
    lock: str
    #: The host running it (this one or another); None while nobody does.
    holder: str | None
    #: The fencing token of that run (grows with every grant); None while nobody runs it.
    token: int | None
    #: Hosts standing by to take it over.
    standby: list[str]
    #: The lease, in seconds: how long the lock outlives a holder gone silent.
    lease: float


MoveResult = TypedDict(
    "MoveResult",
    {
        "name": str,
        "from": str,  # a keyword in Python: hence the functional form
        "to": str,
        #: The fencing token of the run on the target.
        "token": int,
        #: Seconds from the order to the program running on the target.
        "took": float,
    },
)


class ProgramStatus(TypedDict):
    name: str
    group: str
    state: ProgramState
    detail: str
    pid: int | None
    uptime: float | None
    started: float | None
    restarts: int
    last_exit: ExitRecord | None
    last_stop_killed: bool | None
    adopted: bool
    notify_status: str
    watchdog: WatchdogInfo | None
    health: Health | None
    #: Pids of its processes outside its main process group (escaped or left behind).
    others: list[int]
    #: For a singleton program (``singleton = true``): where it runs; else None.
    singleton: SingletonInfo | None
    #: With ``resources=true``.
    resources: NotRequired[Figures | None]


class NotifyCounts(TypedDict):
    socket: str
    received: int
    dropped: int


class StateFileError(TypedDict):
    error: str
    since: float
    retry_in: NotRequired[float]


class DaemonInfo(TypedDict):
    pid: int
    version: str
    config: str
    started: float
    uptime: float
    state_file: StateFileError | None
    notify: NotifyCounts


class StatusReply(TypedDict):
    daemon: DaemonInfo
    programs: list[ProgramStatus]


class StopResult(TypedDict):
    name: str
    stopped: bool
    killed: bool
    exit: ExitRecord | None


class ErrorDetail(TypedDict):
    code: str
    message: str
    #: The program concerned, for ``unknown_program``.
    name: NotRequired[str]


class ErrorReply(TypedDict):
    error: ErrorDetail


#: The OpenAPI schema each message is documented as (the test that keeps them in step).
SCHEMAS: dict[str, type] = {
    "ExitInfo": ExitRecord,
    "Program": ProgramStatus,
    "Figures": Figures,
    "Status": StatusReply,
    "StopResult": StopResult,
    "Error": ErrorReply,
    "MoveResult": MoveResult,
}
