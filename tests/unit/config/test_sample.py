"""The sample config of `heartline init`: valid as written, valid with every key switched on,
and complete (every key the loader knows is shown)."""

from __future__ import annotations

import re

import pytest

from heartline.config import parse_config
from heartline.config._loader import _PROGRAM_KEYS
from heartline.config._sample import SAMPLE
from heartline.errors import ConfigError

_KEY_LINE = re.compile(r"^# ([a-z_.]+) = (.+?)\s+#")


def _uncommented() -> str:
    """The sample with every commented-out `key = value` line made live."""
    out = []
    for line in SAMPLE.splitlines():
        m = _KEY_LINE.match(line)
        # user, group, cwd: machine-specific values; lease, failover_on: only with
        # singleton = true and a [cluster] (test_the_singleton_keys_load_in_a_cluster).
        if m and m.group(1) not in ("user", "group", "cwd", "lease", "failover_on"):
            out.append(f"{m.group(1)} = {m.group(2)}")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def test_the_sample_loads_as_written() -> None:
    """The file `heartline init` writes runs as is: one example program."""
    cfg = parse_config(SAMPLE)
    assert list(cfg.programs) == ["example"]


def test_the_sample_loads_with_every_key_switched_on() -> None:
    """Each default shown is a valid value, and equal to the real default."""
    live = parse_config(_uncommented()).programs["example"]
    plain = parse_config(SAMPLE).programs["example"]
    assert live.check is not None and live.check.url == "http://127.0.0.1:8080/health"
    assert live.watchdog == plain.watchdog and live.stop_timeout == plain.stop_timeout
    assert live.backoff == plain.backoff and live.crash_loop == plain.crash_loop
    assert live.log == plain.log and live.report_signal == plain.report_signal


def test_every_program_key_is_in_the_sample() -> None:
    """A key added to the loader without a line in the sample fails here."""
    shown = {m.group(1) for line in SAMPLE.splitlines() if (m := _KEY_LINE.match(line))}
    shown |= {"command"}
    tops = {key.split(".")[0] for key in shown}
    assert set(_PROGRAM_KEYS) <= tops, set(_PROGRAM_KEYS) - tops
    for sub in ("backoff", "crash_loop", "log", "check"):
        subs = {k.split(".")[1] for k in shown if k.startswith(sub + ".")}
        assert subs, sub
    assert {"run_dir", "log_dir", "adopt_timeout"} <= shown


def test_the_samples_cluster_block_loads_when_switched_on() -> None:
    """The commented [cluster] block, with its markers removed (and an etcds:// backend, which
    the client certificate is for), is a valid cluster section and shows every cluster key."""
    from heartline.config._cluster import _HOST_KEYS, _KEYS

    block = "\n".join(
        line[3:].split("  #")[0] for line in SAMPLE.splitlines() if line.startswith("#> ")
    )
    with pytest.raises(ConfigError, match="cert_file: a client certificate is for an etcd"):
        parse_config(block.replace('"~/.ssh/config"', '"ssh_config"'))
    block = block.replace('"heartline://127.0.0.1:7717"', '"etcds://10.0.0.5:2379"')
    spec = parse_config(block.replace('"~/.ssh/config"', '"ssh_config"')).cluster
    assert spec is not None and spec.name == "web1" and spec.groups["web"] == ("web1", "web2")
    assert spec.cert_file == "/etc/heartline/client.pem"
    assert spec.key_file == "/etc/heartline/client.key"
    assert spec.hosts["web1"].cpus == 8 and spec.hosts["web1"].labels == ("ssd",)
    shown = {line[3:].split(" = ")[0].split(".")[0] for line in SAMPLE.splitlines()
             if line.startswith("#> ") and " = " in line}  # fmt: skip
    assert shown == set(_KEYS)
    host_keys = {line[3:].split(" = ")[0].split(".")[2] for line in SAMPLE.splitlines()
                 if line.startswith("#> hosts.")}  # fmt: skip
    assert host_keys == set(_HOST_KEYS)


def test_the_singleton_keys_load_in_a_cluster() -> None:
    """The singleton lines of the sample, switched on with singleton = true in a cluster."""
    lines = [
        f"{m.group(1)} = {m.group(2)}"
        for line in SAMPLE.splitlines()
        if (m := _KEY_LINE.match(line)) and m.group(1) in ("lease", "failover_on")
    ]
    text = "[cluster]\n[programs.one]\ncommand = ['true']\nsingleton = true\n" + "\n".join(lines)
    one = parse_config(text).programs["one"]
    assert one.singleton and one.lease == 5.0 and one.failover_on == ()
