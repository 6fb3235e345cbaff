"""The daemon killed with SIGKILL: no orphans, no duplicates, and re-adoption with zero restarts."""

from __future__ import annotations

import os
import signal
import subprocess

from tests.integration.conftest import HEARTLINE, alive, py, tagged_pids, wait_until

CHATTY = py("""
import time
i = 0
while True:
    print("line", i, flush=True)
    i += 1
    time.sleep(0.01)
""")


def _programs(n: int) -> str:
    body = "".join(f'\n[programs.s{i}]\ncommand = ["/bin/sleep", "3600"]\n' for i in range(n))
    return body + f"\n[programs.chatty]\ncommand = {CHATTY}\n"


def _program_pids(d) -> set[int]:
    """Tagged processes that are programs (not the daemon, not its fd holder)."""
    daemon_like = {"heartline"}
    out = set()
    for pid in tagged_pids(d.tag):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not any(a.decode(errors="replace") in daemon_like for a in argv[1:3]):
            out.add(pid)
    return out


def test_sigkilled_daemon_is_replaced_without_a_restart_or_duplicate(make_daemon):
    """SIGKILL the daemon, start it again: same pids, zero restarts, no second copy, logs flow."""
    d = make_daemon(_programs(10))
    before = {n: p["pid"] for n, p in d.status().items()}
    assert all(before.values())
    wait_until(lambda: "line" in d.cli("logs", "chatty").stdout, 10, "chatty output")
    d.kill9()
    # While no daemon runs, the programs stay up (the chatty one too: its pipe is held open).
    for pid in before.values():
        assert alive(pid)
    d.start()
    after = d.status()
    assert {n: p["pid"] for n, p in after.items()} == before
    assert all(p["restarts"] == 0 and p["adopted"] for p in after.values())
    assert _program_pids(d) == set(before.values())  # no duplicates, nothing else
    # Output written after the adoption still reaches the log.
    last = int(d.cli("logs", "chatty", "-n", "1").stdout.split()[1])
    wait_until(
        lambda: int(d.cli("logs", "chatty", "-n", "1").stdout.split()[1]) > last + 5,
        10,
        "new output",
    )
    # An adopted program that crashes is restarted as usual.
    os.kill(before["s0"], signal.SIGKILL)
    p = wait_until(
        lambda: (q := d.program("s0"))["pid"] not in (None, before["s0"]) and q, 10, "restart"
    )
    assert p["last_exit"]["reason"] == "unknown" and p["restarts"] == 1


def test_no_orphans_when_no_daemon_comes_back(make_daemon):
    """If no new daemon adopts them within adopt_timeout, every program is stopped."""
    d = make_daemon(_programs(10), daemon_extra='adopt_timeout = "300ms"')
    pids = [p["pid"] for p in d.status().values()]
    d.kill9()
    wait_until(lambda: not any(alive(pid) for pid in pids), 15, "the orphans to be stopped")
    wait_until(lambda: not tagged_pids(d.tag), 10, "the fd holder to exit")


def test_config_changed_while_down(make_daemon):
    """Adoption applies config changes made while the daemon was down: changed restarts, removed stops."""
    d = make_daemon("""
        [programs.keep]
        command = ["/bin/sleep", "3600"]
        [programs.change]
        command = ["/bin/sleep", "3600"]
        [programs.remove]
        command = ["/bin/sleep", "3600"]
    """)
    before = {n: p["pid"] for n, p in d.status().items()}
    d.kill9()
    d.config.write_text(
        d.config.read_text()
        .replace(
            '[programs.change]\ncommand = ["/bin/sleep", "3600"]',
            '[programs.change]\ncommand = ["/bin/sleep", "3601"]',
        )
        .replace('[programs.remove]\ncommand = ["/bin/sleep", "3600"]\n', "")
    )
    d.start()
    assert d.program("keep")["pid"] == before["keep"]
    wait_until(
        lambda: d.program("change")["pid"] not in (None, before["change"]), 10, "changed restarted"
    )
    assert "remove" not in d.status()
    wait_until(lambda: not alive(before["remove"]), 15, "removed program stopped")


def test_second_daemon_is_refused(make_daemon):
    """A second `heartline up` on the same run_dir exits 6 with a one-line error."""
    d = make_daemon('[programs.a]\ncommand = ["/bin/sleep", "3600"]\n')
    res = subprocess.run(
        [*HEARTLINE, "up", "-c", str(d.config)],
        capture_output=True,
        text=True,
        env=d.env,
        timeout=30,
    )
    assert res.returncode == 6
    assert "already runs" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert len([p for p in d.status().values() if p["pid"]]) == 1


def test_child_missing_from_the_state_file_is_not_duplicated(make_daemon):
    """A child spawned just before the crash (not yet in state.json) is stopped, not doubled."""
    import json

    d = make_daemon("""
        [programs.a]
        command = ["/bin/sleep", "3600"]
        [programs.b]
        command = ["/bin/sleep", "3600"]
    """)
    before = {n: p["pid"] for n, p in d.status().items()}
    d.kill9()
    state = d.state_file()
    del state["programs"]["b"]
    (d.run_dir / "state.json").write_text(json.dumps(state))
    d.start()
    assert d.program("a")["pid"] == before["a"]
    wait_until(lambda: not alive(before["b"]), 15, "the unrecorded child to be stopped")
    assert d.program("b")["state"] == "running"
    assert _program_pids(d) == {before["a"], d.program("b")["pid"]}
