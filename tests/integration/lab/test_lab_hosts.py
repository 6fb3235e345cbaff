"""Three lab hosts, shared by this module's tests: each a host of its own (name, address,
processes, sshd, daemon), reachable over ssh, with no way out of the lab.

Nothing here changes a host; test_lab_faults.py crashes and cuts hosts on a lab of its own.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import sys
from pathlib import Path

import pytest
from tests.helpers import wait_until
from tests.integration.lab.lab_helpers import heartline, one_line_error

from heartline.cluster import Ssh
from heartline.errors import HostKeyRefused
from heartline.testing import LabHosts

HL = [sys.executable, "-m", "heartline"]


def test_each_host_has_its_own_name(lab: LabHosts) -> None:
    """`hostname` inside each host prints that host's name, through the library and the CLI;
    the machine's own name is unchanged."""
    mine = socket.gethostname()
    for name in lab.hosts:
        assert lab.run(name, ["hostname"]).stdout == f"{name}\n"
        res = heartline("lab", "exec", name, "--dir", lab.dir, "--", "hostname")
        assert (res.returncode, res.stdout) == (0, f"{name}\n"), res.stderr
    assert socket.gethostname() == mine


def test_exec_exits_with_the_commands_code(lab: LabHosts) -> None:
    """`heartline lab exec` exits with the command's own exit code."""
    res = heartline("lab", "exec", "lab2", "--dir", lab.dir, "--", "sh", "-c", "exit 7")
    assert res.returncode == 7


_PROCS = """
import os
for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            print(pid, f.read().replace(b"\\0", b" ").replace(b"\\n", b" ").decode().strip())
    except OSError:
        pass
"""


def test_proc_in_a_host_shows_only_its_own_processes(lab: LabHosts) -> None:
    """/proc inside a host lists its init (pid 1), its sshd, its daemon and what the daemon
    runs, and nothing of the machine or the other hosts."""
    seen = {}
    for name in lab.hosts:
        lines = lab.run(name, [sys.executable, "-c", _PROCS]).stdout.splitlines()
        procs = {int(pid): cmd for pid, _, cmd in (line.partition(" ") for line in lines)}
        seen[name] = procs
        assert "_labinit.py" in procs[1]
        assert any("sshd" in cmd for cmd in procs.values())
        assert any(f"hosts/{name}/heartline.toml" in cmd for cmd in procs.values())
        assert len(procs) < 12, procs
        others = [h for h in lab.hosts if h != name]
        for cmd in procs.values():
            assert "pytest" not in cmd
            assert "lockd" not in cmd
            assert not any(f"hosts/{other}/" in cmd for other in others), cmd
    # The pids start again from 1 in each host: they are namespaces of their own.
    assert all(1 in procs for procs in seen.values())


def test_ssh_reaches_each_host_with_the_labs_config(lab: LabHosts) -> None:
    """ssh -F DIR/ssh_config HOST (BatchMode, the lab's key and known_hosts, strict host key
    checking) logs in to each host."""
    for name in lab.hosts:
        res = lab.ssh(name, ["hostname"])
        assert (res.returncode, res.stdout) == (0, f"{name}\n"), res.stderr


def test_hosts_reach_each_other_and_the_keeper(lab: LabHosts) -> None:
    """Inside the lab, one host reaches another over ssh, and the keeper's lockd on the
    gateway address."""
    res = lab.run("lab1", ["ssh", "-F", lab.ssh_config, "lab3", "hostname"])
    assert (res.returncode, res.stdout) == (0, "lab3\n"), res.stderr
    gateway = lab.status()["gateway"]
    probe = f"import socket; socket.create_connection(({gateway!r}, 7717), timeout=5).close()"
    assert lab.run("lab2", [sys.executable, "-c", probe]).returncode == 0


def test_each_daemon_answers_status_inside_its_host(lab: LabHosts, programs_dir: Path) -> None:
    """`heartline status` inside a host (over ssh, and with lab exec without any config: its
    private /run/heartline) reaches that host's own daemon, which runs the programs that
    `lab up --config FILE` gave every host, in FILE's directory."""
    for name in lab.hosts:
        res = lab.ssh(name, [*HL, "status", "--json"])
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert [p["name"] for p in doc["programs"]] == ["ticker", "here"]
        assert all(p["state"] in ("starting", "running") for p in doc["programs"])
        seen = programs_dir / f"seen-{name}"
        wait_until(lambda seen=seen: seen.exists() and seen.read_text(), 10, f"{seen}")
        assert seen.read_text() == f"{programs_dir}\n"
        plain = lab.run(name, ["env", "-u", "HEARTLINE_CONFIG", *HL, "status", "--json"])
        assert plain.returncode == 0, plain.stderr
        pid = json.loads(plain.stdout)["daemon"]["pid"]
        cmd = lab.run(name, ["cat", f"/proc/{pid}/cmdline"]).stdout
        assert f"hosts/{name}/heartline.toml" in cmd  # its pid, as that host sees it


def test_no_route_leads_out_of_the_lab(lab: LabHosts) -> None:
    """A host has its address and its subnet's route only: no default route, no IPv6, an
    address outside the lab is unreachable; forwarding is off on the lab's bridge and the
    machine's ip_forward is what it was."""
    status = lab.status()
    net = ipaddress.ip_network(status["network"])
    assert net.subnet_of(ipaddress.ip_network("198.18.0.0/15"))
    for name in lab.hosts:
        routes = lab.run(name, ["ip", "-4", "route"]).stdout.splitlines()
        assert len(routes) == 1 and routes[0].startswith(f"{net} dev eth0"), routes
        assert lab.run(name, ["ip", "-6", "route"]).stdout.strip() == ""
        out = lab.run(name, ["ip", "route", "get", "192.0.2.1"])
        assert out.returncode != 0 and "unreachable" in out.stderr
    bridge = f"hl{status['id']}"
    assert Path(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding").read_text().strip() == "0"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == IP_FORWARD


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


def test_status_lists_hosts_addresses_states_and_pids(lab: LabHosts) -> None:
    """`lab status --json`: every host up with its address and pids; the table says so too."""
    res = heartline("lab", "status", "--json", "--dir", lab.dir)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["keeper"] == "up" and doc["phase"] == "up"
    assert [h["name"] for h in doc["hosts"]] == lab.hosts
    for h in doc["hosts"]:
        assert h["state"] == "up" and h["address"] == lab.address(h["name"])
        assert all(isinstance(h[k], int) for k in ("init_pid", "sshd_pid", "daemon_pid"))
    table = heartline("lab", "status", "--dir", lab.dir).stdout
    assert all(f"{h['name']}     {h['address']}" in table for h in doc["hosts"])


def test_an_unknown_host_key_is_refused(lab: LabHosts, tmp_path: Path) -> None:
    """With a known_hosts that lacks the host, the cluster's SSH layer refuses lab1's key:
    HostKeyRefused (exit 13), one line, and the command never ran."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = tmp_path / "ssh_config"
    config.write_text(Path(lab.ssh_config).read_text().replace(
        f"UserKnownHostsFile {lab.dir}/known_hosts", f"UserKnownHostsFile {empty}"))  # fmt: skip
    marker = tmp_path / "ran"
    with pytest.raises(HostKeyRefused) as e:
        Ssh(config=str(config), share=False).run("lab1", ["touch", str(marker)])
    assert e.value.exit_code == 13
    assert "\n" not in str(e.value) and "known_hosts" in str(e.value)
    assert not marker.exists()


def test_bad_input_gets_one_line_errors(lab: LabHosts, tmp_path: Path) -> None:
    """Every lab subcommand: an unknown host or a directory without a lab is LabNotFound
    (15), an impossible change a LabError (14), a bad N or a missing command a usage error
    (2); each one line."""
    nowhere = str(tmp_path / "none")
    for args in (["status"], ["down"], ["exec", "lab1", "--", "true"], ["crash", "lab1"],
                 ["boot", "lab1"], ["cut", "lab1"], ["heal", "lab1"]):  # fmt: skip
        res = heartline("lab", *args, "--dir", nowhere)
        assert res.returncode == 15, (args, res.stderr)
        assert "no lab in" in one_line_error(res)
    for sub in ("exec", "crash", "boot", "cut", "heal"):
        extra = ["--", "true"] if sub == "exec" else []
        res = heartline("lab", sub, "lab9", "--dir", lab.dir, *extra)
        assert res.returncode == 15, (sub, res.stderr)
        assert "no host 'lab9'" in one_line_error(res) and "lab1, lab2, lab3" in res.stderr
    for n in ("0", "65", "x", "-1"):
        res = heartline("lab", "up", n, "--dir", nowhere)
        assert res.returncode == 2, (n, res.stderr)
        one_line_error(res)
    res = heartline("lab", "exec", "lab1", "--dir", lab.dir)
    assert res.returncode == 2 and "give the command" in one_line_error(res)
    res = heartline("lab", "boot", "lab1", "--dir", lab.dir)
    assert res.returncode == 14 and "is up" in one_line_error(res)
    res = heartline("lab", "up", "2", "--dir", lab.dir)
    assert res.returncode == 14 and "already up" in one_line_error(res)
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep me")
    res = heartline("lab", "up", "1", "--dir", str(full))
    assert res.returncode == 14 and "not empty" in one_line_error(res)
    assert (full / "mine.txt").read_text() == "keep me"
    bad = tmp_path / "bad.toml"
    bad.write_text("[programs.x]\ncommand = 5\n")
    res = heartline("lab", "up", "1", "--dir", nowhere, "--config", str(bad))
    assert res.returncode == 2 and "bad.toml:2" in one_line_error(res)
    deep = tmp_path / ("d" * 90)
    res = heartline("lab", "up", "1", "--dir", str(deep))
    assert res.returncode == 14 and "shorter --dir" in one_line_error(res)
    assert not deep.exists()
    res = heartline("lab", "down", "--dir", lab.dir, "--", "x")
    assert res.returncode == 2 and "takes no command" in one_line_error(res)
    assert not Path(nowhere).exists()
    assert lab.status()["phase"] == "up"


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_the_keeper_listens_on_the_gateway_only(lab: LabHosts) -> None:
    """The lab's lockd listens on the bridge's gateway address, nowhere else, and asks for
    the lab's token (its file is private)."""
    import subprocess

    gateway = lab.status()["gateway"]
    out = subprocess.run(["ss", "-Hltn", "sport", "= :7717"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert f"{gateway}:7717" in out
    token = Path(lab.dir) / "token"
    assert token.stat().st_mode & 0o777 == 0o600
    res = heartline("locks", "--server", f"heartline://{gateway}:7717")
    assert res.returncode == 77, res.stderr
    res = heartline("locks", "--server", f"heartline://{gateway}:7717", "--token-file", str(token))
    assert res.returncode == 0, res.stderr


def test_the_lab_is_a_cluster_for_hosts_and_place(lab: LabHosts) -> None:
    """With the controller's config the lab writes, `heartline hosts` lists every lab host
    with a fresh report, and `place` runs a command on one of them over ssh with its exit
    code."""

    def all_up() -> bool:
        res = heartline("-c", lab.config, "hosts", "--json")
        hosts = json.loads(res.stdout)["hosts"] if res.returncode == 0 else []
        return sorted(h["name"] for h in hosts if h["state"] == "up") == lab.hosts

    wait_until(all_up, 15, "every lab host to report")
    res = heartline("-c", lab.config, "place", "--group", "lab", "--", "sh", "-c",
                    "hostname; exit 5")  # fmt: skip
    assert res.returncode == 5, res.stderr
    assert res.stdout.strip() in lab.hosts
