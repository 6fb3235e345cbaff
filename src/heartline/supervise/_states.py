"""The program state machine. Each state documents what a caller may assume in it."""

from __future__ import annotations

import enum


class State(enum.Enum):
    """States of one program instance.

    Transitions (anything else is a bug)::

        stopped  --start-->  starting  --ready-->  running
        starting/running  --exit, policy restart-->  backoff --delay--> starting
        starting/running  --exit, policy stays down-->  exited
        starting/running  --exit, crash-loop limit-->  fatal --cool-down--> starting
        starting/running  --stop-->  stopping  --exit-->  stopped
        backoff/fatal/exited/starting(not spawned)  --stop-->  stopped
        exited/fatal/stopped  --start-->  starting
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

    @property
    def alive(self) -> bool:
        """True when a process may exist for the program."""
        return self in (State.STARTING, State.RUNNING, State.STOPPING)
