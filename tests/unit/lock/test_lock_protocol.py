"""lockd's wire protocol and the lock option checks: ``decode``/``encode`` fuzzed, and the
one-line usage errors of ``parse_listen``, ``read_tokens``, ``parse_url`` and ``check_*``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heartline.errors import UnsafeTokenFile, UsageError
from heartline.lock import _protocol as proto
from heartline.lock import check_limit, check_name, check_ttl, parse_url
from heartline.lock._lock import open_backend, read_token_file
from heartline.lockd import parse_listen, read_tokens

ProtocolViolation = proto.ProtocolViolation

HELLO = {"op": "hello", "v": 1, "ttl": 5, "host": "t", "pid": 1}
FRAMES: dict[str, dict[str, Any]] = {
    "hello": HELLO,
    "acquire": {"op": "acquire", "id": 1, "name": "x", "limit": 1, "wait": None},
    "release": {"op": "release", "id": 2, "name": "x", "token": 17},
    "ping": {"op": "ping", "id": 3},
    "locks": {"op": "locks", "id": 4},
    "break": {"op": "break", "id": 5, "name": "x"},
    "put": {"op": "put", "id": 6, "key": "k", "value": "v"},
    "delete": {"op": "delete", "id": 7, "key": "k"},
    "entries": {"op": "entries", "id": 8, "prefix": "k"},
    "watch": {"op": "watch", "id": 9, "prefix": ""},
    "unwatch": {"op": "unwatch", "id": 10, "watch": 9},
}


def enc(msg: Any) -> bytes:
    return json.dumps(msg).encode()


def decode_or_violation(line: bytes) -> dict[str, Any] | None:
    try:
        return proto.decode(line)
    except ProtocolViolation:
        return None


# --- decode never raises anything but ProtocolViolation ---------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
field_names = st.sampled_from(
    ["op", "id", "v", "ttl", "host", "pid", "label", "auth", "session", "name", "limit", "wait",
     "token", "key", "value", "prefix", "watch"]
)  # fmt: skip
ops = st.sampled_from(["hello", "acquire", "release", "ping", "locks", "break", "put", "delete",
                       "entries", "watch", "unwatch", "nope", ""])  # fmt: skip


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_decode_of_arbitrary_bytes_raises_only_protocol_violation(data: bytes) -> None:
    """Arbitrary bytes either decode to a frame (a dict with an ``op``) or raise
    ProtocolViolation; never another exception."""
    out = decode_or_violation(data)
    assert out is None or (isinstance(out, dict) and "op" in out)


@settings(max_examples=600)
@given(st.dictionaries(field_names | st.text(max_size=5), json_values, max_size=8), ops)
def test_decode_of_arbitrary_json_objects_raises_only_protocol_violation(
    msg: dict[str, Any], op: str
) -> None:
    """Arbitrary JSON objects (with a known op or not, fields of any type, NaN and infinities
    included) decode or raise ProtocolViolation; never another exception."""
    msg.setdefault("op", op)
    line = json.dumps(msg, allow_nan=True).encode()
    out = decode_or_violation(line)
    if out is not None:
        assert out["op"] in FRAMES


@pytest.mark.parametrize("field", ["ttl", "wait"])
def test_decode_of_integer_too_big_for_a_float_is_a_protocol_violation(field: str) -> None:
    """A float field given as an integer beyond float range (1e400 written as digits) is a
    ProtocolViolation, like any other out-of-range value."""
    base = dict(HELLO) if field == "ttl" else dict(FRAMES["acquire"])
    line = enc(base).replace(b"}", b', "' + field.encode() + b'": 1' + b"0" * 400 + b"}")
    with pytest.raises(ProtocolViolation):
        proto.decode(line)


@settings(max_examples=200)
@given(st.integers(0, 600).map(lambda n: "[" * n + "]" * n))
def test_deeply_nested_json_is_a_protocol_violation(text: str) -> None:
    """Nesting, however deep (within a frame), gives ProtocolViolation, not RecursionError."""
    with pytest.raises(ProtocolViolation):
        proto.decode(text.encode())


def test_deep_nesting_beyond_the_recursion_limit_is_a_protocol_violation() -> None:
    """A frame of 30000 nested arrays (under MAX_FRAME) is refused as not JSON."""
    with pytest.raises(ProtocolViolation, match="not JSON"):
        proto.decode(b"[" * 30000 + b"]" * 30000)


# --- valid frames round-trip ------------------------------------------------------------------

names = st.text(
    st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")),
    min_size=1,
    max_size=64,
).filter(lambda s: s.isprintable() and len(s.encode()) <= 256)
short_text = st.text(max_size=40).filter(lambda s: len(s.encode("utf-8", "surrogatepass")) <= 256)
ids = st.integers(0, 2**53 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)

valid_frames = st.one_of(
    st.fixed_dictionaries(
        {
            "op": st.just("hello"),
            "v": st.just(1),
            "ttl": st.floats(0.05, 86400) | st.integers(1, 86400),
            "host": short_text.filter(str.isprintable),
            "pid": st.integers(0, 1 << 31),
            "label": short_text.filter(str.isprintable),
            "auth": st.text(max_size=64),
            "session": st.text(max_size=64).filter(lambda s: len(s.encode()) <= 64),
        }
    ),
    st.fixed_dictionaries(
        {
            "op": st.just("acquire"),
            "id": ids,
            "name": names,
            "limit": st.integers(1, 1_000_000),
            "wait": st.none() | st.floats(0, 1e9) | st.integers(0, 10**9),
        }
    ),
    st.fixed_dictionaries(
        {"op": st.just("release"), "id": ids, "name": names, "token": st.integers(0, 2**63 - 1)}
    ),
    st.fixed_dictionaries({"op": st.sampled_from(["ping", "locks"]), "id": ids}),
    st.fixed_dictionaries({"op": st.just("break"), "id": ids, "name": names}),
    st.fixed_dictionaries(
        {
            "op": st.just("put"),
            "id": ids,
            "key": names,
            "value": st.text(max_size=200),
            "keep": st.booleans(),
        }
    ),
    st.fixed_dictionaries({"op": st.just("delete"), "id": ids, "key": names}),
    st.fixed_dictionaries(
        {"op": st.sampled_from(["entries", "watch"]), "id": ids, "prefix": names | st.just("")}
    ),
    st.fixed_dictionaries({"op": st.just("unwatch"), "id": ids, "watch": ids}),
)


@settings(max_examples=400)
@given(valid_frames)
def test_valid_frames_round_trip(msg: dict[str, Any]) -> None:
    """Every valid frame survives encode() then decode(): the same fields and values
    (numbers compared as numbers), one line ending in a newline."""
    line = proto.encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    out = proto.decode(line[:-1])
    assert out == msg
    if msg["op"] == "hello":
        assert isinstance(out["ttl"], float)
    if msg["op"] == "acquire" and msg["wait"] is not None:
        assert isinstance(out["wait"], float)


def test_hello_defaults_for_missing_optional_fields() -> None:
    """A minimal hello gets empty host and label, pid 0 and no auth or session."""
    out = proto.decode(enc({"op": "hello", "v": 1, "ttl": 2}))
    assert out == {"op": "hello", "v": 1, "ttl": 2.0, "host": "", "pid": 0, "label": "",
                   "auth": None, "session": None}  # fmt: skip


# --- field checks -----------------------------------------------------------------------------

BAD_FIELDS = [
    # (frame, field, bad value)
    ("acquire", "id", True),
    ("acquire", "id", 1.0),
    ("acquire", "id", -1),
    ("acquire", "id", 2**53),
    ("acquire", "id", "1"),
    ("acquire", "id", None),
    ("acquire", "limit", True),
    ("acquire", "limit", 0),
    ("acquire", "limit", 1_000_001),
    ("acquire", "limit", 2.0),
    ("acquire", "wait", True),
    ("acquire", "wait", -0.5),
    ("acquire", "wait", 1e9 + 1),
    ("acquire", "wait", float("nan")),
    ("acquire", "wait", float("inf")),
    ("acquire", "wait", "1"),
    ("acquire", "name", ""),
    ("acquire", "name", "a\nb"),
    ("acquire", "name", "\x00"),
    ("acquire", "name", "\u200b"),
    ("acquire", "name", "\ud800"),
    ("acquire", "name", "x" * 257),
    ("acquire", "name", "é" * 129),
    ("acquire", "name", 7),
    ("acquire", "name", None),
    ("release", "token", True),
    ("release", "token", -1),
    ("release", "token", 2**63),
    ("release", "token", 1.5),
    ("release", "name", ""),
    ("break", "name", "tab\there"),
    ("ping", "id", False),
    ("locks", "id", [1]),
    ("hello", "ttl", True),
    ("hello", "ttl", float("nan")),
    ("hello", "ttl", float("inf")),
    ("hello", "ttl", float("-inf")),
    ("hello", "ttl", 0.01),
    ("hello", "ttl", 86401),
    ("hello", "ttl", "5"),
    ("hello", "ttl", None),
    ("hello", "v", True),
    ("hello", "v", -1),
    ("hello", "v", 1.0),
    ("hello", "pid", True),
    ("hello", "pid", -1),
    ("hello", "pid", 2**31 + 1),
    ("hello", "pid", None),
    ("hello", "host", 5),
    ("hello", "host", "h" * 257),
    ("hello", "label", ["x"]),
    ("hello", "auth", "a" * 4097),
    ("hello", "auth", 123),
    ("hello", "session", "s" * 65),
    ("hello", "session", False),
    ("put", "key", ""),
    ("put", "key", "a\nb"),
    ("put", "key", "k" * 257),
    ("put", "key", 5),
    ("put", "value", None),
    ("put", "value", 5),
    ("put", "value", "v" * (proto.MAX_VALUE + 1)),
    ("put", "keep", 1),
    ("put", "keep", "yes"),
    ("delete", "key", ""),
    ("entries", "prefix", None),
    ("entries", "prefix", "\x07"),
    ("watch", "prefix", "p" * 257),
    ("unwatch", "watch", -1),
    ("unwatch", "watch", "9"),
]


@pytest.mark.parametrize(("frame", "key", "value"), BAD_FIELDS)
def test_each_field_is_checked_for_type_and_range(frame: str, key: str, value: Any) -> None:
    """A field of the wrong type (bool is not a number) or out of range (NaN and infinities
    included; names empty, unprintable or over 256 bytes) is a ProtocolViolation naming the
    field."""
    msg = dict(FRAMES[frame], **{key: value})
    line = json.dumps(msg, allow_nan=True).encode()
    with pytest.raises(ProtocolViolation, match=key):
        proto.decode(line)


@pytest.mark.parametrize(("frame", "key"), [(f, k) for f, m in FRAMES.items() for k in m
                                            if k != "op" and (f != "hello" or k in ("v", "ttl"))
                                            and not (f == "acquire" and k == "wait")])  # fmt: skip
def test_required_fields_are_required(frame: str, key: str) -> None:
    """Leaving out a required field is a ProtocolViolation saying it is missing."""
    msg = dict(FRAMES[frame])
    del msg[key]
    with pytest.raises(ProtocolViolation, match=f"{key}.*missing"):
        proto.decode(enc(msg))


@pytest.mark.parametrize(
    "line",
    [b"", b"   ", b"nope", b"[]", b"1", b'"op"', b"null", b'{"op": "hello"', b"\xff\xfe{}",
     b'{"op": "acquire"}\x00', b'{"no_op": 1}', b'{"op": null}', b'{"op": ["hello"]}',
     b'{"op": "HELLO", "v": 1, "ttl": 5}', b'{"op": "lock", "id": 1}'],
)  # fmt: skip
def test_non_frames_are_violations(line: bytes) -> None:
    """Empty lines, non-JSON, JSON that is not an object, invalid UTF-8 and unknown ops are
    each a ProtocolViolation."""
    with pytest.raises(ProtocolViolation):
        proto.decode(line)


def test_frames_longer_than_max_frame_are_refused() -> None:
    """A frame of MAX_FRAME bytes is read; one byte more is refused before parsing."""
    pad = proto.MAX_FRAME - len(enc(dict(FRAMES["ping"], pad="")))
    ok = enc(dict(FRAMES["ping"], pad="x" * pad))
    assert len(ok) == proto.MAX_FRAME
    assert proto.decode(ok)["op"] == "ping"
    too_long = enc(dict(FRAMES["ping"], pad="x" * (pad + 1)))
    with pytest.raises(ProtocolViolation, match="longer than"):
        proto.decode(too_long)


def test_names_of_exactly_256_bytes_are_accepted() -> None:
    """The name limit is in bytes: 256 ASCII or 128 two-byte characters pass."""
    for name in ("n" * 256, "é" * 128):
        assert proto.decode(enc(dict(FRAMES["acquire"], name=name)))["name"] == name


def test_encode_is_one_ascii_line() -> None:
    """encode() writes compact ASCII JSON (non-ASCII escaped), ended by one newline."""
    line = proto.encode({"error": "é\n", "code": "protocol"})
    assert line == b'{"error":"\\u00e9\\n","code":"protocol"}\n'
    assert line.isascii()


# --- parse_listen and read_tokens -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:7717", ("127.0.0.1", 7717)), ("[::1]:0", ("::1", 0)),
     ("localhost:65535", ("localhost", 65535)), ("0.0.0.0:1", ("0.0.0.0", 1))],
)  # fmt: skip
def test_parse_listen_accepts_host_port(text: str, expected: tuple[str, int]) -> None:
    """HOST:PORT and [IPv6]:PORT are split into host and port."""
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    "text", ["7717", ":7717", "host:", "host:x", "host:-1", "host:65536", "", "[]:1", "h:1.5"]
)
def test_parse_listen_refuses_bad_input_in_one_line(text: str) -> None:
    """Bad --listen values give a one-line UsageError quoting the value and an example."""
    with pytest.raises(UsageError) as e:
        parse_listen(text)
    assert "\n" not in str(e.value) and "HOST:PORT" in str(e.value)


def test_parse_listen_refuses_non_ascii_digits_with_usage_error() -> None:
    """A port written with superscript digits is a UsageError, not a ValueError traceback."""
    with pytest.raises(UsageError):
        parse_listen("127.0.0.1:\u00b2")


@settings(max_examples=300)
@given(st.text(max_size=30))
def test_parse_listen_of_any_text_gives_a_pair_or_usage_error(text: str) -> None:
    """Any text (ASCII digits and punctuation) gives (host, port) or a UsageError."""
    text = "".join(c for c in text if c.isascii())
    try:
        host, port = parse_listen(text)
    except UsageError as e:
        assert "\n" not in str(e)
        return
    assert host and 0 <= port <= 65535


def private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only, as a token file must be."""
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_read_tokens_reads_plain_and_admin_tokens(tmp_path: Path) -> None:
    """`TOKEN` lines are plain tokens, `TOKEN admin` lines admin tokens; blank lines and #
    comments are skipped."""
    path = tmp_path / "tokens"
    plain, admin = "p" * 16, "A" * 24
    private(path, f"# the tokens\n\n{plain}\n  {admin} admin  # ops\n")
    assert read_tokens(str(path)) == {plain: False, admin: True}


@pytest.mark.parametrize(
    ("text", "needle"),
    [("short\n", ":1: expected"), ("a" * 16 + " root\n", ":1: expected"),
     ("# x\n" + "a" * 16 + " admin extra\n", ":2: expected"), ("# only\n\n", "no token"),
     ("", "no token")],
)  # fmt: skip
def test_read_tokens_refuses_bad_lines_in_one_line(tmp_path: Path, text: str, needle: str) -> None:
    """Short tokens, unknown roles, extra words and files without a token are one-line
    UsageErrors naming the file (and the line)."""
    path = private(tmp_path / "tokens", text)
    with pytest.raises(UsageError) as e:
        read_tokens(str(path))
    assert needle in str(e.value) and str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_read_tokens_of_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    """A missing or unreadable token file is a one-line UsageError naming it."""
    for path in (tmp_path / "nope", tmp_path):
        with pytest.raises(UsageError) as e:
            read_tokens(str(path))
        assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_read_tokens_of_binary_file_is_a_usage_error(tmp_path: Path) -> None:
    """A token file that is not text is a UsageError, not a UnicodeDecodeError."""
    path = tmp_path / "tokens"
    path.write_bytes(b"\xff\xfe" + b"a" * 20 + b"\n")
    path.chmod(0o600)
    with pytest.raises(UsageError):
        read_tokens(str(path))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660])
def test_token_files_open_to_other_users_are_refused_naming_the_mode_and_the_fix(
    tmp_path: Path, mode: int
) -> None:
    """A token file with any group or other permission is refused, as ssh refuses such a
    private key: lockd's with a one-line UsageError (exit 2), a client's with a one-line
    UnsafeTokenFile (exit 78); both name the file, its mode and `chmod 600 FILE`."""
    path = private(tmp_path / "my tokens", "t" * 16 + "\n")
    path.chmod(mode)
    with pytest.raises(UsageError) as server:
        read_tokens(str(path))
    with pytest.raises(UnsafeTokenFile) as client:
        read_token_file(str(path))
    assert client.value.exit_code == 78 and server.value.exit_code == 2
    for err in (server.value, client.value):
        text = str(err)
        assert "\n" not in text and str(path) in text and f"mode {mode:04o}" in text
        assert f"chmod 600 '{path}'" in text


def test_a_client_token_file_from_the_environment_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loose token file named by $HEARTLINE_LOCK_TOKEN_FILE is refused before any
    connection, and the message says where the name came from."""
    path = private(tmp_path / "token", "t" * 16 + "\n")
    path.chmod(0o644)
    monkeypatch.setenv("HEARTLINE_LOCK_TOKEN_FILE", str(path))
    with pytest.raises(UnsafeTokenFile, match=r"\$HEARTLINE_LOCK_TOKEN_FILE.*mode 0644"):
        open_backend("heartline://127.0.0.1:9")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_token_files_owned_by_another_user_are_refused(tmp_path: Path) -> None:
    """A token file owned by another user (neither us nor root) is refused even at mode
    0600: its owner could change the token. The message names the owner and the fix."""
    path = private(tmp_path / "tokens", "t" * 16 + "\n")
    os.chown(path, 65534, 65534)
    with pytest.raises(UsageError) as server:
        read_tokens(str(path))
    with pytest.raises(UnsafeTokenFile) as client:
        read_token_file(str(path))
    for err in (server.value, client.value):
        text = str(err)
        assert "\n" not in text and str(path) in text and "uid 65534" in text
        assert f"chown root {path}" in text


def test_private_token_files_owned_by_us_are_read(tmp_path: Path) -> None:
    """Mode 0600 (and 0400) files of our own are read as before."""
    path = private(tmp_path / "token", "t" * 16 + "  # mine\n")
    assert read_token_file(str(path)) == "t" * 16
    path.chmod(0o400)
    assert read_tokens(str(path)) == {"t" * 16: False}


# --- the client's URL and option checks -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme", "endpoints"),
    [("heartline://locks:7000", "heartline", (("locks", 7000),)),
     ("heartline://locks", "heartline", (("locks", 7717),)),
     ("heartlines://127.0.0.1:1/", "heartlines", (("127.0.0.1", 1),)),
     ("heartline://[::1]:9", "heartline", (("::1", 9),)),
     ("etcd://a:1,b:2", "etcd", (("a", 1), ("b", 2))),
     ("etcds://a", "etcds", (("a", 2379),))],
)  # fmt: skip
def test_parse_url_accepts_the_documented_forms(
    url: str, scheme: str, endpoints: tuple[tuple[str, int], ...]
) -> None:
    """heartline://, heartlines:// (TLS), etcd:// and etcds:// URLs give their endpoints, with
    the default port when none is given."""
    parsed = parse_url(url)
    assert (parsed.scheme, parsed.endpoints) == (scheme, endpoints)
    assert parsed.tls == scheme.endswith("s")


@pytest.mark.parametrize(
    "url",
    ["locks:7717", "http://locks:1", "heartline://", "heartline://a:1/path", "heartline://a?x=1",
     "heartline://u@a:1", "heartline://:7717", "heartline://a:99999", "heartline://a:port",
     "heartline://[::1", "heartline://a:1,b:2", "etcd://a:1,,b:2", ""],
)  # fmt: skip
def test_parse_url_refuses_bad_urls_in_one_line(url: str) -> None:
    """Bad lock server URLs are one-line UsageErrors quoting the URL."""
    with pytest.raises(UsageError) as e:
        parse_url(url)
    assert repr(url) in str(e.value) and "\n" not in str(e.value)


@settings(max_examples=300)
@given(st.text(max_size=40), st.sampled_from(["heartline://", "etcd://", "heartlines://", ""]))
def test_parse_url_of_any_text_gives_a_url_or_usage_error(text: str, prefix: str) -> None:
    """Any text parses to endpoints with valid ports, or raises UsageError; nothing else."""
    try:
        parsed = parse_url(prefix + text)
    except UsageError:
        return
    assert parsed.endpoints and all(h and 0 <= p <= 65535 for h, p in parsed.endpoints)


@pytest.mark.parametrize("name", ["a", "db/migrate", "n" * 256, "é" * 128, "with space"])
def test_check_name_accepts_printable_names_up_to_256_bytes(name: str) -> None:
    """Printable names of 1 to 256 bytes pass unchanged."""
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "n" * 257, "é" * 129, "a\nb", "\x1b[31m", "tab\t"])
def test_check_name_refuses_bad_names_in_one_line(name: str) -> None:
    """Empty, over-long or unprintable names are one-line UsageErrors."""
    with pytest.raises(UsageError) as e:
        check_name(name)
    assert "\n" not in str(e.value) and "256 bytes" in str(e.value)


def test_check_name_refuses_lone_surrogates_with_usage_error() -> None:
    """A name holding a lone surrogate (e.g. from os.fsdecode of bad bytes) is a UsageError."""
    with pytest.raises(UsageError):
        check_name("lock-\udcff")


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_check_name_agrees_with_the_protocol(name: str) -> None:
    """A name check_name accepts is one lockd's decode accepts too, and the other way
    round (surrogates aside)."""
    if any("\ud800" <= c <= "\udfff" for c in name):
        return
    try:
        check_name(name)
        client_ok = True
    except UsageError:
        client_ok = False
    server_ok = decode_or_violation(enc(dict(FRAMES["acquire"], name=name))) is not None
    assert client_ok == server_ok


@pytest.mark.parametrize("ttl", [0.2, 1, 10.0, 3600])
def test_check_ttl_accepts_the_range(ttl: float) -> None:
    """TTLs from 0.2 s to 3600 s pass."""
    assert check_ttl(ttl) == ttl


@pytest.mark.parametrize("ttl", [0.19, 0, -1, 3600.5, math.inf, math.nan])
def test_check_ttl_refuses_out_of_range(ttl: float) -> None:
    """TTLs outside 0.2..3600 s, infinity and NaN are one-line UsageErrors."""
    with pytest.raises(UsageError, match=r"between 0\.2s and 3600s") as e:
        check_ttl(ttl)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("limit", [1, 2, 1_000_000])
def test_check_limit_accepts_the_range(limit: int) -> None:
    """Limits from 1 to 1000000 pass."""
    assert check_limit(limit) == limit


@pytest.mark.parametrize("limit", [0, -1, 1_000_001])
def test_check_limit_refuses_out_of_range(limit: int) -> None:
    """Limits outside 1..1000000 are one-line UsageErrors."""
    with pytest.raises(UsageError, match="from 1 to 1000000") as e:
        check_limit(limit)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "change",
    [{"v": 2}, {"v": 0}, {"host": "evil\x1b[2J"}, {"label": "line\nbreak"}],
)
def test_hello_refuses_other_versions_and_unprintable_names(change: dict[str, object]) -> None:
    """Only protocol version 1 is spoken; host and label (shown by `heartline locks`) must be
    printable, so no terminal escape reaches an operator's screen."""
    with pytest.raises(ProtocolViolation):
        proto.decode(enc({**HELLO, **change}))
