"""How the etcd backend lays locks out in etcd's key space, and reads them back.

A request for lock ``name`` is one key, ``PREFIX + quote(name) + "/" + LEASE_ID_HEX``, attached
to a lease of its own and holding ``{host, pid, label, since, limit}`` as JSON; the lock's queue
is every key under ``PREFIX + quote(name) + "/"``, in create-revision order.
"""

# No `from __future__ import annotations`: see _backend (NamedTuple fields and cold starts).

import contextlib
import json
import math
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

from heartline.lock._backend import Holder
from heartline.lock._etcd_gateway import KeyValue, Range


def lock_prefix(prefix: str, name: str) -> str:
    """The directory of lock ``name``'s queue: ``prefix + quote(name) + "/"``.

    Quoting turns ``/`` into ``%2F``, so no lock's directory contains another's.
    """
    return prefix + quote(name, safe="") + "/"


def lock_key(prefix: str, name: str, lease_id: int) -> str:
    """The key of one request for ``name``, named after the lease it is attached to."""
    return lock_prefix(prefix, name) + format(lease_id, "x")


def lock_name(prefix: str, key: str) -> str | None:
    """The lock a key under ``prefix`` belongs to, or None for a key heartline did not write."""
    if not key.startswith(prefix):
        return None
    quoted, sep, lease_hex = key[len(prefix) :].rpartition("/")
    if not sep or not quoted or "/" in quoted or not lease_hex:
        return None
    return unquote(quoted)


def etcd_ttl(ttl: float) -> int:
    """etcd leases count whole seconds: round up, so etcd never drops us before we think."""
    return max(1, math.ceil(ttl))


class Kv(NamedTuple):
    """One request in a lock's queue, as etcd returned it."""

    key: str
    create_revision: int
    lease: int
    value: dict[str, Any]

    @classmethod
    def parse(cls, kv: KeyValue) -> "Kv":
        value: Any = {}
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            value = json.loads(kv.value)
        return cls(
            key=kv.key.decode("utf-8", "replace"),
            create_revision=kv.create_revision,
            lease=kv.lease,
            value=value if isinstance(value, dict) else {},
        )

    @property
    def limit(self) -> int | None:
        limit = self.value.get("limit")
        return limit if isinstance(limit, int) and not isinstance(limit, bool) else None

    def holder(self, token: int) -> Holder:
        v = self.value
        pid, since = v.get("pid"), v.get("since")
        return Holder(
            host=str(v.get("host", "?")),
            pid=pid if isinstance(pid, int) else 0,
            since=float(since) if isinstance(since, int | float) else 0.0,
            token=token,
            label=str(v.get("label", "")),
        )

    def who(self) -> str:
        h = self.holder(0)
        label = f" ({h.label})" if h.label else ""
        return f"{h.host} pid {h.pid}{label}"


def sorted_kvs(answer: Range) -> list[Kv]:
    return sorted((Kv.parse(kv) for kv in answer.kvs), key=lambda k: k.create_revision)


__all__ = ["Kv", "etcd_ttl", "lock_key", "lock_name", "lock_prefix", "sorted_kvs"]
