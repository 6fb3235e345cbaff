"""The program state machine. Each state documents what a caller may assume in it."""

from __future__ import annotations

import enum
import logging

from heartline.errors import SupervisorError


class State(enum.Enum):
    """States of one program instance.

    Transitions (:data:`TRANSITIONS` holds them; anything else is a bug)::

        stopped  --start-->  starting  --ready-->  running
        starting/running  --exit, policy restart-->  backoff --delay--> starting
        starting/running  --exit, immediate restart-->  starting
        starting/running  --exit, policy stays down-->  exited
        starting/running  --exit, crash-loop limit-->  fatal --cool-down--> starting
        starting/running  --stop, hang, failed checks-->  stopping
        stopping  --exit (operator)-->  stopped
        stopping  --exit (daemon's restart)-->  backoff/starting/exited/fatal (the policy)
        backoff/fatal/exited/starting(not spawned)  --stop-->  stopped
        exited/fatal/stopped  --start-->  starting
        stopped  --adopted after a daemon restart-->  running
        stopped  --restored after a daemon restart-->  exited/fatal
        any but stopping  --a singleton whose cluster lock this host does not hold-->  standby
        stopping  --exit (the lock is given up)-->  standby
        standby  --the lock granted-->  starting;  standby  --stop-->  stopped
    A state may also be set again with a new detail (starting: "waiting for db").
    """

    #: Not running, and will not run until an operator starts it.
    STOPPED = "stopped"
    #: Spawned (or waiting for the programs it needs); not ready yet: dependents wait.
    STARTING = "starting"
    #: Alive and ready; programs that `require` it may start.
    RUNNING = "running"
    #: Exited unasked; a restart is scheduled after the back-off delay (see ``detail``).
    BACKOFF = "backoff"
    #: The stop signal was sent; SIGKILL follows after ``stop_timeout``.
    STOPPING = "stopping"
    #: Exited, and the restart policy says it stays down (clean exit, ``never``, a prevent code).
    EXITED = "exited"
    #: Hit the crash-loop limit. Retried after the cool-down (see ``detail``), or never when the
    #: cool-down is "never": it is then shown as fatal until an operator starts it.
    FATAL = "fatal"
    #: A singleton program whose cluster lock this host does not hold: it runs on another
    #: host (``detail`` names it) or is waiting for the lock; it starts here when granted.
    STANDBY = "standby"

    @property
    def alive(self) -> bool:
        """True when a process may exist for the program."""
        return self in (State.STARTING, State.RUNNING, State.STOPPING)


_S = State
#: Every allowed change of state (a state to itself is always allowed: a new detail).
TRANSITIONS: dict[State, frozenset[State]] = {
    _S.STOPPED: frozenset({_S.STARTING, _S.RUNNING, _S.EXITED, _S.FATAL, _S.STANDBY}),
    _S.STARTING: frozenset(
        {_S.RUNNING, _S.STOPPING, _S.STOPPED, _S.BACKOFF, _S.EXITED, _S.FATAL, _S.STANDBY}
    ),
    _S.RUNNING: frozenset({_S.STARTING, _S.STOPPING, _S.BACKOFF, _S.EXITED, _S.FATAL, _S.STANDBY}),
    _S.BACKOFF: frozenset({_S.STARTING, _S.STOPPED, _S.STANDBY}),
    _S.STOPPING: frozenset({_S.STOPPED, _S.STARTING, _S.BACKOFF, _S.EXITED, _S.FATAL, _S.STANDBY}),
    _S.EXITED: frozenset({_S.STARTING, _S.STOPPED, _S.STANDBY}),
    _S.FATAL: frozenset({_S.STARTING, _S.STOPPED, _S.STANDBY}),
    _S.STANDBY: frozenset({_S.STARTING, _S.STOPPED}),
}

#: Raise on a transition outside the table (tests set it); the daemon only logs one.
STRICT = False


class InvalidTransition(SupervisorError):
    """A change of state the table does not allow: a bug in the state machine."""


def check_transition(old: State, new: State) -> None:
    """Complain about a change of state outside :data:`TRANSITIONS`."""
    if old is new or new in TRANSITIONS[old]:
        return
    if STRICT:
        raise InvalidTransition(f"{old.value} -> {new.value}")
    logging.getLogger(__name__).error("bug: state change %s -> %s", old.value, new.value)
