"""Supervision: spawn programs, watch them by pidfd, restart them by policy, keep their logs."""

from heartline.supervise._host import Seats
from heartline.supervise._logs import FollowBuffer, LogFile
from heartline.supervise._policy import Decision, ExitInfo, History, backoff_delay, decide
from heartline.supervise._process import SpawnFailed, spawn
from heartline.supervise._program import Program, spec_digest
from heartline.supervise._resources import Reading, figures, read_groups
from heartline.supervise._statefile import Record, Saved
from heartline.supervise._states import State
from heartline.supervise._supervisor import FdHolder, Supervisor, load_state

__all__ = [
    "Decision",
    "ExitInfo",
    "FdHolder",
    "FollowBuffer",
    "History",
    "LogFile",
    "Program",
    "Reading",
    "Record",
    "Saved",
    "Seats",
    "SpawnFailed",
    "State",
    "Supervisor",
    "backoff_delay",
    "decide",
    "figures",
    "load_state",
    "read_groups",
    "spawn",
    "spec_digest",
]
