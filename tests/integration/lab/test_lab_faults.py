"""What lab hosts go through: a crash (every process of the host killed at once) and a boot
back, a cut link and its heal. Each test leaves its host up and healed again."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import wait_until
from tests.integration.lab.lab_helpers import alive, heartline, in_netns, one_line_error

from heartline.errors import LabError
from heartline.testing import LabHosts, lab_hosts


@pytest.fixture(scope="module")
def pair() -> Iterator[LabHosts]:
    """Two lab hosts of this module's own (crashing and cutting would disturb others)."""
    with lab_hosts(2) as lab:
        yield lab


def host_pids(lab: LabHosts, name: str) -> set[int]:
    """Every process of the host, as the root namespace sees it: its init and all below."""
    h = next(h for h in lab.status()["hosts"] if h["name"] == name)
    assert h["init_pid"] is not None
    out, todo = set(), [h["init_pid"]]
    while todo:
        pid = todo.pop()
        out.add(pid)
        with contextlib.suppress(OSError):
            todo += [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return out


def reachable(address: str, timeout: float = 0.5) -> bool:
    try:
        socket.create_connection((address, 22), timeout=timeout).close()
    except OSError:
        return False
    return True


def test_a_crash_kills_the_whole_host_and_boot_brings_it_back(pair: LabHosts) -> None:
    """`lab crash lab1` kills every process of lab1 at once (init, sshd, daemon, its fd
    holder) and nothing of lab2; ssh to lab1 fails. `lab boot lab1` starts a new init,
    sshd and daemon in the same network namespace: ssh works again with the same host key
    (known_hosts unchanged, strict checking) and the daemon answers."""
    before = host_pids(pair, "lab1")
    other = host_pids(pair, "lab2")
    assert len(before) >= 4
    res = heartline("lab", "crash", "lab1", "--dir", pair.dir)
    assert res.returncode == 0, res.stderr
    assert not any(alive(pid) for pid in before)
    assert all(alive(pid) for pid in other)
    h1 = pair.status()["hosts"][0]
    assert (h1["state"], h1["init_pid"], h1["sshd_pid"]) == ("crashed", None, None)
    assert pair.ssh("lab1", ["true"], "-o", "ConnectTimeout=2").returncode == 255
    known = (Path(pair.dir) / "known_hosts").read_text()

    res = heartline("lab", "boot", "lab1", "--dir", pair.dir)
    assert res.returncode == 0, res.stderr
    after = host_pids(pair, "lab1")
    assert after and not after & before
    assert pair.status()["hosts"][0]["state"] == "up"
    res = pair.ssh("lab1", ["hostname"])
    assert (res.returncode, res.stdout) == (0, "lab1\n"), res.stderr
    assert (Path(pair.dir) / "known_hosts").read_text() == known
    status = pair.ssh("lab1", [sys.executable, "-m", "heartline", "status", "--json"])
    assert status.returncode == 0 and "daemon" in json.loads(status.stdout)


def test_a_crashed_host_refuses_exec_and_a_second_crash(pair: LabHosts) -> None:
    """While a host is down, exec into it and crashing it again are one-line LabErrors (14)
    that say how to bring it back; boot does."""
    pair.crash("lab2")
    try:
        for args in (["exec", "lab2", "--dir", pair.dir, "--", "true"],
                     ["crash", "lab2", "--dir", pair.dir]):  # fmt: skip
            res = heartline("lab", *args)
            assert res.returncode == 14, res.stderr
            assert "lab boot lab2" in one_line_error(res)
        with pytest.raises(LabError, match="not up"):
            pair.run("lab2", ["true"])
    finally:
        pair.boot("lab2")
    assert pair.run("lab2", ["hostname"]).stdout == "lab2\n"


def test_cut_makes_a_host_unreachable_and_heal_restores_it(pair: LabHosts) -> None:
    """`lab cut lab2`: its link is down, nothing reaches it (from here or from lab1), status
    says cut; `lab heal lab2`: reachable again, over ssh too."""
    address = pair.address("lab2")
    assert reachable(address)
    res = heartline("lab", "cut", "lab2", "--dir", pair.dir)
    try:
        assert res.returncode == 0 and "cut off" in res.stdout
        assert pair.status()["hosts"][1]["state"] == "cut"
        assert not reachable(address)
        probe = f"import socket; socket.create_connection(({address!r}, 22), timeout=0.5)"
        assert pair.run("lab1", [sys.executable, "-c", probe]).returncode != 0
        again = heartline("lab", "cut", "lab2", "--dir", pair.dir)
        assert again.returncode == 0 and "already" in again.stdout
    finally:
        res = heartline("lab", "heal", "lab2", "--dir", pair.dir)
    assert res.returncode == 0 and "healed" in res.stdout
    wait_until(lambda: reachable(address), 10, "lab2 to be reachable again")
    assert pair.status()["hosts"][1]["state"] == "up"
    res = pair.ssh("lab2", ["hostname"])
    assert (res.returncode, res.stdout) == (0, "lab2\n"), res.stderr


def test_a_boot_that_fails_says_why_and_leaves_the_host_down(pair: LabHosts) -> None:
    """A host whose sshd cannot start (a broken sshd_config) does not boot: one line with
    sshd's own complaint (exit 14), nothing of the host left running; fixed, it boots."""
    config = Path(pair.dir) / "hosts" / "lab2" / "sshd_config"
    good = config.read_text()
    pair.crash("lab2")
    config.write_text(good + "NoSuchOption yes\n")
    try:
        res = heartline("lab", "boot", "lab2", "--dir", pair.dir)
        assert res.returncode == 14, res.stderr
        err = one_line_error(res)
        assert "boot: lab2: sshd ended at start-up" in err and "bad configuration" in err
        assert pair.status()["hosts"][1]["state"] == "crashed"
        assert in_netns(pair.status()["hosts"][1]["netns"]) == []
    finally:
        config.write_text(good)
        if pair.status()["hosts"][1]["state"] != "up":
            pair.boot("lab2")
    assert pair.ssh("lab2", ["hostname"]).stdout == "lab2\n"
