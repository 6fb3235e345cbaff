"""`heartline chaos run` on this machine: real programs killed and stopped, real probes, and
every fault undone however the run ends (success, deviation, halt file, SIGTERM, a SIGKILLed
controller, a crashed run cleaned up by `chaos undo`)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.helpers import wait_until
from tests.integration.chaos.conftest import EXAMPLES, Chaos, free_port, proc_state, wait_state


def example(port: int, rounds: int) -> str:
    text = (EXAMPLES / "kill-program.toml").read_text()
    text = text.replace("18080", str(port)).replace("rounds = 5", f"rounds = {rounds}")
    text = text.replace('interval = "1s"', 'interval = "200ms"')
    return text.replace('cwd = "."', f'cwd = "{EXAMPLES}"')


def test_kill_program_example_recovers_every_round(chaos: Chaos) -> None:
    """The shipped example: its own daemon runs the web service, each SIGKILL is detected by
    the probes and recovered from; the numbers, the JSON lines and the exit code say so, and
    the daemon is gone afterwards."""
    port = free_port()
    done = chaos.run(example(port, 2), "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    result = chaos.result(done.stdout)
    assert result["outcome"] == "passed"
    faults = result["faults"]
    assert [f["outcome"] for f in faults] == ["recovered", "recovered"]
    for f in faults:
        assert 0 <= f["detected"] < f["recovered"] < 5
        assert f["detail"].startswith("SIGKILL web (pid ")
    assert result["steady"]["before"]["ok"] and result["steady"]["after"]["ok"]
    assert result["summary"]["recover"]["max"] == max(f["recovered"] for f in faults)
    kinds = [e["event"] for e in chaos.events(done.stdout)]
    assert kinds.count("fault") == 2 and kinds.count("recovered") == 2
    assert "probe" in kinds
    assert not any(chaos.journal.iterdir()), "a clean run leaves no journal"


def test_human_output_is_live_lines(chaos: Chaos) -> None:
    """Without --json: a line per step and per probe flip, and a summary with p50/p95/max."""
    port = free_port()
    done = chaos.run(example(port, 1))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "round 1/1 kill: SIGKILL web" in out
    assert "http FAILS +" in out and "recovered in " in out
    assert "time to recover: p50 " in out and "outcome: passed" in out


def stop_experiment(port: int, pidfiles: Path, *, hold: str = "1s", lease: str = "30s",
                    rounds: int = 1, extra: str = "") -> str:  # fmt: skip
    return f"""
title = "hang the web service"
[run]
rounds = {rounds}
recover_within = "5s"
lease = "{lease}"
{extra}
[blast_radius]
allow_last = true
[targets.web]
kind = "pidfiles"
dir = "{pidfiles}"
[probes.http]
kind = "http"
url = "http://127.0.0.1:{port}/"
timeout = "300ms"
[faults.hang]
kind = "stop"
target = "web"
for = "{hold}"
"""


def test_stop_is_a_hang_that_ends(chaos: Chaos) -> None:
    """SIGSTOP for 1 s: the HTTP probe times out (detected), the process is continued at the
    end of the hold and answers again (recovered after the hold, not before)."""
    port = free_port()
    pid = chaos.webapp(port, pidfile=chaos.tmp / "run" / "web" / "web.pid")
    done = chaos.run(stop_experiment(port, chaos.tmp / "run"), "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    f = chaos.result(done.stdout)["faults"][0]
    assert f["outcome"] == "recovered"
    assert f["detected"] < 0.5
    assert 1.0 <= f["recovered"] < 3.0
    assert f["detail"].startswith(f"SIGSTOP web (pid {pid}) for 1s")
    assert proc_state(pid) in ("S", "R")


def test_sigkilled_controller_the_agent_undoes_at_once(chaos: Chaos) -> None:
    """The controller SIGKILLed in the middle of a 60 s hang: its agent sees its stdin close
    and continues the process at once (long before the fault's time or its lease)."""
    port = free_port()
    pid = chaos.webapp(port, pidfile=chaos.tmp / "run" / "web.pid")
    ctl = chaos.start(stop_experiment(port, chaos.tmp / "run", hold="60s", lease="60s"))
    try:
        wait_state(pid, lambda s: s == "T")
        ctl.kill()
        ctl.wait()
        wait_state(pid, lambda s: s in ("S", "R"), timeout=5)
    finally:
        ctl.kill()
        ctl.communicate()


def test_frozen_controller_the_lease_runs_out(chaos: Chaos) -> None:
    """The controller frozen (SIGSTOP: as good as a host gone with the connection open) in a
    60 s hang with a 2 s lease: no renewal comes, and the agent undoes within the lease."""
    port = free_port()
    pid = chaos.webapp(port, pidfile=chaos.tmp / "run" / "web.pid")
    ctl = chaos.start(stop_experiment(port, chaos.tmp / "run", hold="60s", lease="2s"))
    try:
        wait_state(pid, lambda s: s == "T")
        os.kill(ctl.pid, signal.SIGSTOP)
        t = time.monotonic()
        wait_state(pid, lambda s: s in ("S", "R"), timeout=6)
        assert time.monotonic() - t < 3.5
    finally:
        os.kill(ctl.pid, signal.SIGCONT)
        ctl.kill()
        ctl.communicate()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


def test_chaos_undo_cleans_up_after_a_crashed_run(chaos: Chaos) -> None:
    """Controller and agent both SIGKILLed: the process stays stopped, the journal remains,
    and `heartline chaos undo` continues it and removes the journal."""
    port = free_port()
    pid = chaos.webapp(port, pidfile=chaos.tmp / "run" / "web.pid")
    ctl = chaos.start(stop_experiment(port, chaos.tmp / "run", hold="60s", lease="60s"))
    try:
        wait_state(pid, lambda s: s == "T")
        agents = _children(ctl.pid)
        assert agents
        for a in agents:
            os.kill(a, signal.SIGKILL)
        ctl.kill()
        ctl.wait()
    finally:
        ctl.kill()
        ctl.communicate()
    time.sleep(0.3)  # not a check: give a wrongly surviving agent time to act
    assert proc_state(pid) == "T"
    journals = list(chaos.journal.iterdir())
    assert len(journals) == 1
    undo = subprocess.run(
        [*chaos.argv(chaos.tmp / "exp.toml")[:4], "undo", "--journal", str(chaos.journal)],
        env=chaos.env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert undo.returncode == 0, undo.stderr
    assert "undone (kill -CONT" in undo.stdout
    assert proc_state(pid) in ("S", "R")
    assert not list(chaos.journal.iterdir())
    again = subprocess.run(
        [*chaos.argv(chaos.tmp / "exp.toml")[:4], "undo", "--journal", str(chaos.journal)],
        env=chaos.env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert again.returncode == 0 and "nothing to undo" in again.stdout


def test_sigterm_aborts_and_undoes(chaos: Chaos) -> None:
    """SIGTERM in the middle of a hang: the run ends aborted (exit 22) and the process was
    continued before it ended."""
    port = free_port()
    pid = chaos.webapp(port, pidfile=chaos.tmp / "run" / "web.pid")
    ctl = chaos.start(stop_experiment(port, chaos.tmp / "run", hold="60s"))
    wait_state(pid, lambda s: s == "T")
    ctl.send_signal(signal.SIGTERM)
    _, err = ctl.communicate(timeout=30)
    assert ctl.returncode == 22, err
    assert "aborted: stopped by SIGTERM" in err
    assert proc_state(pid) in ("S", "R")
    assert not list(chaos.journal.iterdir())


def test_halt_file_stops_between_steps(chaos: Chaos) -> None:
    """The halt file appears during a run of many rounds: the run stops (exit 22) within a
    moment, with everything undone."""
    port = free_port()
    pid = chaos.webapp(port, pidfile=chaos.tmp / "run" / "web.pid")
    halt = chaos.tmp / "halt"
    text = stop_experiment(port, chaos.tmp / "run", hold="300ms", rounds=100,
                           extra=f'halt_file = "{halt}"')  # fmt: skip
    ctl = chaos.start(text, "--json")
    wait_state(pid, lambda s: s == "T")
    halt.touch()
    t = time.monotonic()
    out, err = ctl.communicate(timeout=30)
    assert time.monotonic() - t < 5
    assert ctl.returncode == 22, err
    assert "the halt file" in err
    rounds = {e["round"] for e in chaos.events(out) if e["event"] == "fault"}
    assert len(rounds) < 10
    assert proc_state(pid) in ("S", "R")


def test_blast_radius_refuses_before_touching_anything(chaos: Chaos) -> None:
    """Two processes, pick all, at most one target: refused (exit 24), both still running."""
    port1, port2 = free_port(), free_port()
    run = chaos.tmp / "run"
    pids = [chaos.webapp(port1, pidfile=run / "a" / "a.pid"),
            chaos.webapp(port2, pidfile=run / "b" / "b.pid")]  # fmt: skip
    text = stop_experiment(port1, run).replace('[faults.hang]\nkind = "stop"',
                                               '[faults.hang]\nkind = "kill"')  # fmt: skip
    text = text.replace('for = "1s"\n', "").replace("allow_last = true", "max_targets = 1")
    done = chaos.run(text)
    assert done.returncode == 24, done.stderr
    assert "max_targets = 1" in done.stderr and "\n" not in done.stderr.strip()
    assert all(proc_state(p) in ("S", "R") for p in pids)


def test_deviation_when_nothing_brings_it_back(chaos: Chaos) -> None:
    """A program that is not restarted after its SIGKILL: not recovered within the deadline,
    so the run deviates (exit 20) and says which round."""
    port = free_port()
    text = example(port, 1).replace('stop_timeout = "2s"', 'stop_timeout = "2s"\nrestart = "never"')
    text = text.replace('recover_within = "5s"', 'recover_within = "1s"\nsteady_within = "3s"')
    done = chaos.run(text)
    assert done.returncode == 20, done.stderr + done.stdout
    assert "round 1 kill: not recovered within 1s" in done.stderr
    assert "NOT recovered within 1s" in done.stdout


def test_a_fault_that_cannot_be_applied_is_an_error(chaos: Chaos) -> None:
    """A pidfile directory with nothing alive in it: errored (exit 21), one line."""
    empty = chaos.tmp / "empty"
    empty.mkdir()
    port = free_port()
    chaos.webapp(port)
    done = chaos.run(stop_experiment(port, empty))
    assert done.returncode == 21, done.stderr
    assert "nothing to hit" in done.stderr


def test_dry_run_shows_the_exact_commands_and_changes_nothing(chaos: Chaos) -> None:
    """--dry-run lists the members and the commands (apply and undo) and leaves the process
    running."""
    port = free_port()
    pid = chaos.webapp(port, pidfile=chaos.tmp / "run" / "web.pid")
    done = chaos.run(stop_experiment(port, chaos.tmp / "run"), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"apply on this machine: kill -STOP {pid}; undo: kill -CONT {pid}" in done.stdout
    assert "dry run: nothing was changed" in done.stdout
    assert proc_state(pid) in ("S", "R")
    wait_until(lambda: not list(chaos.journal.glob("*.json")) or None, 1, "no journal")
