"""Event-driven supervision: a fixed set of threads whatever the number of children (the event
loop and the notify receiver), <= 3 fds per child."""

from __future__ import annotations

import os


def _programs(n: int) -> str:
    return "".join(f'[programs.p{i}]\ncommand = ["/bin/sleep", "3600"]\n' for i in range(n))


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_no_thread_per_child_and_three_fds_per_child(make_daemon):
    """From 30 to 90 children the daemon keeps its two threads and adds at most 3 fds per child."""
    small = make_daemon(_programs(30))
    big = make_daemon(_programs(90))
    for d in (small, big):
        assert all(p["state"] == "running" for p in d.status().values())
        assert len(os.listdir(f"/proc/{d.proc.pid}/task")) == 2
    # Two fds of slack: a control connection the daemon may not have closed yet.
    assert _fds(big.proc.pid) - _fds(small.proc.pid) <= 3 * 60 + 2
