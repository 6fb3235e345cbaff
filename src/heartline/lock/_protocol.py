"""lockd's wire protocol: one JSON object per line, over TCP (optionally TLS).

Client to server (``id`` is the client's request number, echoed in the answer)::

    {"op": "hello", "v": 1, "ttl": 10, "host": "h", "pid": 1, "label": "", "auth": "...",
     "session": "<id of a session to resume after a server restart>"}       (first, once)
    {"op": "acquire", "id": 1, "name": "x", "limit": 1, "wait": null | 0 | 2.5}
    {"op": "release", "id": 2, "name": "x", "token": 17}   (token 0: give up waiting)
    {"op": "ping", "id": 3}                                  (renews the session's lease)
    {"op": "locks", "id": 4}
    {"op": "break", "id": 5, "name": "x"}                    (admin)
    {"op": "put", "id": 6, "key": "k", "value": "v"}         (an entry of this session's;
                                                   "keep": true: nobody's, it outlives it)
    {"op": "delete", "id": 7, "key": "k"}                    (only one of this session's)
    {"op": "entries", "id": 8, "prefix": "k"}
    {"op": "watch", "id": 9, "prefix": "k"}                  (the watch's id is the request's)
    {"op": "unwatch", "id": 10, "watch": 9}

Server to client: ``{"id": 1, "token": 17}`` (granted), ``{"id": 1, "timeout": true}``,
``{"id": 2, "ok": true}``, ``{"id": 4, "locks": [...]}``, ``{"id": N, "error": "...", "code": C}``;
``{"id": 6, "ok": true, "rev": 41}``, ``{"id": 8, "rev": 41, "entries": [[key, value, rev, age],
...]}`` (also the answer to watch; ``age`` in seconds on the server's clock); pushed without an
id: ``{"lost": "x", "token": 17, "reason": "..."}``, and to a watch
``{"w": 9, "rev": 42, "put": [key, value, rev, age]}`` or ``{"w": 9, "rev": 43, "del": key}``.
A frame that breaks the protocol (not JSON, too big, unknown op, a field of the wrong type,
anything before hello) gets ``{"error": "...", "code": "protocol"}`` and the connection is
closed.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any

from heartline.errors import LockError

VERSION = 1
#: The longest frame either side accepts, newline excluded.
MAX_FRAME = 64 * 1024
MAX_NAME = 256
MAX_TEXT = 256
MAX_KEY = 256
#: The longest entry value (JSON escapes may double it on the wire; it still fits a frame).
MAX_VALUE = 16 * 1024


class ProtocolViolation(LockError):
    """A frame that breaks the protocol; the connection is closed after the error is sent."""


def encode(msg: dict[str, Any]) -> bytes:
    """One frame. Acquire and release, sent for every grant, are formatted by hand."""
    op = msg.get("op")
    if op == "release":
        return b'{"op":"release","id":%d,"name":%s,"token":%d}\n' % (
            msg["id"], quote(msg["name"]), msg["token"])  # fmt: skip
    if op == "acquire":
        wait = msg["wait"]
        return b'{"op":"acquire","id":%d,"name":%s,"limit":%d,"wait":%s}\n' % (
            msg["id"], quote(msg["name"]), msg["limit"],
            b"null" if wait is None else repr(float(wait)).encode())  # fmt: skip
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


@functools.lru_cache(maxsize=4096)
def quote(text: str) -> bytes:
    """``text`` as a JSON string (ASCII, escaped)."""
    return json.dumps(text).encode()


def _field(msg: dict[str, Any], key: str, kind: type, *, optional: bool = False) -> Any:
    if key not in msg:
        if optional:
            return None
        raise ProtocolViolation(f"field {key!r} is missing")
    value = msg[key]
    if value is None and optional:
        return None
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        try:
            ok = ok and math.isfinite(value)
        except OverflowError:  # an integer beyond the range of floats
            ok = False
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ProtocolViolation(f"field {key!r} must be {kind.__name__}")
    return value


def _text(msg: dict[str, Any], key: str, *, limit: int = MAX_TEXT, optional: bool = False) -> Any:
    value = _field(msg, key, str, optional=optional)
    if value is not None and len(value.encode("utf-8", "surrogatepass")) > limit:
        raise ProtocolViolation(f"field {key!r} is longer than {limit} bytes")
    return value


def _name(msg: dict[str, Any]) -> str:
    name: str = _text(msg, "name", limit=MAX_NAME)
    if not name or not name.isprintable():
        raise ProtocolViolation("field 'name' must be 1 to 256 bytes of printable text")
    return name


def _uint(msg: dict[str, Any], key: str, *, low: int, high: int) -> int:
    value: int = _field(msg, key, int)
    if not low <= value <= high:
        raise ProtocolViolation(f"field {key!r} must be from {low} to {high}")
    return value


def decode(line: bytes) -> dict[str, Any]:
    """One client frame, checked field by field; raises :class:`ProtocolViolation`."""
    if len(line) > MAX_FRAME:
        raise ProtocolViolation(f"frame longer than {MAX_FRAME} bytes")
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError):
        raise ProtocolViolation("frame is not JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolViolation("frame is not a JSON object")
    op = msg.get("op")
    out: dict[str, Any] = {"op": op}
    if op == "hello":
        out["v"] = _uint(msg, "v", low=0, high=1 << 16)
        ttl = _field(msg, "ttl", float)
        if not 0.05 <= ttl <= 86400:
            raise ProtocolViolation("field 'ttl' must be from 0.05 to 86400 seconds")
        out["ttl"] = float(ttl)
        if out["v"] != VERSION:
            raise ProtocolViolation(f"protocol version {out['v']} is not spoken here (only 1)")
        out["host"] = _text(msg, "host", optional=True) or ""
        out["pid"] = _uint(msg, "pid", low=0, high=1 << 31) if "pid" in msg else 0
        out["label"] = _text(msg, "label", optional=True) or ""
        if not (out["host"] + out["label"]).isprintable():
            raise ProtocolViolation("fields 'host' and 'label' must be printable text")
        out["auth"] = _text(msg, "auth", limit=4096, optional=True)
        out["session"] = _text(msg, "session", limit=64, optional=True)
        return out
    if op not in _OPS:
        raise ProtocolViolation(f"unknown op {op!r}")
    out["id"] = _uint(msg, "id", low=0, high=(1 << 53) - 1)
    if op == "acquire":
        out["name"] = _name(msg)
        out["limit"] = _uint(msg, "limit", low=1, high=1_000_000)
        wait = _field(msg, "wait", float, optional=True)
        if wait is not None and not 0 <= wait <= 10**9:
            raise ProtocolViolation("field 'wait' must be null or from 0 to 1e9 seconds")
        out["wait"] = None if wait is None else float(wait)
    elif op == "release":
        out["name"] = _name(msg)
        out["token"] = _uint(msg, "token", low=0, high=(1 << 63) - 1)
    elif op == "break":
        out["name"] = _name(msg)
    elif op in ("put", "delete"):
        out["key"] = _key(msg, "key")
        if op == "put":
            out["value"] = _text(msg, "value", limit=MAX_VALUE)
            out["keep"] = bool(_field(msg, "keep", bool, optional=True))
    elif op in ("entries", "watch"):
        out["prefix"] = _key(msg, "prefix", empty=True)
    elif op == "unwatch":
        out["watch"] = _uint(msg, "watch", low=0, high=(1 << 53) - 1)
    return out


_OPS = ("acquire", "release", "ping", "locks", "break", "put", "delete", "entries", "watch",
        "unwatch")  # fmt: skip


def _key(msg: dict[str, Any], field: str, *, empty: bool = False) -> str:
    key: str = _text(msg, field, limit=MAX_KEY)
    if (not key and not empty) or not key.isprintable():
        raise ProtocolViolation(f"field {field!r} must be 1 to {MAX_KEY} bytes of printable text")
    return key
