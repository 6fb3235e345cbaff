"""``[cluster]``: the backend URL, host groups, per-host labels and declared capacity.

Kept apart from the program keys in ``_loader``: it shares only the builder's error helpers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

from heartline._util import parse_duration, parse_size
from heartline.config._specs import DEFAULT_BACKEND, ClusterSpec, HostSpec
from heartline.errors import ConfigError

#: Host, group and label names: what a hostname may hold, plus '_' and '.'.
_HOST_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")
_LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=:-]{0,62}$")
_BACKEND = re.compile(r"^(heartlines?|etcds?)://\S+$")
_KEYS = [
    "backend",
    "token_file",
    "ca_file",
    "cert_file",
    "key_file",
    "name",
    "report_interval",
    "ssh_config",
    "ssh_options",
    "groups",
    "hosts",
]
_HOST_KEYS = ["address", "labels", "cpus", "mem"]


class Builder(Protocol):
    def error(self, key_path: tuple[str, ...], message: str) -> ConfigError: ...
    def check_keys(
        self, table: Mapping[str, Any], allowed: list[str], where: tuple[str, ...]
    ) -> None: ...
    def table(self, value: object, where: tuple[str, ...]) -> dict[str, Any]: ...
    def string(self, t: Mapping[str, Any], key: str, where: tuple[str, ...]) -> str | None: ...
    def resolve(self, p: str) -> str: ...


def build_cluster(b: Builder, raw: object) -> ClusterSpec:
    where = ("cluster",)
    t = b.table(raw, where)
    b.check_keys(t, _KEYS, where)
    backend = b.string(t, "backend", where) or DEFAULT_BACKEND
    if not _BACKEND.fullmatch(backend):
        raise b.error(
            (*where, "backend"),
            f"{backend!r} is not a backend URL: write heartline://HOST:PORT (lockd), "
            "heartlines://HOST:PORT (TLS) or etcd://HOST:PORT[,HOST:PORT...] (etcds:// "
            "with TLS)",
        )
    name = b.string(t, "name", where) or ""
    if name and not _HOST_NAME.fullmatch(name):
        raise b.error((*where, "name"), _bad_name(name, "host"))
    interval = ClusterSpec.report_interval
    if "report_interval" in t:
        try:
            interval = parse_duration(t["report_interval"])
        except ValueError as e:
            raise b.error((*where, "report_interval"), str(e)) from None
        if not 0.1 <= interval <= 300:
            raise b.error(
                (*where, "report_interval"), "must be from 100ms to 5m (the default is 2s)"
            )
    token_file = b.string(t, "token_file", where)
    ca_file = b.string(t, "ca_file", where)
    cert_file = b.string(t, "cert_file", where)
    key_file = b.string(t, "key_file", where)
    if (cert_file or key_file) and not backend.startswith("etcds://"):
        key = "cert_file" if cert_file else "key_file"
        raise b.error(
            (*where, key),
            "a client certificate needs TLS: write the backend as etcds://HOST:PORT"
            if backend.startswith("etcd://")
            else "a client certificate is for an etcd backend with TLS (etcds://HOST:PORT); "
            "lockd checks token_file instead",
        )
    if key_file and not cert_file:
        raise b.error((*where, "key_file"), "give cert_file too: the certificate of this key")
    ssh_config = b.string(t, "ssh_config", where)
    options = t.get("ssh_options", [])
    if not isinstance(options, list) or not all(
        isinstance(o, str) and re.fullmatch(r"[A-Za-z]+[ =]\S.*", o) for o in options
    ):
        raise b.error(
            (*where, "ssh_options"),
            'expected a list of ssh options such as ["ConnectTimeout=5"]',
        )
    hosts = _hosts(b, t.get("hosts", {}))
    groups = _groups(b, t.get("groups", {}))
    return ClusterSpec(
        backend=backend,
        token_file=b.resolve(token_file) if token_file else None,
        ca_file=b.resolve(ca_file) if ca_file else None,
        cert_file=b.resolve(cert_file) if cert_file else None,
        key_file=b.resolve(key_file) if key_file else None,
        name=name,
        report_interval=interval,
        ssh_config=b.resolve(ssh_config) if ssh_config else None,
        ssh_options=tuple(options),
        groups=groups,
        hosts=hosts,
    )


def _bad_name(name: str, what: str) -> str:
    return (
        f"{name!r} is not a {what} name: use letters, digits, '_', '.', '-' "
        "(at most 63, not starting with '.' or '-')"
    )


def _hosts(b: Builder, raw: object) -> Mapping[str, HostSpec]:
    where = ("cluster", "hosts")
    t = b.table(raw, where)
    out: dict[str, HostSpec] = {}
    for name, host_raw in t.items():
        here = (*where, name)
        if not _HOST_NAME.fullmatch(name):
            raise b.error(here, _bad_name(name, "host"))
        h = b.table(host_raw, here)
        b.check_keys(h, _HOST_KEYS, here)
        address = b.string(h, "address", here) or ""
        if address.startswith("-") or any(c.isspace() for c in address):
            raise b.error((*here, "address"), "expected a host name or address for ssh")
        labels = h.get("labels", [])
        if isinstance(labels, str):
            labels = [labels]
        if not isinstance(labels, list) or not all(
            isinstance(x, str) and _LABEL.fullmatch(x) for x in labels
        ):
            raise b.error(
                (*here, "labels"),
                'expected a list of labels such as ["ssd", "gpu"] (letters, digits, _.=:-)',
            )
        cpus = h.get("cpus")
        if cpus is not None and (
            isinstance(cpus, bool) or not isinstance(cpus, int | float) or not 0 < cpus <= 65536
        ):
            raise b.error((*here, "cpus"), "expected a number of CPUs above 0, such as 8")
        mem = None
        if "mem" in h:
            try:
                mem = parse_size(h["mem"])
            except ValueError as e:
                raise b.error((*here, "mem"), str(e)) from None
        out[name] = HostSpec(
            name=name,
            address=address,
            labels=tuple(labels),
            cpus=None if cpus is None else float(cpus),
            mem=mem,
        )
    return MappingProxyType(out)


def _groups(b: Builder, raw: object) -> Mapping[str, tuple[str, ...]]:
    where = ("cluster", "groups")
    t = b.table(raw, where)
    out: dict[str, tuple[str, ...]] = {}
    for name, members in t.items():
        here = (*where, name)
        if not _HOST_NAME.fullmatch(name):
            raise b.error(here, _bad_name(name, "group"))
        if not isinstance(members, list) or not all(
            isinstance(m, str) and _HOST_NAME.fullmatch(m) for m in members
        ):
            raise b.error(here, 'expected a list of host names such as ["web1", "web2"]')
        if len(set(members)) != len(members):
            raise b.error(here, "a host is listed twice")
        out[name] = tuple(members)
    return MappingProxyType(out)
