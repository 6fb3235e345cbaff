"""The etcd backend's key layout: pure helpers, no etcd."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heartline.lock._etcd_gateway import prefix_end
from heartline.lock._etcd_keys import etcd_ttl, lock_key, lock_name, lock_prefix

PREFIX = "/heartline/locks/"


def test_lock_key_is_prefix_quoted_name_and_lease_hex() -> None:
    """A request's key is the prefix, the name with every reserved character quoted (``/``
    included), a slash, and the lease id in hex."""
    assert lock_prefix(PREFIX, "db/migrate") == "/heartline/locks/db%2Fmigrate/"
    assert lock_key(PREFIX, "db/migrate", 0x1F) == "/heartline/locks/db%2Fmigrate/1f"
    assert lock_key(PREFIX, "a b%", 255) == "/heartline/locks/a%20b%25/ff"


@given(st.text(min_size=1, max_size=50), st.integers(min_value=1, max_value=2**63 - 1))
def test_lock_name_inverts_lock_key(name: str, lease_id: int) -> None:
    """Any name survives the trip through its key."""
    assert lock_name(PREFIX, lock_key(PREFIX, name, lease_id)) == name


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_no_lock_directory_contains_another(a: str, b: str) -> None:
    """One lock's key range never holds another lock's keys (``a`` vs ``a/b``, ``a`` vs
    ``ab``), so a range over one lock reads only its own queue."""
    if a != b:
        assert not lock_prefix(PREFIX, b).startswith(lock_prefix(PREFIX, a))


@pytest.mark.parametrize(
    "key",
    ["/other/x/1", "/heartline/locks/stray", "/heartline/locks/a/b/1", "/heartline/locks//1",
     "/heartline/locks/a/"],
)  # fmt: skip
def test_lock_name_ignores_keys_heartline_did_not_write(key: str) -> None:
    """Keys outside the prefix or not shaped NAME/LEASE are not locks."""
    assert lock_name(PREFIX, key) is None


def test_prefix_end_is_the_first_key_after_the_prefix() -> None:
    """etcd's range_end for a prefix: the last byte below 0xff incremented, trailing 0xff
    bytes dropped; all 0xff means every key (``\\0``)."""
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


@given(st.binary(min_size=1, max_size=10), st.binary(max_size=10))
def test_prefix_end_bounds_every_key_with_the_prefix(prefix: bytes, rest: bytes) -> None:
    """Every key that starts with the prefix sorts before its range_end."""
    end = prefix_end(prefix)
    assert end == b"\0" or prefix + rest < end


@pytest.mark.parametrize(
    ("ttl", "seconds"), [(0.2, 1), (1.0, 1), (1.01, 2), (2.5, 3), (10.0, 10), (3600.0, 3600)]
)
def test_etcd_ttl_rounds_up_to_whole_seconds(ttl: float, seconds: int) -> None:
    """etcd counts whole seconds; the lease is never shorter than the TTL asked for."""
    assert etcd_ttl(ttl) == seconds
