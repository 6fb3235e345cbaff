"""A lab goes away completely: no network namespace (`ip netns list`), no link (`ip link`),
no process and no file of it is left, also after `lab up` or the keeper was SIGKILLed, after
a failed `up`, and when a test using the fixture fails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import wait_until
from tests.integration.lab.lab_helpers import (
    HEARTLINE,
    alive,
    assert_gone,
    heartline,
    in_netns,
    leftovers,
    one_line_error,
)

from heartline.testing import lab_hosts


def read_state(lab_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((lab_dir / "lab.json").read_text()))
    except (OSError, ValueError):
        return None


def network_made(state: dict[str, Any] | None) -> bool:
    """The first host's network namespace exists (the bridge and the keeper come before)."""
    return state is not None and any(
        n.startswith(f"hl{state['id']}-") for n in os.listdir("/run/netns")
    )


def hosts_starting(state: dict[str, Any] | None) -> bool:
    """Some host's init is being started (its wrapper's pid is recorded)."""
    return state is not None and any(h["wrapper_pid"] for h in state["hosts"])


@pytest.mark.parametrize("when", [network_made, hosts_starting], ids=lambda f: f.__name__)
def test_down_after_the_cli_was_killed_mid_up(lab_dir: Path, when: Any) -> None:
    """`lab up 3` SIGKILLed half-way (once the network exists; once hosts are starting):
    `lab down` removes everything it had made, processes included."""
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    up = subprocess.Popen([*HEARTLINE, "lab", "up", "3", "--dir", str(lab_dir)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        state = wait_until(lambda: (s := read_state(lab_dir)) and when(s) and s, 30, when.__name__)
    finally:
        up.send_signal(signal.SIGKILL)
        up.wait(10)
    assert state["phase"] == "starting"  # killed before it was done
    lab_id = state["id"]
    assert leftovers(lab_id)  # there was something to clean up
    res = heartline("lab", "down", "--dir", str(lab_dir))
    assert res.returncode == 0, res.stderr
    assert_gone(lab_id, lab_dir)
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forward


def test_up_stopped_by_sigterm_undoes_itself(lab_dir: Path) -> None:
    """`lab up` sent SIGTERM while its hosts start removes what it made and exits 130."""
    up = subprocess.Popen([*HEARTLINE, "lab", "up", "3", "--dir", str(lab_dir)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        state = wait_until(lambda: (s := read_state(lab_dir)) and hosts_starting(s) and s, 30,
                           "hosts to start")  # fmt: skip
        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 130
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert_gone(state["id"], lab_dir)
    assert not lab_dir.exists()


def test_down_after_the_keeper_was_killed(lab_dir: Path) -> None:
    """The keeper (the lab's lockd) SIGKILLed: status says so, and `lab down` still removes
    every host, link and file."""
    res = heartline("lab", "up", "2", "--dir", str(lab_dir))
    assert res.returncode == 0, res.stderr
    status = json.loads(heartline("lab", "status", "--json", "--dir", str(lab_dir)).stdout)
    os.kill(status["keeper_pid"], signal.SIGKILL)
    wait_until(lambda: json.loads(heartline("lab", "status", "--json", "--dir", str(lab_dir))
                                  .stdout)["keeper"] == "down", 10, "the keeper to be down")  # fmt: skip
    res = heartline("lab", "down", "--dir", str(lab_dir))
    assert res.returncode == 0, res.stderr
    assert_gone(status["id"], lab_dir)
    res = heartline("lab", "status", "--dir", str(lab_dir))
    assert res.returncode == 15 and "no lab in" in one_line_error(res)


def test_the_fixture_takes_the_lab_down_when_the_test_fails() -> None:
    """lab_hosts() removes everything even when the block raises, and its directory too."""
    with pytest.raises(RuntimeError, match="test failed"), lab_hosts(1) as lab:
        lab_id, where = lab.state.id, Path(lab.dir)
        assert lab.run("lab1", ["hostname"]).stdout == "lab1\n"
        raise RuntimeError("test failed")
    assert leftovers(lab_id) == []
    assert not where.exists()


def test_an_up_that_fails_undoes_itself(lab_dir: Path) -> None:
    """An `up` whose hosts are not ready in time fails with one line (exit 14) and leaves
    nothing behind."""
    before = _lab_things()
    res = heartline("lab", "up", "2", "--dir", str(lab_dir), "--timeout", "0.05")
    assert res.returncode == 14, res.stderr
    assert "in time" in one_line_error(res)
    assert not lab_dir.exists()
    assert _lab_things() == before


def _lab_things() -> set[str]:
    """Every lab's network namespaces and links on this machine."""
    links = {f"link {n}" for n in os.listdir("/sys/class/net") if n.startswith("hl")}
    return links | {f"netns {n}" for n in os.listdir("/run/netns") if n.startswith("hl")}


def test_two_labs_started_at_once_do_not_collide(tmp_path: Path) -> None:
    """Two `lab up` at the same moment get different ids, subnets, bridges and namespaces,
    and each one's hosts answer."""
    import tempfile

    dirs = [Path(tempfile.mkdtemp(prefix="hl-lab-", dir="/tmp")) / "lab" for _ in range(2)]
    ups = [subprocess.Popen([*HEARTLINE, "lab", "up", "1", "--dir", str(d)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for d in dirs]  # fmt: skip
    try:
        for p in ups:
            _out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
        docs = [json.loads(heartline("lab", "status", "--json", "--dir", str(d)).stdout)
                for d in dirs]  # fmt: skip
        assert docs[0]["id"] != docs[1]["id"]
        assert docs[0]["network"] != docs[1]["network"]
        for d in dirs:
            res = heartline("lab", "exec", "lab1", "--dir", str(d), "--", "hostname")
            assert res.stdout == "lab1\n"
    finally:
        for d in dirs:
            heartline("lab", "down", "--dir", str(d))
            os.rmdir(d.parent)
    for doc, d in zip(docs, dirs, strict=True):
        assert_gone(doc["id"], d)


def test_lab_exec_of_a_long_command_is_ended_by_down(lab_dir: Path) -> None:
    """A command left running in a host through `lab exec` (its nsenter in the root pid
    namespace, the command in the host's) ends with `lab down`."""
    res = heartline("lab", "up", "1", "--dir", str(lab_dir))
    assert res.returncode == 0, res.stderr
    lab_id = json.loads(heartline("lab", "status", "--json", "--dir", str(lab_dir)).stdout)["id"]
    long = subprocess.Popen([*HEARTLINE, "lab", "exec", "lab1", "--dir", str(lab_dir), "--",
                             "sleep", "300"], start_new_session=True)  # fmt: skip
    try:
        wait_until(lambda: any(_comm(p) == "sleep" for p in in_netns(f"hl{lab_id}-lab1")), 10,
                   "the command to run in lab1")  # fmt: skip
        res = heartline("lab", "down", "--dir", str(lab_dir))
        assert res.returncode == 0, res.stderr
        assert long.wait(10) == -signal.SIGKILL
    finally:
        if long.poll() is None:
            long.kill()
            long.wait()
    assert_gone(lab_id, lab_dir)


def test_down_ends_the_shared_ssh_connections_to_its_hosts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A shared connection (ControlMaster) the cluster's SSH layer opened to a host ends with
    `lab down`, even when the host was cut off (its connection could not notice by itself)."""
    import tempfile

    from heartline.cluster import Ssh

    runtime = tempfile.mkdtemp(prefix="hl-", dir="/tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    try:
        with lab_hosts(1) as lab:
            assert Ssh(config=lab.ssh_config).run("lab1", ["true"]) == 0
            masters = _ssh_masters(runtime)
            assert len(masters) == 1
            lab.cut("lab1")
        assert wait_until(lambda: not any(alive(p) for p in masters), 10, "the master to end")
    finally:
        import shutil

        shutil.rmtree(runtime, ignore_errors=True)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _ssh_masters(control_dir: str) -> list[int]:
    """ssh ControlMaster processes whose control socket is in ``control_dir``."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"ssh: ") and control_dir.encode() in cmd and b"[mux]" in cmd:
            found.append(int(entry))
    return found
