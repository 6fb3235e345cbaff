"""A real lockd over TCP fuzzed with hypothesis: bad frames cost one connection and one error
line, never the server; random valid traffic from several clients never breaks its state."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.helpers import wait_until
from tests.integration.lock.lockd_helpers import HELLO, Lockd, Raw

from heartline import Lock
from heartline.lock import _protocol as proto

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NAMES = ("fa", "fb", "fc")


@pytest.fixture(scope="module")
def lockd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lockd]:
    """One real lockd for the module, killed (its whole process group) afterwards."""
    server = Lockd(tmp_path_factory.mktemp("lockd-fuzz") / "data")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def assert_refused(client: Raw) -> None:
    """The server answered exactly one protocol error line, then closed the connection."""
    lines = client.read_all_until_eof()
    assert len(lines) == 1, lines
    assert lines[0].get("code") == "protocol" and isinstance(lines[0].get("error"), str), lines
    assert set(lines[0]) == {"error", "code"}


def assert_server_healthy(lockd: Lockd) -> None:
    """lockd still serves: a normal client locks and unlocks, and ``locks`` is empty."""
    assert lockd.alive(), lockd.stderr()
    lock = Lock("health", url=lockd.url, ttl=5, wait=5)
    try:
        with lock:
            assert lock.token > 0
            names = [info.name for info in lock.backend.locks()]
            assert "health" in names
        observer = Raw(lockd.port)
        try:
            wait_until(lambda: observer.call({"op": "locks"})["locks"] == [], 5, "no lock held")
        finally:
            observer.close()
    finally:
        lock.close()


# --- (a) bad input: one error line, connection closed, server fine ----------------------------

BAD = {
    "not json": (True, b"hello there\n"),
    "empty line": (True, b"\n"),
    "json array": (True, b"[1, 2]\n"),
    "invalid utf-8": (True, b'{"op": "\xff"}\n'),
    "unknown op": (True, b'{"op": "steal", "id": 1}\n'),
    "wrong type id": (True, b'{"op": "ping", "id": "1"}\n'),
    "bool id": (True, b'{"op": "ping", "id": true}\n'),
    "bool limit": (True, b'{"op": "acquire", "id": 1, "name": "x", "limit": true}\n'),
    "nan wait": (True, b'{"op": "acquire", "id": 1, "name": "x", "limit": 1, "wait": NaN}\n'),
    "inf wait": (True, b'{"op": "acquire", "id": 1, "name": "x", "limit": 1, "wait": 1e999}\n'),
    "empty name": (True, b'{"op": "acquire", "id": 1, "name": "", "limit": 1}\n'),
    "unprintable name": (True, b'{"op": "break", "id": 1, "name": "a\\u0007"}\n'),
    "long name": (True, b'{"op": "break", "id": 1, "name": "' + b"n" * 257 + b'"}\n'),
    "second hello": (True, json.dumps(HELLO).encode() + b"\n"),
    "ping before hello": (False, b'{"op": "ping", "id": 1}\n'),
    "acquire before hello": (False, b'{"op":"acquire","id":1,"name":"x","limit":1}\n'),
    "bad hello ttl": (False, b'{"op": "hello", "v": 1, "ttl": 0}\n'),
    "hello without ttl": (False, b'{"op": "hello", "v": 1}\n'),
    "oversized, no newline": (True, b"x" * (proto.MAX_FRAME + 1)),
    "oversized before hello": (False, b"{" * (proto.MAX_FRAME + 1)),
    "oversized line": (True, b'{"op":"ping","id":1,"p":"' + b"x" * proto.MAX_FRAME + b'"}\n'),
    "nested": (True, b"[" * 5000 + b"]" * 5000 + b"\n"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_frame_gets_one_protocol_error_and_close(lockd: Lockd, case: str) -> None:
    """Each kind of bad frame (before or after hello) gets one ``{"error", "code":
    "protocol"}`` line, the connection is closed, and lockd keeps serving others."""
    after_hello, data = BAD[case]
    bystander = Raw(lockd.port)
    held = bystander.call({"op": "acquire", "name": "bystander", "limit": 1, "wait": 0})
    assert "token" in held
    client = Raw(lockd.port, hello=after_hello)
    try:
        client.sendraw(data)
        assert_refused(client)
    finally:
        client.close()
    # The bystander's session and grant are untouched.
    locks = bystander.call({"op": "locks"})["locks"]
    assert [(d["name"], [h["token"] for h in d["holders"]]) for d in locks] == [
        ("bystander", [held["token"]])
    ]
    assert bystander.call({"op": "release", "name": "bystander", "token": held["token"]}) == {
        "id": 3, "ok": True
    }  # fmt: skip
    bystander.close()
    assert_server_healthy(lockd)


@pytest.mark.parametrize("hello", [True, False])
def test_integer_too_big_for_a_float_gets_a_protocol_error(lockd: Lockd, hello: bool) -> None:
    """``"wait": 1e400`` written as 401 digits (or such a hello ttl) is answered with one
    protocol error line like any other out-of-range value, then the connection is closed."""
    client = Raw(lockd.port, hello=hello)
    try:
        if hello:
            client.sendraw(b'{"op":"acquire","id":1,"name":"x","limit":1,"wait":1'
                           + b"0" * 400 + b"}\n")  # fmt: skip
        else:
            client.sendraw(b'{"op":"hello","v":1,"ttl":1' + b"0" * 400 + b"}\n")
        try:
            assert_refused(client)
        finally:
            assert_server_healthy(lockd)
    finally:
        client.close()


@FUZZ
@given(garbage=st.binary(min_size=0, max_size=2000), after_hello=st.booleans())
def test_random_garbage_gets_one_protocol_error(
    lockd: Lockd, garbage: bytes, after_hello: bool
) -> None:
    """Random bytes ending in a newline (that are not a valid frame for this point of the
    conversation) get one protocol error line and a closed connection; lockd stays up."""
    first = garbage.split(b"\n", 1)[0]
    try:
        msg = proto.decode(first)
    except proto.ProtocolViolation:
        msg = None
    if msg is not None and (msg["op"] == "hello") != after_hello:
        return  # a valid frame at this point: not garbage
    client = Raw(lockd.port, hello=after_hello)
    try:
        client.sendraw(garbage + b"\n")
        assert_refused(client)
    finally:
        client.close()
    assert lockd.alive(), lockd.stderr()


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
frame_fields = st.dictionaries(
    st.sampled_from(
        ["id", "name", "limit", "wait", "token", "v", "ttl", "key", "value", "prefix", "watch", "x"]
    ),
    json_scalars | st.lists(json_scalars, max_size=2),
    max_size=5,
)


@FUZZ
@given(
    op=st.sampled_from(
        [
            "hello",
            "acquire",
            "release",
            "ping",
            "locks",
            "break",
            "put",
            "delete",
            "entries",
            "watch",
            "unwatch",
            "nope",
            7,
        ]
    ),
    fields=frame_fields,
)
def test_random_wrongly_typed_frames_after_hello(
    lockd: Lockd, op: Any, fields: dict[str, Any]
) -> None:
    """After hello, random frames with random field types either are valid (and answered
    with their id) or get one protocol error and a close; ``locks`` still answers."""
    frame = dict(fields, op=op)
    line = json.dumps(frame).encode()
    try:
        valid = proto.decode(line)
    except proto.ProtocolViolation:
        valid = None
    client = Raw(lockd.port)
    try:
        client.sendraw(line + b"\n")
        if valid is None or valid["op"] == "hello":
            assert_refused(client)
        elif valid["op"] == "acquire" and valid["wait"] != 0:
            pass  # may wait; the close below gives up its place
        else:
            answer = client.read(5.0)
            assert answer is not None and answer.get("id") == valid["id"], answer
    finally:
        client.close()
    observer = Raw(lockd.port)
    try:
        wait_until(lambda: observer.call({"op": "locks"})["locks"] == [], 5, "nothing held")
        # An entry the closed connection wrote went with its session.
        assert observer.call({"op": "entries", "prefix": ""})["entries"] == []
    finally:
        observer.close()


# --- (b) random valid traffic from several clients ---------------------------------------------

steps = st.lists(
    st.tuples(
        st.integers(0, 2),  # client
        st.sampled_from(["acquire", "acquire", "acquire", "release", "release", "cancel", "ping",
                         "locks", "break"]),
        st.sampled_from(NAMES),
        st.integers(1, 2),  # limit
        st.sampled_from([None, 0, 0, 0.02, 0.2]),  # wait
        st.integers(0, 1000),  # a random pick
    ),
    min_size=1,
    max_size=40,
)  # fmt: skip


class Client:
    def __init__(self, port: int) -> None:
        self.raw = Raw(port)
        self.ids = itertools.count(1)
        self.held: dict[int, str] = {}  # token -> name
        self.tokens: dict[str, list[int]] = {}  # name -> tokens granted, in arrival order

    def absorb(self, messages: list[dict[str, Any]], pending: dict[int, str]) -> None:
        for msg in messages:
            assert "error" not in msg or msg.get("code") == "limit", msg
            if "lost" in msg:
                self.held.pop(msg["token"], None)
            elif "token" in msg and "id" in msg:
                name = pending.pop(msg["id"], None)
                if name is not None:
                    self.held[msg["token"]] = name
                    self.tokens.setdefault(name, []).append(msg["token"])


def check_snapshot(locks: list[dict[str, Any]]) -> None:
    """What ``locks`` shows must be a consistent state."""
    names = [d["name"] for d in locks]
    assert names == sorted(set(names))
    for d in locks:
        assert d["holders"] or d["waiters"], d
        assert len(d["holders"]) <= d["limit"], d
        if d["waiters"]:
            assert len(d["holders"]) == d["limit"], f"someone waits for a free place: {d}"
        tokens = [h["token"] for h in d["holders"]]
        assert tokens == sorted(set(tokens)) and all(t > 0 for t in tokens), d


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=steps, n_clients=st.integers(2, 3))
def test_random_valid_traffic_never_breaks_state(
    lockd: Lockd, program: list[tuple[Any, ...]], n_clients: int
) -> None:
    """Random acquires (limits 1-2, waits none/0/short), releases (own, bogus and give-up),
    pings, locks and breaks from 2-3 raw clients: every ``locks`` answer is consistent, each
    client sees strictly increasing tokens per lock, no token is granted twice, and once all
    clients disconnect nothing is held or waited for."""
    clients = [Client(lockd.port) for _ in range(n_clients)]
    pending: list[dict[int, str]] = [{} for _ in clients]
    try:
        for who, op, name, limit, wait, pick in program:
            c = clients[who % n_clients]
            p = pending[who % n_clients]
            rid = next(c.ids)
            if op == "acquire":
                c.raw.send({"op": "acquire", "id": rid, "name": name, "limit": limit,
                            "wait": wait})  # fmt: skip
                p[rid] = name
                if wait == 0:
                    c.absorb(_until(c.raw, rid), p)
            elif op == "release":
                if c.held and pick % 4:
                    token = sorted(c.held)[pick % len(c.held)]
                    target = c.held.pop(token)
                else:
                    token = pick + 1  # almost surely nobody's (tokens are epoch << 32 | n)
                    target = name
                c.raw.send({"op": "release", "id": rid, "name": target, "token": token})
                c.absorb(_until(c.raw, rid), p)
            elif op == "cancel":
                c.raw.send({"op": "release", "id": rid, "name": name, "token": 0})
                msgs = _until(c.raw, rid)
                for m in msgs:
                    if m.get("timeout"):
                        p.pop(m["id"], None)
                c.absorb(msgs, p)
            elif op in ("ping", "break"):
                c.raw.send({"op": op, "id": rid, "name": name})
                c.absorb(_until(c.raw, rid), p)
            else:
                c.raw.send({"op": "locks", "id": rid})
                msgs = _until(c.raw, rid)
                c.absorb(msgs, p)
                check_snapshot(msgs[-1]["locks"])
            for other, op_pending in zip(clients, pending, strict=True):
                other.absorb(other.raw.drain(), op_pending)
    finally:
        for c in clients:
            c.raw.close()
    all_tokens: list[int] = []
    for c in clients:
        for name, tokens in c.tokens.items():
            assert tokens == sorted(set(tokens)), f"tokens of {name} not increasing: {tokens}"
            all_tokens.extend(tokens)
    assert len(all_tokens) == len(set(all_tokens)), "a token was granted twice"
    observer = Raw(lockd.port)
    try:
        wait_until(
            lambda: observer.call({"op": "locks"})["locks"] == [],
            5,
            "every lock freed after all clients left",
        )
    finally:
        observer.close()
    assert lockd.alive(), lockd.stderr()


def _until(raw: Raw, rid: int) -> list[dict[str, Any]]:
    """Messages up to and including the answer to ``rid``."""
    before = len(raw.seen)
    raw.wait_id(rid)
    return raw.seen[before:]


def test_shuffled_clients_leave_nothing_behind(lockd: Lockd) -> None:
    """Many clients queue on one semaphore then leave in random order (some while waiting):
    each departure promotes the next waiter in order, and at the end ``locks`` is empty."""
    rng = random.Random(7)
    clients = [Raw(lockd.port) for _ in range(8)]
    try:
        for c in clients:
            c.send({"op": "acquire", "id": 1, "name": "shuffle", "limit": 2, "wait": None})
        observer = Raw(lockd.port)
        wait_until(
            lambda: any(d["name"] == "shuffle" and len(d["waiters"]) == 6
                        for d in observer.call({"op": "locks"})["locks"]),
            5, "six waiters",
        )  # fmt: skip
        order = list(range(8))
        rng.shuffle(order)
        for i in order:
            clients[i].close()
            check_snapshot(observer.call({"op": "locks"})["locks"])
        wait_until(lambda: observer.call({"op": "locks"})["locks"] == [], 5, "empty")
        observer.close()
    finally:
        for c in clients:
            c.close()
