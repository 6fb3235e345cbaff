"""A lab's files without a lab: its state file (and why a tampered one is refused), its
addresses, and the configs it writes for ssh, sshd, the hosts' daemons and the controller."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from heartline.cluster._labfiles import (
    SLOTS,
    LabState,
    controller_config_text,
    host_config_text,
    known_hosts_text,
    load_state,
    programs_of,
    slot_prefix,
    ssh_config_text,
    sshd_config_text,
)
from heartline.config import parse_config
from heartline.errors import ConfigError, LabError, LabNotFound


def made(tmp_path: Path, n: int = 3, slot: int = 300) -> LabState:
    state = LabState(id="a1b2c3", dir=str(tmp_path.resolve()), made_dir=True, slot=slot)
    state.plan_hosts(n)
    return state


def test_every_slot_is_a_24_inside_the_lab_network() -> None:
    """The 512 slots are distinct /24s of 198.18.0.0/15, the benchmarking range."""
    lab_net = ipaddress.ip_network("198.18.0.0/15")
    nets = {ipaddress.ip_network(f"{slot_prefix(s)}.0/24") for s in range(SLOTS)}
    assert len(nets) == SLOTS and all(n.subnet_of(lab_net) for n in nets)


def test_names_and_addresses_follow_from_the_id_and_slot(tmp_path: Path) -> None:
    """Bridge, links and namespaces carry the lab's id (two labs never share one), names fit
    a Linux interface name (15 characters), hosts sit at .11 and up, the gateway at .1."""
    s = made(tmp_path, n=64)
    assert s.bridge == "hla1b2c3" and s.gateway == "198.19.44.1"
    assert s.network == "198.19.44.0/24" and s.backend == "heartline://198.19.44.1:7717"
    assert [h.address for h in s.hosts[:2]] == ["198.19.44.11", "198.19.44.12"]
    assert s.hosts[-1].address == "198.19.44.74"
    assert all(len(h.link) <= 15 and h.link.startswith("hla1b2c3-") for h in s.hosts)
    assert s.hosts[0].netns == "hla1b2c3-lab1"


def test_an_etcd_keeper_has_its_own_addresses_and_credentials(tmp_path: Path) -> None:
    """With an etcd keeper the backend is etcds:// on the gateway, the peer address is the
    lab's own on loopback, and every [cluster] names the lab's CA, client certificate and key
    (no token file); the configs load as the daemons and the controller read them."""
    s = made(tmp_path, n=2)
    s.backend_kind = "etcd"
    assert s.backend == "etcds://198.19.44.1:2379" and s.etcd_peer == "127.19.44.1"
    assert made(tmp_path, slot=3).etcd_peer == "127.18.3.1"
    for text in (controller_config_text(s), host_config_text(s, s.hosts[0], {})):
        cluster = parse_config(text, path=str(tmp_path / "heartline.toml")).cluster
        assert cluster is not None and cluster.backend == s.backend
        assert cluster.ca_file == f"{s.dir}/tls/ca.pem" and cluster.token_file is None
        assert cluster.cert_file == f"{s.dir}/tls/client.pem"
        assert cluster.key_file == f"{s.dir}/tls/client.key"


def test_the_state_file_reads_back_what_was_saved(tmp_path: Path) -> None:
    s = made(tmp_path)
    s.keeper_pid, s.keeper_start = 10, 20
    s.hosts[1].init_pid, s.hosts[1].init_start = 30, 40
    s.save()
    back = load_state(str(tmp_path))
    assert back == s and back.backend_kind == "lockd"
    assert (tmp_path / "lab.json").stat().st_mode & 0o777 == 0o600
    s.backend_kind = "etcd"
    s.save()
    assert load_state(str(tmp_path)).backend_kind == "etcd"
    # A state file written before labs had a choice of backend: a lockd lab.
    data = json.loads((tmp_path / "lab.json").read_text())
    del data["backend_kind"]
    (tmp_path / "lab.json").write_text(json.dumps(data))
    assert load_state(str(tmp_path)).backend_kind == "lockd"


def test_no_state_file_is_lab_not_found(tmp_path: Path) -> None:
    with pytest.raises(LabNotFound, match="no lab in") as e:
        load_state(str(tmp_path / "nowhere"))
    assert e.value.exit_code == 15 and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda d: d["hosts"][0].update(link="eth0"), "link 'eth0' is not the lab's"),
        (lambda d: d["hosts"][1].update(netns="other"), "netns 'other' is not the lab's"),
        (lambda d: d.update(id="../x"), "bad id"),
        (lambda d: d.update(dir="/elsewhere"), "not this directory"),
        (lambda d: d.update(slot=512), "bad slot"),
        (lambda d: d.update(keeper_pid=-1), "not a number"),
        (lambda d: d.update(keeper_pid=True), "not a number"),
        (lambda d: d.update(v=2), "format 2"),
        (lambda d: d.update(backend_kind="zookeeper"), "bad backend 'zookeeper'"),
        (lambda d: d.pop("hosts"), "hosts"),
    ],
)
def test_a_tampered_state_file_is_refused(tmp_path: Path, change, why: str) -> None:
    """A state file whose names are not the ones the lab's id gives (or is otherwise not a
    lab's) is a one-line LabError: `down` then touches nothing (it could name eth0)."""
    made(tmp_path).save()
    data = json.loads((tmp_path / "lab.json").read_text())
    change(data)
    (tmp_path / "lab.json").write_text(json.dumps(data))
    with pytest.raises(LabError, match="is not a lab's state file") as e:
        load_state(str(tmp_path))
    assert why in str(e.value) and "\n" not in str(e.value) and e.value.exit_code == 14


def test_a_torn_state_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "lab.json").write_text('{"v": 1, "id": ')
    with pytest.raises(LabError, match="not a lab's state file"):
        load_state(str(tmp_path))


def test_ssh_files_name_every_host_with_its_key(tmp_path: Path) -> None:
    """ssh_config: a Host entry per host with the lab's key, known_hosts and strict checking;
    known_hosts: each host's key under its name and its address."""
    s = made(tmp_path, n=2)
    config = ssh_config_text(s)
    for h in s.hosts:
        assert f"Host {h.name}\n    HostName {h.address}\n" in config
    assert config.count("StrictHostKeyChecking yes") == 2
    assert f"UserKnownHostsFile {tmp_path.resolve()}/known_hosts" in config
    keys = {"lab1": "ssh-ed25519 AAAA1 c", "lab2": "ssh-ed25519 AAAA2 c"}
    assert known_hosts_text(s, keys) == (
        f"lab1,{s.hosts[0].address} ssh-ed25519 AAAA1\nlab2,{s.hosts[1].address} ssh-ed25519 AAAA2\n"
    )
    sshd = sshd_config_text(s, s.hosts[0])
    assert "PasswordAuthentication no" in sshd and "hosts/lab1/ssh_host_ed25519_key" in sshd


def test_the_configs_load_with_the_programs_of_the_given_file(tmp_path: Path) -> None:
    """A host's daemon config has its own run and log directories, the lab's [cluster] with
    its name, and the [defaults] and [programs] of `--config FILE` (a relative cwd made
    absolute against FILE's directory); the controller's config has the hosts in group lab."""
    (tmp_path / "app").mkdir()
    programs = tmp_path / "programs.toml"
    programs.write_text(
        '[daemon]\nrun_dir = "/ignored"\n[defaults]\nstop_timeout = "2s"\n'
        '[programs."we.b"]\ncommand = ["/bin/echo", "a \\"b\\"\\u007f"]\ncwd = "app"\n'
        'env = { X = "1" }\n'
    )
    s = made(tmp_path, n=2)
    text = host_config_text(s, s.hosts[1], programs_of(str(programs)))
    config = parse_config(text, path=str(tmp_path / "hosts/lab2/heartline.toml"))
    assert config.daemon.run_dir == f"{s.dir}/hosts/lab2/run"
    assert config.cluster is not None and config.cluster.name == "lab2"
    assert config.cluster.backend == s.backend and config.cluster.groups["lab"] == ("lab1", "lab2")
    prog = config.programs["we.b"]
    assert prog.command == ("/bin/echo", 'a "b"\x7f') and prog.cwd == str(tmp_path / "app")
    assert prog.stop_timeout == 2.0 and dict(prog.env) == {"X": "1"}
    controller = parse_config(controller_config_text(s), path=str(tmp_path / "heartline.toml"))
    assert controller.cluster is not None and controller.cluster.name == ""
    assert controller.cluster.ssh_config == f"{s.dir}/ssh_config"
    assert sorted(controller.cluster.hosts) == ["lab1", "lab2"]


def test_a_bad_programs_file_is_its_own_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[programs.x]\ncommand = 5\n")
    with pytest.raises(ConfigError, match=r"bad\.toml:2"):
        programs_of(str(bad))


def test_root_logs_in_to_a_lab_host_with_sh_and_nobody_else_changes() -> None:
    from heartline.cluster._labinit import root_with_sh

    text = "root:x:0:0:root:/root:/bin/bash\nbob:x:1000:1000::/home/bob:/bin/bash\nbroken\n"
    assert root_with_sh(text) == (
        "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/bash\nbroken\n"
    )
