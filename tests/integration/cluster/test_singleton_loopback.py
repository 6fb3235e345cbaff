"""Singleton programs with real daemons on this machine standing in for three hosts, on both
backends (a real lockd and a real etcd on loopback).

The program (heartline.testing.RUN_LOG_PROGRAM) keeps a history in a shared file and holds
an flock while it runs, so a second copy is caught the moment it starts, however the first one ends. The lab
tests (test_singleton_lab.py) add what needs hosts of their own: a host crashed, cut off.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import wait_until
from tests.integration.conftest import PY, Daemon

from heartline.testing import RUN_LOG_PROGRAM

LEASE = 2.0


def singleton_config(url: str, host: str, history: Path, flock: Path, extra: str = "") -> str:
    argv = json.dumps([PY, RUN_LOG_PROGRAM, str(history), str(flock), host])
    return textwrap.dedent(f"""\
        [cluster]
        backend = "{url}"
        name = "{host}"
        report_interval = "0.5s"

        [programs.one]
        command = {argv}
        singleton = true
        lease = "{LEASE:g}s"
        stop_timeout = "2s"
        """) + textwrap.dedent(extra)  # fmt: skip


def history(path: Path) -> list[tuple[str, str, int, float]]:
    """(event, host, token, time) per line of the shared history."""
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            what, host, token, at = line.split()[:4]
            out.append((what, host, int(token) if token != "-" else 0, float(at)))
    return out


def check_history(path: Path, runs: int | None = None) -> list[tuple[str, int]]:
    """No two copies ever; each run's token above the one before. Returns (host, token) of
    every run, in order (once there are ``runs`` of them, which a run writes as it starts)."""
    if runs is not None:
        wait_until(
            lambda: sum(e[0] == "locked" for e in history(path)) >= runs, 10,
            f"{runs} runs in the history",
        )  # fmt: skip
    events = history(path)
    assert not [e for e in events if e[0] == "overlap"], f"two copies ran at once: {events}"
    runs = [(host, token) for what, host, token, _ in events if what == "start"]
    assert all(t > 0 for _, t in runs), f"a run without HEARTLINE_LOCK_TOKEN: {runs}"
    for (host, token), (next_host, next_token) in itertools.pairwise(runs):
        # A restart under the same grant keeps its token; a new grant has a larger one.
        assert next_token > token or (next_token == token and next_host == host), (
            f"tokens did not only grow: {runs}"
        )
    return runs


class Trio:
    def __init__(self, daemons: list[Daemon], history: Path) -> None:
        self.daemons = daemons
        self.history = history
        self.hosts = [f"h{i}" for i in range(len(daemons))]

    def holder(self, timeout: float = 15.0, *, besides: str | None = None) -> tuple[int, int]:
        """(index of the daemon running it, its token), once exactly one runs it."""

        def one() -> tuple[int, int] | None:
            running = []
            for i, d in enumerate(self.daemons):
                if d.proc is None or d.proc.poll() is not None or self.hosts[i] == besides:
                    continue
                try:
                    p = d.program("one")
                except Exception:
                    continue  # a frozen daemon does not answer
                if p["state"] == "running":
                    running.append((i, p["singleton"]["token"]))
            return running[0] if len(running) == 1 else None

        return wait_until(one, timeout, "exactly one host to run the singleton")


@pytest.fixture
def trio(lock_server: Any, make_daemon: Callable[..., Daemon], tmp_path: Path) -> Iterator[Trio]:
    hist, flock = tmp_path / "history", tmp_path / "flock"
    daemons = []
    for i in range(3):
        d = make_daemon("", start=False)
        d.config.write_text(
            d.config.read_text() + singleton_config(lock_server.url, f"h{i}", hist, flock)
        )
        d.start()
        daemons.append(d)
    t = Trio(daemons, hist)
    try:
        yield t
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.proc.send_signal(signal.SIGCONT)


def test_one_host_runs_it_the_others_stand_by_and_say_where(trio: Trio) -> None:
    """One daemon runs it, with the lock's name and token in its environment; the other two
    stand by, each saying where it runs (status, --json and the table), and the holder
    lists them as standing by."""
    i, token = trio.holder()
    holder = trio.hosts[i]
    for j, d in enumerate(trio.daemons):
        if j == i:
            continue
        p = d.wait_state("one", "standby", detail=f"runs on {holder} (token {token})")
        assert p["singleton"]["holder"] == holder and p["singleton"]["token"] == token
        assert p["pid"] is None
    p = trio.daemons[i].program("one")
    env = Path(f"/proc/{p['pid']}/environ").read_bytes().split(b"\0")
    assert f"HEARTLINE_LOCK_TOKEN={token}".encode() in env
    assert b"HEARTLINE_LOCK_NAME=heartline/singleton/one" in env
    wait_until(
        lambda: set(trio.daemons[i].program("one")["singleton"]["standby"])
        == set(trio.hosts) - {holder},
        10, "the holder to see both others standing by",
    )  # fmt: skip
    out = trio.daemons[(i + 1) % 3].cli("status").stdout
    assert f"runs on {holder} (token {token})" in out, out
    assert check_history(trio.history, 1) == [(holder, token)]


def test_daemon_killed_its_program_stops_and_another_host_takes_over(trio: Trio) -> None:
    """The holder's daemon SIGKILLed: its fd holder stops the program at once, then the lock
    passes to another daemon, which runs it with a larger token; never two copies."""
    i, token = trio.holder()
    pid = trio.daemons[i].program("one")["pid"]
    trio.daemons[i].kill9()
    # The fd holder stops the program at once (nobody renews its lease any more).
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), 5, "the program to stop")
    j, token2 = trio.holder(besides=trio.hosts[i])
    assert j != i and token2 > token
    runs = check_history(trio.history, 2)
    assert runs == [(trio.hosts[i], token), (trio.hosts[j], token2)]


def test_frozen_daemon_its_program_is_stopped_before_the_lease_ends(trio: Trio) -> None:
    """The holder's daemon SIGSTOPped past the lease: the fd holder stops its program before
    the lease ends, another daemon runs it; thawed, the old holder stands by."""
    i, token = trio.holder()
    d = trio.daemons[i]
    assert d.proc is not None
    pid = d.program("one")["pid"]
    d.proc.send_signal(signal.SIGSTOP)
    try:
        j, token2 = trio.holder(besides=trio.hosts[i], timeout=LEASE + 10)
        assert token2 > token
        # The old copy was stopped by the fd holder (the daemon was frozen throughout).
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)
    finally:
        d.proc.send_signal(signal.SIGCONT)
    d.wait_state("one", "standby", timeout=LEASE + 10)
    assert trio.daemons[j].program("one")["state"] == "running"
    check_history(trio.history, 2)


def test_stop_hands_it_over_and_move_takes_it_where_asked(trio: Trio) -> None:
    """`stop` on the holder lets another host take it; `move --to` from a third host takes it
    where asked; moving it where it is, or to a host not standing by, is one line, exit 17."""
    i, token = trio.holder()
    trio.daemons[i].cli("stop", "one")
    j, token2 = trio.holder()
    assert j != i and token2 > token
    trio.daemons[i].wait_state("one", "stopped")
    # The one left standing by, moved to on purpose from a host that does not run it.
    k = ({0, 1, 2} - {i, j}).pop()
    trio.daemons[k].wait_state("one", "standby")
    res = trio.daemons[i].cli("move", "one", "--to", trio.hosts[k])
    assert f"moved from {trio.hosts[j]} to {trio.hosts[k]}" in res.stdout, res.stdout
    m, token3 = trio.holder()
    assert m == k and token3 > token2
    trio.daemons[j].wait_state("one", "standby")
    # No gap longer than a start: the old copy's stop to the new copy's start.
    check_history(trio.history, 3)
    events = history(trio.history)
    stopped = next(t for what, h, tok, t in events if what == "stop" and tok == token2)
    started = next(t for what, h, tok, t in events if what == "start" and tok == token3)
    assert 0 < started - stopped < 1.0, (stopped, started)
    # Moving it where it is, to a host not standing by, or with nobody else standing by.
    res = trio.daemons[k].cli("move", "one", "--to", trio.hosts[k], check=False)
    assert res.returncode == 17 and "already runs on" in res.stderr, res.stderr
    res = trio.daemons[k].cli("move", "one", "--to", trio.hosts[i], check=False)
    assert res.returncode == 17 and "does not stand by" in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1
    runs = check_history(trio.history, 3)
    assert [h for h, _ in runs] == [trio.hosts[i], trio.hosts[j], trio.hosts[k]]


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_fatal_on_one_host_hands_it_to_another(
    lock_server: Any, make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    """failover_on = ["fatal"]: a program that cannot run on h0 (it exits at once there)
    turns fatal after its crash-loop limit and gives the lock up; h1 runs it."""
    hist, flock = tmp_path / "history", tmp_path / "flock"
    common = 'failover_on = ["fatal"]\ncrash_loop = { max_starts = 3, window = "60s", cooldown = "1h" }\n'
    daemons = []
    for i, extra in enumerate([common + 'env = { RUN_LOG_CRASH = "1" }\n', common]):
        d = make_daemon("", start=False)
        text = singleton_config(lock_server.url, f"h{i}", hist, flock, extra)
        d.config.write_text(d.config.read_text() + text)
        d.start()
        daemons.append(d)
        if i == 0:  # h0 holds it first, and fails
            wait_until(
                lambda d=d: d.program("one")["restarts"] > 0 or d.program("one")["state"] == "fatal",
                10, "h0 to run it first",
            )  # fmt: skip
    h0, h1 = daemons
    p = h0.wait_state("one", "fatal", timeout=20)
    assert "crash loop" in p["detail"]
    wait_until(lambda: h1.program("one")["state"] == "running", 15, "h1 to run it")
    info = h0.program("one")["singleton"]
    wait_until(lambda: h0.program("one")["singleton"]["holder"] == "h1", 10, "h0 to see h1 hold it")
    runs = check_history(hist, 4)
    assert [h for h, _ in runs] == ["h0", "h0", "h0", "h1"], (runs, info)


def test_a_reload_that_changes_it_keeps_one_copy_and_the_host_in_the_contest(trio: Trio) -> None:
    """A reload that changes the singleton on its holder stops it there; one copy runs again,
    and the reloaded host is back in the contest (it runs it, or stands by and takes it
    when the new holder stops it)."""
    i, token = trio.holder()
    d = trio.daemons[i]
    d.config.write_text(d.config.read_text().replace('stop_timeout = "2s"', 'stop_timeout = "3s"'))
    d.cli("reload")
    j, token2 = trio.holder()
    assert token2 > token
    # The reloaded host contends again: it runs it, or stands by for it.
    if j != i:
        d.wait_state("one", "standby")
    trio.daemons[j].cli("stop", "one")
    if j != i:
        trio.holder()
        trio.daemons[j].cli("start", "one")
        trio.daemons[j].wait_state("one", "standby")
    check_history(trio.history, 3 if j != i else 2)
