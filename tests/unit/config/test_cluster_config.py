"""`[cluster]`: what it accepts, and one-line errors naming file, line and key for the rest."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heartline.config import parse_config
from heartline.errors import ConfigError


def test_a_full_cluster_section() -> None:
    """Backend, groups, hosts with labels and capacity; paths relative to the file."""
    cfg = parse_config(
        """
[cluster]
backend = "etcd://10.0.0.1:2379,10.0.0.2:2379"
name = "web1"
report_interval = "500ms"
ssh_options = ["ConnectTimeout=5", "Port 2222"]
[cluster.groups]
web = ["web1", "web2"]
[cluster.hosts.web1]
address = "10.0.0.11"
labels = "ssd"
cpus = 2.5
mem = "1GiB"
""",
        path="/etc/heartline/heartline.toml",
    )
    c = cfg.cluster
    assert c is not None
    assert c.backend.startswith("etcd://") and c.report_interval == 0.5
    assert c.hosts["web1"].labels == ("ssd",) and c.hosts["web1"].mem == 1 << 30
    assert c.host("web2").ssh_destination == "web2" and c.groups_of("web2") == ("web",)
    assert parse_config("[programs.a]\ncommand = ['true']\n").cluster is None


def test_an_etcd_client_certificate() -> None:
    """cert_file and key_file, for an etcds:// backend, relative to the config's directory;
    a key without its certificate, or a certificate for plain etcd://, is one line naming
    the key."""
    text = '[cluster]\nbackend = "etcds://10.0.0.1:2379"\ncert_file = "c.pem"\nkey_file = "c.key"\n'
    c = parse_config(text, path="/etc/heartline/heartline.toml").cluster
    assert c is not None and c.cert_file == "/etc/heartline/c.pem"
    assert c.key_file == "/etc/heartline/c.key"
    assert c.credentials == {"token_file": None, "ca_file": None,
                             "cert_file": "/etc/heartline/c.pem",
                             "key_file": "/etc/heartline/c.key"}  # fmt: skip
    with pytest.raises(ConfigError, match=r"^c.toml:3: cluster.key_file: give cert_file too"):
        parse_config('[cluster]\nbackend = "etcds://h:1"\nkey_file = "k"\n', path="c.toml")
    with pytest.raises(
        ConfigError, match=r"^c.toml:3: cluster.cert_file: .* needs TLS: .* etcds://"
    ):
        parse_config('[cluster]\nbackend = "etcd://h:1"\ncert_file = "c"\n', path="c.toml")


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ('backend = "http://x"', "cluster.backend", "not a backend URL"),
        ('name = "-x"', "cluster.name", "not a host name"),
        ('report_interval = "1h"', "cluster.report_interval", "from 100ms to 5m"),
        ('report_interval = "soon"', "cluster.report_interval", "duration"),
        ("ssh_options = ['-oProxyCommand=x']", "cluster.ssh_options", "ssh options"),
        ("groups.web = 'web1'", "cluster.groups.web", "list of host names"),
        ("groups.web = ['a', 'a']", "cluster.groups.web", "listed twice"),
        ("hosts.a.cpus = 0", "cluster.hosts.a.cpus", "above 0"),
        ("hosts.a.cpus = true", "cluster.hosts.a.cpus", "above 0"),
        ("hosts.a.mem = 'lots'", "cluster.hosts.a.mem", ""),
        ("hosts.a.labels = ['a b']", "cluster.hosts.a.labels", "list of labels"),
        ("hosts.a.address = '-oProxyCommand=x'", "cluster.hosts.a.address", "host name"),
        ("hosts.a.colour = 'red'", "cluster.hosts.a.colour", "unknown key"),
        ("bakend = 'x'", "cluster.bakend", "did you mean 'backend'"),
        ("cert_file = 'c.pem'", "cluster.cert_file", "for an etcd backend with TLS (etcds://"),
        ("key_file = 'c.key'", "cluster.key_file", "for an etcd backend with TLS (etcds://"),
    ],
)
def test_each_bad_value_is_one_line_naming_its_key(text: str, where: str, what: str) -> None:
    """A bad value: ConfigError on one line with file:line: key: reason."""
    with pytest.raises(ConfigError) as e:
        parse_config(f"[cluster]\n{text}\n", path="c.toml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"c.toml:2: {where}: ") and what in msg


def _toml(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


KEYS = ["backend", "token_file", "ca_file", "cert_file", "key_file", "name", "report_interval", "ssh_config",
        "ssh_options", "groups", "hosts", "junk"]  # fmt: skip
leaf = st.one_of(
    st.text(max_size=12), st.integers(-5, 10**6), st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(), st.sampled_from(["heartline://h:1", "2s", "web1", "1GiB", "ssd"]),
)  # fmt: skip
value = st.recursive(
    leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                  st.dictionaries(st.sampled_from(["web1", "labels", "cpus",
                                                                   "mem", "address", "x"]),
                                                  inner, max_size=3)),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), value, max_size=5))
def test_any_cluster_table_loads_or_fails_in_one_line(table: dict[str, Any]) -> None:
    """Fuzz: whatever [cluster] holds, the loader returns a Config or one ConfigError line."""
    text = "[cluster]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in table.items())
    try:
        parse_config(text)
    except ConfigError as e:
        assert "\n" not in str(e)
