"""What a lock request may ask for, checked in one place.

The CLI, :class:`heartline.Lock` and every backend call these same functions, so a name, a
limit, a lease TTL, a wait or a server URL is refused with the same one-line
:class:`~heartline.errors.UsageError` wherever it comes in. (lockd checks the frames it
receives on its own, in its protocol: a server cannot trust its clients to have called these.)
"""

# No `from __future__ import annotations`: see _backend (NamedTuple fields and cold starts).

from typing import NamedTuple

from heartline.errors import UsageError

DEFAULT_URL = "heartline://127.0.0.1:7717"
DEFAULT_TTL = 10.0
#: The longest lease a server grants; a longer ``ttl`` is refused.
MAX_TTL = 3600.0
MIN_TTL = 0.2
#: Holders one lock may have at once (a semaphore's size).
MAX_LIMIT = 1_000_000
#: A lock name's length in UTF-8 bytes.
MAX_NAME = 256


def check_name(name: str) -> str:
    if not name or not name.isprintable() or len(name.encode()) > MAX_NAME:
        raise UsageError(
            f"lock name {name!r}: use 1 to {MAX_NAME} bytes of printable text (letters, digits, "
            "/-_.)"
        )
    return name


def check_ttl(ttl: float) -> float:
    if not (MIN_TTL <= ttl <= MAX_TTL):
        raise UsageError(f"lock ttl {ttl:g}s: choose between {MIN_TTL:g}s and {MAX_TTL:g}s")
    return ttl


def check_limit(limit: int) -> int:
    if not (1 <= limit <= MAX_LIMIT):
        raise UsageError(f"lock limit {limit}: choose a number of holders from 1 to {MAX_LIMIT}")
    return limit


def check_wait(wait: float | None) -> float | None:
    """None waits for ever, 0 only tries, a number of seconds waits that long."""
    if wait is not None and not wait >= 0:  # (also refuses NaN)
        raise UsageError(f"lock wait {wait:g}s: use None (for ever), 0 (try) or seconds")
    return wait


def check_request(name: str, *, limit: int, ttl: float, wait: float | None) -> None:
    """Everything an acquire asks for (what every backend's ``acquire`` checks first)."""
    check_name(name)
    check_limit(limit)
    check_ttl(ttl)
    check_wait(wait)


class LockURL(NamedTuple):
    scheme: str  # "heartline", "heartlines" (TLS), "etcd" or "etcds"
    endpoints: tuple[tuple[str, int], ...]

    @property
    def tls(self) -> bool:
        return self.scheme in ("heartlines", "etcds")


_DEFAULT_PORTS = {"heartline": 7717, "heartlines": 7717, "etcd": 2379, "etcds": 2379}


def parse_url(url: str) -> LockURL:
    """``heartline://host:port``, ``heartlines://`` (TLS), ``etcd://h1:p1,h2:p2``, ``etcds://``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _DEFAULT_PORTS:
        raise UsageError(
            f"lock server URL {url!r}: write heartline://HOST:PORT, heartlines://HOST:PORT "
            "(TLS) or etcd://HOST:PORT[,HOST:PORT...]"
        )
    rest = rest.rstrip("/")
    if not rest or any(c in rest for c in "/?#@"):
        raise UsageError(f"lock server URL {url!r}: expected only HOST:PORT after {scheme}://")
    endpoints = []
    for part in rest.split(","):
        if part.startswith("["):  # [v6 address]:port
            host, sep, tail = part[1:].partition("]")
            if not sep or (tail and not tail.startswith(":")):
                raise UsageError(f"lock server URL {url!r}: {part!r}: write [ADDRESS]:PORT")
            port_text = tail[1:]
        else:
            host, _, port_text = part.partition(":")
        if not host or any(c.isspace() for c in host):
            raise UsageError(f"lock server URL {url!r}: {part!r} has no host")
        port = _DEFAULT_PORTS[scheme]
        if port_text or part.endswith(":"):
            if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
                raise UsageError(f"lock server URL {url!r}: {part!r}: the port must be a "
                                 "number from 1 to 65535")  # fmt: skip
            port = int(port_text)
        endpoints.append((host, port))
    if scheme.startswith("heartline") and len(endpoints) != 1:
        raise UsageError(f"lock server URL {url!r}: lockd takes one HOST:PORT")
    return LockURL(scheme, tuple(endpoints))


__all__ = [
    "DEFAULT_TTL",
    "DEFAULT_URL",
    "MAX_LIMIT",
    "MAX_NAME",
    "MAX_TTL",
    "MIN_TTL",
    "LockURL",
    "check_limit",
    "check_name",
    "check_request",
    "check_ttl",
    "check_wait",
    "parse_url",
]
