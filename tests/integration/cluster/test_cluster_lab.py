"""Placement on lab hosts: real namespaces, each host with its own /proc, sshd and daemon
reporting to the lab's lockd; `heartline hosts` and `place` from this machine with the
controller's config the lab writes. Skipped (with the reason) where lab hosts cannot be made.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from tests.helpers import wait_until
from tests.integration.conftest import HEARTLINE

from heartline.testing import LabHosts, lab_hosts, lab_unavailable

pytestmark = [
    pytest.mark.skipif(lab_unavailable() is not None, reason=lab_unavailable() or ""),
    # The first test also brings the lab up; the spread test runs 30 CPU-bound jobs on two
    # cores.
    pytest.mark.timeout(240),
]

#: A CPU-bound job, bounded in time (--foreground: timeout stays in the process group, so
#: killing the group ends the loop too).
SPIN = "timeout --foreground {secs} sh -c 'while :; do :; done'"


@pytest.fixture(scope="module")
def lab() -> Iterator[LabHosts]:
    with lab_hosts(3) as made:
        yield made


def hl(lab: LabHosts, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HEARTLINE, "-c", lab.config, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def hosts(lab: LabHosts) -> dict[str, dict[str, Any]]:
    res = hl(lab, "hosts", "--json")
    assert res.returncode == 0, res.stderr
    return {h["name"]: h for h in json.loads(res.stdout)["hosts"]}


def all_up(lab: LabHosts) -> dict[str, dict[str, Any]]:
    return wait_until(
        lambda: (h := hosts(lab)) and all(h[n]["state"] == "up" for n in lab.hosts) and h,
        20, "every lab host up",
    )  # fmt: skip


def spin_in(lab: LabHosts, host: str, n: int, secs: int) -> subprocess.Popen[str]:
    """``n`` CPU-bound loops inside ``host``'s namespaces for at most ``secs`` seconds."""
    loops = " ".join([SPIN.format(secs=secs) + " &"] * n) + " wait"
    argv, env = lab.exec_argv(host, ["sh", "-c", loops])
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)  # fmt: skip


def end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_placements_avoid_a_busy_host(lab: LabHosts) -> None:
    """lab1 runs two CPU-bound loops in its own namespace: its report counts them (the other
    hosts' /proc do not show them), and placements go to lab2 and lab3."""
    all_up(lab)
    busy = spin_in(lab, "lab1", 2, 60)
    try:
        # (A host's own load is the lower of its last two samples: two reports after the
        # loops began.)
        seen = wait_until(lambda: (h := hosts(lab))["lab1"]["report"]["other"] >= 2 and h,
                          15, "lab1's report to count its loops")  # fmt: skip
        assert seen["lab2"]["report"]["runnable"] < 2 and seen["lab3"]["report"]["runnable"] < 2
        chosen = []
        for _ in range(6):
            res = hl(lab, "place", "--", "hostname")
            assert res.returncode == 0, res.stderr
            chosen.append(res.stdout.strip())
        assert set(chosen) <= {"lab2", "lab3"}, chosen
    finally:
        end(busy)


def test_thirty_placements_from_six_clients_spread_evenly(lab: LabHosts, tmp_path: Any) -> None:
    """6 clients, 5 placements each, all at once, of CPU-bound jobs: each decision sees the
    holds of the ones before, so the hosts get 10 each, give or take one."""
    all_up(lab)
    wait_until(lambda: all(h["report"]["other"] == 0 and not h["holds"]
                           for h in hosts(lab).values()), 20, "every host idle")  # fmt: skip
    job = f"{SPIN.format(secs=6)}; hostname"
    script = " ".join([f'heartline -c {lab.config} place -- sh -c "{job}" &'] * 5) + " wait"
    env = {**os.environ, "PATH": f"{os.path.dirname(HEARTLINE[0])}:{os.environ['PATH']}"}
    clients = [subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True, env=env,
                                start_new_session=True) for _ in range(6)]  # fmt: skip
    try:
        out = [c.communicate(timeout=120)[0] for c in clients]
    finally:
        for c in clients:
            end(c)
    counts = collections.Counter(line for o in out for line in o.split())
    assert sum(counts.values()) == 30, counts
    assert set(counts) == set(lab.hosts), counts
    assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_a_placement_s_caller_killed_stops_its_command_and_its_hold(lab: LabHosts) -> None:
    all_up(lab)
    proc = subprocess.Popen(
        [*HEARTLINE, "-c", lab.config, "place", "--", "sh", "-c",
         "echo $$ > /run/placed.pid; exec sleep 300"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        host = wait_until(lambda: next((n for n, h in hosts(lab).items() if h["holds"]), None),
                          20, "a hold")  # fmt: skip

        def started() -> str:
            return lab.run(host, ["cat", "/run/placed.pid"]).stdout.strip()

        pid = wait_until(started, 20, "the command to start there")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    wait_until(lambda: lab.run(host, ["kill", "-0", pid]).returncode != 0, 15,
               "the command on the host to stop")  # fmt: skip
    wait_until(lambda: not any(h["holds"] for h in hosts(lab).values()), 15, "the hold gone")


def test_a_crashed_host_goes_away_and_is_never_chosen(lab: LabHosts) -> None:
    """lab3 crashes (its pid namespace killed): within two report intervals it is no longer
    up, and no placement picks it; a placement's caller that ran on lab3 dies with it, and its
    hold elsewhere ends with its session. lab3 is booted again afterwards."""
    all_up(lab)
    argv, env = lab.exec_argv("lab3", [*HEARTLINE, "-c", lab.config, "place", "--", "sleep",
                                       "300"])  # fmt: skip
    caller = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        wait_until(lambda: any(h["holds"] for h in hosts(lab).values()), 30, "lab3's hold")
        interval = hosts(lab)["lab3"]["report"]["interval"]
        lab.crash("lab3")
        wait_until(lambda: hosts(lab)["lab3"]["state"] != "up", 2 * interval + 2,
                   "lab3 to leave the up state")  # fmt: skip
        wait_until(lambda: not any(h["holds"] for h in hosts(lab).values()), 15,
                   "the hold of the caller that died with lab3")  # fmt: skip
        for _ in range(6):
            res = hl(lab, "place", "--print")
            assert res.returncode == 0, res.stderr
            assert res.stdout.strip() in ("lab1", "lab2")
    finally:
        end(caller)
        lab.boot("lab3")
    wait_until(lambda: hosts(lab)["lab3"]["state"] == "up", 20, "lab3 back")
