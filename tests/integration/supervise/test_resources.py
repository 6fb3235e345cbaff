"""Event-driven supervision: one thread whatever the number of children, <= 3 fds per child."""

from __future__ import annotations

import os


def _programs(n: int) -> str:
    return "".join(f'[programs.p{i}]\ncommand = ["/bin/sleep", "3600"]\n' for i in range(n))


def test_no_thread_per_child_and_three_fds_per_child(make_daemon):
    """With 60 children the daemon still runs one thread and holds at most 3 fds per child."""
    empty = make_daemon("")
    base_fds = len(os.listdir(f"/proc/{empty.proc.pid}/fd"))
    d = make_daemon(_programs(60))
    assert all(p["state"] == "running" for p in d.status().values())
    pid = d.proc.pid
    assert len(os.listdir(f"/proc/{pid}/task")) == 1
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    assert (fds - base_fds) / 60 <= 3
