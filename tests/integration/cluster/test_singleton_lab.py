"""Singleton programs on three lab hosts (own network, pid, mount and UTS namespaces), on
each of the lab's backends: its lockd with its journal, and an etcd with TLS and client
certificates. The holder host crashed, cut off, its daemon frozen past the lease, and the
backend killed and started again. Each time another host runs the program within the lease
plus a start, and the shared history (heartline.testing.RUN_LOG_PROGRAM: an flock held
while a copy runs catches any second copy the moment it starts) shows never two copies and
tokens that only grow.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import wait_until
from tests.integration.cluster.test_singleton_loopback import check_history, history
from tests.integration.conftest import PY

from heartline.api import Client
from heartline.testing import RUN_LOG_PROGRAM, LabHosts, lab_hosts, lab_unavailable

pytestmark = [
    pytest.mark.skipif(lab_unavailable() is not None, reason=lab_unavailable() or ""),
    pytest.mark.timeout(240),
]

LEASE = 2.0
#: A start: the daemon forks the program once its seat is granted (generous for a busy CI).
START = 2.0


class Lab:
    def __init__(self, lab: LabHosts, hist: Path) -> None:
        self.lab = lab
        self.history = hist

    def status(self, host: str) -> dict[str, Any] | None:
        """The singleton's status on ``host`` (None if its daemon does not answer)."""
        sock = os.path.join(self.lab.dir, "hosts", host, "run", "heartline.sock")
        try:
            with Client(sock, timeout=2.0) as c:
                progs = c.get("/v1/status")["programs"]
        except Exception:
            return None
        return next(p for p in progs if p["name"] == "one")

    def holder(self, *, besides: str = "", timeout: float = 20.0) -> tuple[str, int]:
        """(host, token) once exactly one answering host (not ``besides``) runs it, and that
        run has written its ``locked`` line: the daemon says running once it has started the
        program, which may write the line a moment later (a busy machine: later than a fault
        the test then injects, where the line would pass for a new run)."""

        def one() -> tuple[str, int] | None:
            running = [
                (h, p["singleton"]["token"])
                for h in self.lab.hosts
                if h != besides and (p := self.status(h)) is not None and p["state"] == "running"
            ]
            if len(running) != 1:
                return None
            host, token = running[0]
            started = any(e[:3] == ("locked", host, token) for e in history(self.history))
            return running[0] if started else None

        return wait_until(one, timeout, "exactly one lab host to run the singleton")

    def started_after(self, at: float) -> tuple[str, int, float]:
        """The first run that started after monotonic time ``at``: (host, token, when)."""

        def first() -> tuple[str, int, float] | None:
            for what, host, token, t in history(self.history):
                if what == "locked" and t > at:
                    return host, token, t
            return None

        return wait_until(first, LEASE + START + 10, "a new run in the history")

    def daemon_pid(self, host: str) -> int:
        h = next(h for h in self.lab.status()["hosts"] if h["name"] == host)
        assert h["daemon_pid"] is not None
        return int(h["daemon_pid"])

    def wait_standby(self, host: str, timeout: float = 20.0) -> None:
        wait_until(
            lambda: (p := self.status(host)) is not None and p["state"] == "standby",
            timeout, f"{host} to stand by",
        )  # fmt: skip


@pytest.fixture(scope="module", params=["lockd", "etcd"])
def trio(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    backend = request.param
    if lab_unavailable(backend) is not None:
        pytest.skip(lab_unavailable(backend) or "")
    where = tmp_path_factory.mktemp(f"singleton-{backend}")
    hist, flock = where / "history", where / "flock"
    argv = json.dumps([PY, RUN_LOG_PROGRAM, str(hist), str(flock)])
    programs = (
        f'[programs.one]\ncommand = {argv}\nsingleton = true\nlease = "{LEASE:g}s"\n'
        'stop_timeout = "5s"\n'
    )
    (where / "programs.toml").write_text(programs)
    with lab_hosts(3, programs=str(where / "programs.toml"), backend=backend) as lab:
        t = Lab(lab, hist)
        t.holder(timeout=30)
        yield t


def test_holder_crashed_another_host_runs_it_within_the_lease(trio: Lab) -> None:
    """The holder host crashed (its pid namespace killed): another host runs it within the
    lease plus a start, with a larger token; booted again, the host stands by."""
    host, token = trio.holder()
    at = time.monotonic()
    trio.lab.crash(host)
    new_host, new_token, started = trio.started_after(at)
    assert new_host != host and new_token > token
    assert started - at <= LEASE + START, f"took {started - at:.2f}s"
    trio.lab.boot(host)
    trio.wait_standby(host)
    check_history(trio.history)


def test_holder_cut_off_stops_it_before_another_host_starts_it(trio: Lab) -> None:
    """The holder host cut off (its link down): it stops its copy by itself before another
    host starts one (within the lease plus a start); healed, it stands by."""
    host, token = trio.holder()
    at = time.monotonic()
    assert trio.lab.cut(host)
    try:
        new_host, new_token, started = trio.started_after(at)
        assert new_host != host and new_token > token
        assert started - at <= LEASE + START, f"took {started - at:.2f}s"
        # The cut-off host stopped its copy by itself, before the new one started.
        stops = [t for what, h, tok, t in history(trio.history)
                 if what == "stop" and h == host and tok == token]  # fmt: skip
        assert stops and stops[0] < started, history(trio.history)
    finally:
        trio.lab.heal(host)
    trio.wait_standby(host)
    check_history(trio.history)


def test_holder_daemon_frozen_past_the_lease(trio: Lab) -> None:
    """The holder's daemon SIGSTOPped: its fd holder stops the program before the lease ends,
    another host runs it in time; thawed, the daemon stands by."""
    host, token = trio.holder()
    pid = trio.daemon_pid(host)
    at = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        new_host, new_token, started = trio.started_after(at)
        assert new_host != host and new_token > token
        assert started - at <= LEASE + START, f"took {started - at:.2f}s"
    finally:
        os.kill(pid, signal.SIGCONT)
    trio.wait_standby(host)
    check_history(trio.history)


def test_backend_killed_and_started_again_still_one_copy(trio: Lab) -> None:
    """The lab's lockd SIGKILLed and started again on its journal: still one copy; a new run,
    if any, has a larger token."""
    host, token = trio.holder()
    before = len(history(trio.history))
    trio.lab.crash("backend")
    try:
        # Down for less than the lease: the holder keeps its program through it, its lease
        # proven by the renewals before the crash.
        time.sleep(0.3)  # the fault lasts this long on purpose, not a wait for a condition
    finally:
        trio.lab.boot("backend")
    # It resumes its session (the journal handed the lock back to it) or, if it had to let
    # go, another host takes over: either way one copy, and a larger token for a new run.
    now_host, now_token = trio.holder(timeout=LEASE + START + 15)
    assert now_token >= token
    if now_host == host and now_token == token:
        assert len([e for e in history(trio.history)[before:] if e[0] == "start"]) == 0
    check_history(trio.history)
