"""Supervision: spawn programs, watch them by pidfd, restart them by policy, keep their logs."""

from heartline.supervise._logs import LogFile
from heartline.supervise._policy import Decision, ExitInfo, History, backoff_delay, decide
from heartline.supervise._process import SpawnFailed, spawn
from heartline.supervise._program import Program, spec_digest
from heartline.supervise._states import State
from heartline.supervise._supervisor import FdHolder, Supervisor

__all__ = [
    "Decision",
    "ExitInfo",
    "FdHolder",
    "History",
    "LogFile",
    "Program",
    "SpawnFailed",
    "State",
    "Supervisor",
    "backoff_delay",
    "decide",
    "spawn",
    "spec_digest",
]
