"""Daemons report, `heartline hosts` shows them, `heartline place` charges holds and runs over
SSH: on both backends (a real lockd and a real etcd on loopback), with real daemons on this
machine standing in for hosts (each with its own [cluster] name; SSH reaches all of them
through the loopback sshd). The lab tests run the same on hosts of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import wait_until
from tests.integration.conftest import HEARTLINE, Daemon

from heartline.cluster import Ssh

INTERVAL = 0.5


@pytest.fixture
def backend(lock_server: Any) -> str:
    return str(lock_server.url)


def cluster_text(url: str, sshd: dict[str, Any], name: str = "") -> str:
    return textwrap.dedent(f"""\
        [cluster]
        backend = "{url}"
        report_interval = "{INTERVAL}s"
        ssh_config = "{sshd["ssh_config"]}"
        {f'name = "{name}"' if name else ""}
        [cluster.groups]
        even = ["h0", "h2"]
        [cluster.hosts.h0]
        address = "testhost"
        labels = ["fast"]
        [cluster.hosts.h1]
        address = "testhost"
        [cluster.hosts.h2]
        address = "testhost"
        cpus = 1
        """)  # fmt: skip


@pytest.fixture
def cluster(
    backend: str,
    sshd: dict[str, Any],
    make_daemon: Callable[..., Daemon],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, Any]]:
    """Three daemons h0..h2 reporting to the backend, and a controller config."""
    runtime = tempfile.mkdtemp(prefix="hl-", dir="/tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    daemons = []
    for i in range(3):
        d = make_daemon("", start=False)
        d.config.write_text(d.config.read_text() + cluster_text(backend, sshd, f"h{i}"))
        d.start()
        daemons.append(d)
    controller = tmp_path / "controller.toml"
    controller.write_text(cluster_text(backend, sshd))
    try:
        yield {"daemons": daemons, "config": str(controller), "backend": backend,
               "env": {"XDG_RUNTIME_DIR": runtime}}  # fmt: skip
    finally:
        # The shared connection heartline opened (its control socket is under runtime),
        # then the directory.
        Ssh(config=sshd["ssh_config"]).close_shared("testhost")
        shutil.rmtree(runtime, ignore_errors=True)


def hl(
    cluster: dict[str, Any], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HEARTLINE, "-c", cluster["config"], *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **cluster["env"]}, check=False,
    )  # fmt: skip


def hosts(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    res = hl(cluster, "hosts", "--json")
    assert res.returncode == 0, res.stderr
    return {h["name"]: h for h in json.loads(res.stdout)["hosts"]}


def test_every_daemon_reports_and_hosts_shows_them(cluster: dict[str, Any]) -> None:
    """Each daemon's report arrives with its figures, labels, groups and a fresh age."""
    seen = wait_until(
        lambda: (h := hosts(cluster)) and all(h[n]["state"] == "up" for n in ("h0", "h1", "h2"))
        and h, 15, "three hosts up",
    )  # fmt: skip
    r = seen["h0"]["report"]
    assert r["cpus"] >= 1 and r["mem_total"] > 0 and r["labels"] == ["fast"]
    assert r["groups"] == ["even"] and r["address"] == "testhost"
    assert seen["h0"]["age"] < 2 * INTERVAL + 0.5
    table = hl(cluster, "hosts").stdout
    assert table.splitlines()[0].split()[:3] == ["HOST", "STATE", "AGE"]
    assert {line.split()[0] for line in table.splitlines()[1:]} == {"h0", "h1", "h2"}


def test_a_dead_daemon_goes_unresponsive_within_two_intervals(cluster: dict[str, Any]) -> None:
    """SIGKILL of a daemon: within two intervals (plus a read) its host is unresponsive or
    gone, and placements never pick it again."""
    wait_until(lambda: hosts(cluster)["h1"]["state"] == "up", 15, "h1 up")
    cluster["daemons"][1].kill9()
    wait_until(lambda: hosts(cluster)["h1"]["state"] != "up", 2 * INTERVAL + 2.0,
               "h1 to leave the up state")  # fmt: skip
    for _ in range(6):
        res = hl(cluster, "place", "--print")
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() in ("h0", "h2")


def test_hosts_watch_redraws_on_each_change(cluster: dict[str, Any]) -> None:
    """`hosts --watch --json` prints a line per change (and per second): a daemon stopped
    cleanly leaves its session, and the next lines no longer list its host."""
    wait_until(lambda: all(h["state"] == "up" for h in hosts(cluster).values()), 15, "up")
    proc = subprocess.Popen(
        [*HEARTLINE, "-c", cluster["config"], "hosts", "--watch", "--json"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, **cluster["env"]},
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert {h["name"] for h in first["hosts"] if h["state"] == "up"} == {"h0", "h1", "h2"}
        cluster["daemons"][2].cli("down")
        for _ in range(20):  # bounded: a line a second at least
            line = json.loads(proc.stdout.readline())
            if "h2" not in {h["name"] for h in line["hosts"] if h.get("report")}:
                break
        else:
            raise AssertionError("h2's report never left the watch")
        assert line["at"] - first["at"] < 2 * INTERVAL + 3  # at once, not after a TTL
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_place_runs_the_command_there_and_its_hold_ends_with_it(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    """place runs CMD over SSH with its exit code; while it runs, a hold is charged on the
    chosen host (seen by hosts); when it ends, the hold is gone."""
    wait_until(lambda: all(h["state"] == "up" for h in hosts(cluster).values()), 15, "up")
    flag = tmp_path / "go"
    proc = subprocess.Popen(
        [*HEARTLINE, "-c", cluster["config"], "place", "--group", "even", "--", "sh", "-c",
         f"while [ ! -e {flag} ]; do sleep 0.05; done; exit 3"],
        env={**os.environ, **cluster["env"]},
    )  # fmt: skip
    try:
        held = wait_until(
            lambda: [n for n, h in hosts(cluster).items() if h["holds"]], 15, "a hold"
        )
        assert held in (["h0"], ["h2"])
        # The host's next report says a hold claimed a CPU when it was sampled.
        wait_until(lambda: hosts(cluster)[held[0]]["report"]["held"] == 1.0, 10, "report held")
        flag.touch()
        assert proc.wait(30) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_until(lambda: not any(h["holds"] for h in hosts(cluster).values()), 10, "hold gone")


def test_a_killed_caller_ends_its_remote_command_and_its_hold(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    """SIGKILL of `heartline place`: the far command stops and its hold ends."""
    wait_until(lambda: all(h["state"] == "up" for h in hosts(cluster).values()), 15, "up")
    pidfile = tmp_path / "pid"
    proc = subprocess.Popen(
        [*HEARTLINE, "-c", cluster["config"], "place", "--", "sh", "-c",
         f"echo $$ > {pidfile}; exec sleep 300"],
        env={**os.environ, **cluster["env"]},
    )  # fmt: skip
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, "remote start")
        wait_until(lambda: any(h["holds"] for h in hosts(cluster).values()), 10, "a hold")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pid = int(pidfile.read_text())
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 15, "the remote command to stop")
    # lockd ends the session when its connection closes; etcd when its lease runs out.
    wait_until(lambda: not any(h["holds"] for h in hosts(cluster).values()), 20, "hold gone")


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--group", "nope"], 12, "no host group 'nope'"),
        (["--label", "gpu"], 12, "no host has label 'gpu'"),
        (["--group", "even", "--need", "cpus=999"], 11, "h2: declares 1 cpus, 999 needed"),
        (["--need", "mem=1000TiB"], 11, "free"),
    ],
)
def test_bad_requests_fail_in_one_line_and_leave_no_hold(
    cluster: dict[str, Any], args: list[str], code: int, words: str
) -> None:
    """Unknown group or label, nothing fits: one line, its own exit code, no hold."""
    wait_until(lambda: all(h["state"] == "up" for h in hosts(cluster).values()), 15, "up")
    res = hl(cluster, "place", *args, "--", "true")
    assert res.returncode == code, res.stderr
    assert words in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not any(h["holds"] for h in hosts(cluster).values())


def test_explain_shows_every_candidate_and_its_verdict(cluster: dict[str, Any]) -> None:
    """--explain: one row per host with its inputs, score and why it won or lost."""
    wait_until(lambda: all(h["state"] == "up" for h in hosts(cluster).values()), 15, "up")
    res = hl(cluster, "place", "--label", "fast", "--explain", "--", "true")
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line for line in res.stderr.splitlines()[2:]}
    assert "chosen" in rows["h0"] and "no label fast" in rows["h1"]
    assert "no label fast" in rows["h2"]


def test_an_unreachable_backend_is_exit_69(tmp_path: Path, sshd: dict[str, Any]) -> None:
    """Nobody answers at the backend: one line, exit 69, for hosts and place."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(cluster_text("heartline://127.0.0.1:1", sshd))
    for args in (["hosts"], ["place", "--", "true"]):
        res = subprocess.run([*HEARTLINE, "-c", str(cfg), *args], capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
        assert res.returncode == 69, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_a_reload_joins_or_leaves_the_cluster(
    backend: str, sshd: dict[str, Any], make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    """A daemon without [cluster] joins on `heartline reload` once the section is added, and
    leaves (its report gone) when it is removed again."""
    d = make_daemon("")
    plain = d.config.read_text()
    controller = {"config": str(tmp_path / "ctl.toml"), "env": {}}
    Path(controller["config"]).write_text(cluster_text(backend, sshd))
    d.config.write_text(plain + cluster_text(backend, sshd, "late"))
    d.cli("reload")
    wait_until(lambda: hosts(controller).get("late", {}).get("state") == "up", 15, "late up")
    d.config.write_text(plain)
    d.cli("reload")
    wait_until(lambda: "late" not in hosts(controller), 15, "late gone")


@pytest.mark.parametrize(
    ("alias", "code", "words"),
    [("refused", 255, "Connection refused"), ("stranger", 13, "host key")],
)
def test_ssh_failures_are_one_line_with_their_code_and_leave_no_hold(
    cluster: dict[str, Any], sshd: dict[str, Any], tmp_path: Path, alias: str, code: int,
    words: str,
) -> None:  # fmt: skip
    """Nothing listens at the chosen host's SSH port (255, as ssh's own), or its host key is
    not known (13, never accepted): one line each, and the hold is gone."""
    wait_until(lambda: all(h["state"] == "up" for h in hosts(cluster).values()), 15, "up")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    config = tmp_path / "ssh_config"
    config.write_text(textwrap.dedent(f"""\
        Host refused
            HostName 127.0.0.1
            Port 1
        Host stranger
            HostName 127.0.0.1
            Port {sshd["port"]}
            User root
            IdentityFile {sshd["key"]}
            UserKnownHostsFile {empty}
            GlobalKnownHostsFile /dev/null
        """))  # fmt: skip
    ctl = tmp_path / "bad-ssh.toml"
    text = cluster_text(cluster["backend"], sshd).replace('"testhost"', f'"{alias}"')
    ctl.write_text(text.replace(sshd["ssh_config"], str(config)))
    res = subprocess.run(
        [*HEARTLINE, "-c", str(ctl), "place", "--", "true"], capture_output=True, text=True,
        timeout=60, env={**os.environ, **cluster["env"]}, check=False,
    )  # fmt: skip
    assert res.returncode == code, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and words in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    wait_until(lambda: not any(h["holds"] for h in hosts(cluster).values()), 20, "no hold")
