"""A lab whose backend is an etcd (`lab up N --backend etcd`): it listens on the gateway
address only (and its peer port on a loopback address of the lab's own), with TLS and client
certificates; the hosts report through it; `lab crash|boot backend` kill it and start it again
on its data; and `lab down` removes it, also after `lab up` was SIGKILLed."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import wait_until
from tests.integration.lab.lab_helpers import HEARTLINE, assert_gone, heartline, leftovers

from heartline.testing import lab_unavailable

pytestmark = pytest.mark.skipif(
    lab_unavailable("etcd") is not None, reason=lab_unavailable("etcd") or ""
)


def status(lab_dir: Path) -> dict[str, Any]:
    res = heartline("lab", "status", "--json", "--dir", str(lab_dir))
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def listeners(pid: int) -> list[str]:
    """The TCP addresses process ``pid`` listens on (`ss`)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[3] for line in out.splitlines() if f"pid={pid}," in line)


def hosts_up(config: str, names: list[str]) -> bool:
    res = heartline("-c", config, "hosts", "--json")
    hosts = json.loads(res.stdout)["hosts"] if res.returncode == 0 else []
    return sorted(h["name"] for h in hosts if h["state"] == "up") == names


def test_an_etcd_lab_from_up_to_down(lab_dir: Path) -> None:
    """`lab up 2 --backend etcd`: the keeper is an etcd on https://GATEWAY:2379 and its peer
    port on loopback, nothing else; a client without the lab's certificate is refused (77),
    with it the hosts report; the backend crashed and booted comes back on its data and the
    hosts report again; `lab down` leaves nothing."""
    res = heartline("lab", "up", "2", "--backend", "etcd", "--dir", str(lab_dir))
    assert res.returncode == 0, res.stderr
    s = status(lab_dir)
    gateway, tls = s["gateway"], lab_dir / "tls"
    assert s["backend_kind"] == "etcd" and s["keeper"] == "up"
    assert s["backend"] == f"etcds://{gateway}:2379" and f"{s['backend']} (etcd" in res.stdout
    peer = "127." + gateway.split(".", 1)[1]
    assert listeners(s["keeper_pid"]) == sorted([f"{gateway}:2379", f"{peer}:2380"])
    assert (tls / "client.key").stat().st_mode & 0o777 == 0o600
    assert not (lab_dir / "token").exists()
    server = ["--server", s["backend"], "--ca-file", str(tls / "ca.pem")]
    assert heartline("locks", *server).returncode == 77
    mine = ["--cert-file", str(tls / "client.pem"), "--key-file", str(tls / "client.key")]
    assert heartline("locks", *server, *mine).returncode == 0
    wait_until(lambda: hosts_up(s["config"], ["lab1", "lab2"]), 20, "both hosts to report")

    res = heartline("lab", "crash", "backend", "--dir", str(lab_dir))
    assert res.returncode == 0 and "etcd was killed" in res.stdout, res.stderr
    assert status(lab_dir)["keeper"] == "down"
    assert heartline("-c", s["config"], "hosts").returncode == 69
    res = heartline("lab", "boot", "backend", "--dir", str(lab_dir))
    assert res.returncode == 0 and "(etcd pid " in res.stdout, res.stderr
    again = status(lab_dir)
    assert again["keeper"] == "up" and again["keeper_pid"] != s["keeper_pid"]
    assert listeners(again["keeper_pid"]) == sorted([f"{gateway}:2379", f"{peer}:2380"])
    wait_until(lambda: hosts_up(s["config"], ["lab1", "lab2"]), 20, "both hosts to report")

    res = heartline("lab", "down", "--dir", str(lab_dir))
    assert res.returncode == 0, res.stderr
    assert_gone(s["id"], lab_dir)


def test_down_after_an_etcd_lab_up_was_killed(lab_dir: Path) -> None:
    """`lab up --backend etcd` SIGKILLed once its etcd runs: `lab down` ends that etcd too
    and removes its data, certificates and everything else."""
    up = subprocess.Popen([*HEARTLINE, "lab", "up", "2", "--backend", "etcd", "--dir",
                           str(lab_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def keeper_runs() -> dict[str, Any] | None:
        try:
            state = dict(json.loads((lab_dir / "lab.json").read_text()))
        except (OSError, ValueError):
            return None
        return state if state["keeper_pid"] and (lab_dir / "etcd").exists() else None

    try:
        state = wait_until(keeper_runs, 30, "the lab's etcd to run")
    finally:
        up.send_signal(signal.SIGKILL)
        up.wait(10)
    assert state["backend_kind"] == "etcd"
    assert any(f"process {state['keeper_pid']}" == x for x in leftovers(state["id"]))
    res = heartline("lab", "down", "--dir", str(lab_dir))
    assert res.returncode == 0, res.stderr
    assert_gone(state["id"], lab_dir)
