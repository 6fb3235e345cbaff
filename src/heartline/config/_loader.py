"""Load ``heartline.toml`` into :class:`Config`.

tomllib gives values but no positions, so a small scanner maps each table and key to the line
it was written on; every error can then say ``file:line: key: what is wrong``.

Over 600 lines on purpose: the line scanner and one validator per key type sit together so a
key's rule and the error it words can be read side by side; they share the builder's error
helper and nothing else needs them.
"""

from __future__ import annotations

import os
import re
import signal
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from types import MappingProxyType
from typing import Any

from heartline._util import parse_duration, parse_size
from heartline.config._cluster import build_cluster
from heartline.config._locate import ETC_CONFIG, default_log_dir, default_run_dir
from heartline.config._specs import (
    BackoffSpec,
    CheckSpec,
    Config,
    CrashLoopSpec,
    DaemonSpec,
    LogSpec,
    ProgramSpec,
)
from heartline.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_KEY_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+))\s*')
MAX_NUMPROCS = 1000


def load_config(path: str) -> Config:
    """Read and validate the config file at ``path``."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        searched = "" if path != ETC_CONFIG else ", nor ./heartline.toml"
        raise ConfigError(
            f"file not found{searched} (pass -c FILE, set HEARTLINE_CONFIG, or write a "
            "commented sample with `heartline init`)",
            file=path,
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError("not valid UTF-8", file=path, line=line) from None
    return parse_config(text, path=path)


def parse_config(text: str, *, path: str = "<config>") -> Config:
    """Validate TOML ``text``; relative paths resolve against the directory of ``path``."""
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ConfigError("invalid TOML: values nested too deeply", file=path) from None
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        line = int(m.group(1)) if m else None
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg).strip() or "invalid TOML"
        raise ConfigError(f"invalid TOML: {msg}", file=path, line=line) from None
    return _Builder(text, path, data).build()


class KeyLines:
    """Maps dotted key paths of a TOML text to the line where they were written (best effort),
    so that an error can say ``file:line: key: what is wrong``; chaos experiment files use it
    too."""

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        # TOML ends lines at "\n" only; str.splitlines() would also split at U+2028 and friends.
        for number, line in enumerate(text.split("\n"), start=1):
            stripped = line.strip()
            if stripped.startswith("[") and not stripped.startswith("[["):
                end = stripped.find("]")
                parts = _split_key(stripped[1:end]) if end > 0 else None
                if parts is not None:
                    table = tuple(parts)
                    for i in range(1, len(table) + 1):
                        self.lines.setdefault(table[:i], number)
                continue
            eq = stripped.find("=")
            if eq > 0 and not stripped.startswith("#"):
                parts = _split_key(stripped[:eq])
                if parts is not None:
                    self.lines.setdefault((*table, *parts), number)

    def line(self, path: tuple[str, ...]) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def _split_key(s: str) -> list[str] | None:
    parts: list[str] = []
    for piece in _dotted_pieces(s):
        m = _KEY_TOKEN.fullmatch(piece)
        if not m:
            return None
        parts.append(next(g for g in m.groups() if g is not None))
    return parts or None


def _dotted_pieces(s: str) -> list[str]:
    pieces, cur, quote = [], [], ""
    for ch in s:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            cur.append(ch)
        elif ch == ".":
            pieces.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    pieces.append("".join(cur))
    return pieces


class _Builder:
    def __init__(self, text: str, path: str, data: dict[str, Any]) -> None:
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path)) if path != "<config>" else os.getcwd()
        self.data = data
        self.locator = KeyLines(text)

    def error(self, key_path: tuple[str, ...], message: str) -> ConfigError:
        return ConfigError(
            message, file=self.path, key=".".join(key_path), line=self.locator.line(key_path)
        )

    def check_keys(
        self, table: Mapping[str, Any], allowed: list[str], where: tuple[str, ...]
    ) -> None:
        for key in table:
            if key not in allowed:
                import difflib

                hint = difflib.get_close_matches(key, allowed, n=1)
                fix = (
                    f"; did you mean {hint[0]!r}?"
                    if hint
                    else f"; known keys: {', '.join(allowed)}"
                )
                raise self.error((*where, key), f"unknown key{fix}")

    def table(self, value: object, where: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, f"expected a table, got {_kind(value)}")
        return value

    def resolve(self, p: str) -> str:
        p = os.path.expanduser(p)
        return os.path.normpath(os.path.join(self.base, p))

    def build(self) -> Config:
        self.check_keys(self.data, ["daemon", "defaults", "programs", "cluster"], ())
        daemon_t = self.table(self.data.get("daemon", {}), ("daemon",))
        self.check_keys(daemon_t, ["run_dir", "log_dir", "adopt_timeout"], ("daemon",))
        run_dir = self.string(daemon_t, "run_dir", ("daemon",))
        log_dir = self.string(daemon_t, "log_dir", ("daemon",))
        adopt_timeout = DaemonSpec.adopt_timeout
        if "adopt_timeout" in daemon_t:
            try:
                adopt_timeout = _duration(self, daemon_t["adopt_timeout"], (), daemon_t)
            except _Invalid as e:
                raise self.error(("daemon", "adopt_timeout"), str(e)) from None
        daemon = DaemonSpec(
            run_dir=self.directory(run_dir, ("daemon", "run_dir"), default_run_dir),
            log_dir=self.directory(log_dir, ("daemon", "log_dir"), default_log_dir),
            adopt_timeout=adopt_timeout,
        )
        defaults = self.table(self.data.get("defaults", {}), ("defaults",))
        self.check_keys(defaults, [k for k in _PROGRAM_KEYS if k != "command"], ("defaults",))
        for key, value in defaults.items():
            try:
                _PROGRAM_KEYS[key](self, value, ("defaults", key), defaults)
            except _Invalid as e:
                raise self.error(("defaults", key), str(e)) from None
        programs_t = self.table(self.data.get("programs", {}), ("programs",))
        programs: dict[str, ProgramSpec] = {}
        groups: dict[str, tuple[str, ...]] = {}
        for name, raw in programs_t.items():
            where = ("programs", name)
            if not _NAME.fullmatch(name):
                raise self.error(
                    where, "program names use letters, digits, '_', '.', '-' (at most 64)"
                )
            table = self.table(raw, where)
            self.check_keys(table, list(_PROGRAM_KEYS), where)
            merged = {**defaults, **table}
            spec, numprocs = self.program(name, merged, where, table)
            if numprocs == 1:
                instances = [replace(spec, name=name, group=name)]
            else:
                instances = [replace(spec, name=f"{name}:{i}", group=name) for i in range(numprocs)]
            groups[name] = tuple(s.name for s in instances)
            for s in instances:
                programs[s.name] = s
        for name in programs_t:
            spec = programs[groups[name][0]]
            for key in ("after", "requires"):
                for dep in getattr(spec, key):
                    if dep not in groups:
                        raise self.error(("programs", name, key), f"no program named {dep!r}")
                    if dep == name:
                        raise self.error(
                            ("programs", name, key), "a program cannot wait for itself"
                        )
        self.check_cycles(programs_t, programs, groups)
        for name, raw in programs_t.items():
            self.check_singleton(name, raw, programs[groups[name][0]], len(groups[name]))
        return Config(
            path=os.path.abspath(self.path) if self.path != "<config>" else self.path,
            daemon=daemon,
            programs=MappingProxyType(programs),
            groups=MappingProxyType(groups),
            cluster=build_cluster(self, self.data["cluster"]) if "cluster" in self.data else None,
        )

    def check_cycles(
        self,
        programs_t: Mapping[str, Any],
        programs: Mapping[str, ProgramSpec],
        groups: Mapping[str, tuple[str, ...]],
    ) -> None:
        # Iterative depth-first search: a chain of thousands of programs must not overflow
        # the interpreter's stack.
        state: dict[str, int] = {}
        for root in programs_t:
            if root in state:
                continue
            state[root] = 1
            trail = [root]
            stack = [iter(self._deps(programs[groups[root][0]]))]
            while stack:
                dep = next(stack[-1], None)
                node = trail[-1]
                if dep is None:
                    state[node] = 2
                    stack.pop()
                    trail.pop()
                    continue
                if state.get(dep) == 1:
                    cycle = " -> ".join([*trail[trail.index(dep) :], dep])
                    key = "after" if dep in programs[groups[node][0]].after else "requires"
                    raise self.error(("programs", node, key), f"start order has a cycle: {cycle}")
                if dep not in state:
                    state[dep] = 1
                    trail.append(dep)
                    stack.append(iter(self._deps(programs[groups[dep][0]])))

    def check_singleton(
        self, name: str, own: Mapping[str, Any], spec: ProgramSpec, instances: int
    ) -> None:
        """A singleton needs the cluster and is one instance; its keys need it (a program's
        own table is checked, so [defaults] may set a lease for the singletons among many)."""
        where = ("programs", name)
        if not spec.singleton:
            for key in ("lease", "failover_on"):
                if key in own:
                    raise self.error((*where, key), "only applies with singleton = true")
            return
        if "cluster" not in self.data:
            raise self.error(
                (*where, "singleton"),
                "a singleton runs on one host of a cluster: add a [cluster] section naming "
                "the backend its lock lives in",
            )
        if instances > 1:
            raise self.error((*where, "singleton"), "a singleton is one instance: remove numprocs")

    @staticmethod
    def _deps(spec: ProgramSpec) -> list[str]:
        return sorted(set(spec.after) | set(spec.requires))

    # --- typed getters -------------------------------------------------------------------
    def string(self, t: Mapping[str, Any], key: str, where: tuple[str, ...]) -> str | None:
        if key not in t:
            return None
        v = t[key]
        if not isinstance(v, str):
            raise self.error((*where, key), f"expected a string, got {_kind(v)}")
        if "\x00" in v:
            raise self.error((*where, key), "must not contain a NUL character")
        return v

    def directory(
        self, value: str | None, key_path: tuple[str, ...], default: Callable[[], str]
    ) -> str:
        """A directory the daemon creates and writes: absolute, not a file, not in /proc."""
        if value is None:
            return default()
        if not value.strip():
            raise self.error(key_path, f"must not be empty (leave it out for {default()})")
        path = self.resolve(value)
        for kernel_fs in ("/proc", "/sys", "/dev"):
            if path == kernel_fs or path.startswith(kernel_fs + "/"):
                raise self.error(
                    key_path,
                    f"{path} is inside {kernel_fs}, a kernel file system: choose a "
                    "directory on disk or in /run",
                )
        probe = path
        while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
        if os.path.exists(probe) and not os.path.isdir(probe):
            what = "is" if probe == path else f"is inside {probe}, which is"
            raise self.error(key_path, f"{path} {what} not a directory: choose another path")
        return path

    def program(
        self, name: str, t: Mapping[str, Any], where: tuple[str, ...], own: Mapping[str, Any]
    ) -> tuple[ProgramSpec, int]:
        if "command" not in t:
            raise self.error(
                where, 'missing key \'command\' (an argv list such as ["/usr/bin/app", "--flag"])'
            )
        values: dict[str, Any] = {}
        for key, value in t.items():
            try:
                values[key] = _PROGRAM_KEYS[key](self, value, (*where, key), t)
            except _Invalid as e:
                raise self.error((*where, key), str(e)) from None
        numprocs = values.pop("numprocs", 1)
        if values.get("shell") and not isinstance(t["command"], str | list):
            raise self.error((*where, "command"), "expected a string or a list")
        if values.get("shell") and len(values["command"]) > 1:
            # Joining argv items into one shell line would let any item inject commands.
            raise self.error(
                (*where, "command"),
                "with shell = true the command is one string for /bin/sh -c; a list is "
                "already an argv: write one string, or drop shell = true",
            )
        if "group" in values:
            values["group_name"] = values.pop("group")
        return ProgramSpec(name=name, **values), numprocs


class _Invalid(ValueError):
    pass


def _kind(v: object) -> str:
    return {
        str: "a string", int: "an integer", float: "a number", bool: "a boolean",
        list: "a list", dict: "a table",
    }.get(type(v), type(v).__name__)  # fmt: skip


Validator = Callable[[_Builder, Any, tuple[str, ...], Mapping[str, Any]], Any]


def _command(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> tuple[str, ...]:
    if isinstance(v, str):
        if not t.get("shell"):
            raise _Invalid(
                'expected an argv list such as ["/usr/bin/app", "--flag"] '
                "(or set shell = true to run a string through /bin/sh)"
            )
        items = [v]
    elif isinstance(v, list):
        items = v
    else:
        raise _Invalid(f"expected an argv list of strings, got {_kind(v)}")
    if not items:
        raise _Invalid("must not be empty")
    for i, a in enumerate(items):
        if not isinstance(a, str):
            raise _Invalid(f"item {i} must be a string, got {_kind(a)}")
        if "\x00" in a:
            raise _Invalid(f"item {i} must not contain a NUL character")
    if not items[0]:
        raise _Invalid("the program path (item 0) must not be empty")
    return tuple(items)


def _bool(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> bool:
    if not isinstance(v, bool):
        raise _Invalid(f"expected true or false, got {_kind(v)}")
    return v


def _str(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> str:
    if not isinstance(v, str) or not v or "\x00" in v:
        raise _Invalid(f"expected a non-empty string, got {_kind(v)}")
    return v


def _path(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> str:
    return b.resolve(_str(b, v, where, t))


def _env(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> Mapping[str, str]:
    if not isinstance(v, dict):
        raise _Invalid(
            f'expected a table of strings such as {{ LANG = "C.UTF-8" }}, got {_kind(v)}'
        )
    out: dict[str, str] = {}
    for k, val in v.items():
        if not k or "=" in k or "\x00" in k:
            raise _Invalid(f"bad variable name {k!r}")
        if isinstance(val, bool) or not isinstance(val, str | int | float):
            raise _Invalid(f"value of {k} must be a string, got {_kind(val)}")
        sval = str(val)
        if "\x00" in sval:
            raise _Invalid(f"value of {k} must not contain a NUL character")
        out[k] = sval
    return MappingProxyType(out)


def _umask(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> int:
    if isinstance(v, str):
        try:
            n = int(v, 8)
        except ValueError:
            raise _Invalid(f'expected an octal string such as "022", got {v!r}') from None
    elif isinstance(v, int) and not isinstance(v, bool):
        n = v
    else:
        raise _Invalid(f'expected an octal string such as "022", got {_kind(v)}')
    if not 0 <= n <= 0o777:
        raise _Invalid("must be between 000 and 777")
    return n


def _numprocs(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_NUMPROCS:
        raise _Invalid(f"expected an integer from 1 to {MAX_NUMPROCS}")
    return v


def _signal(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> int:
    return parse_signal(v)


def parse_signal(v: object) -> int:
    """A signal number from ``"TERM"``, ``"SIGTERM"``, ``"term"`` or ``15``."""
    if isinstance(v, int) and not isinstance(v, bool):
        try:
            return int(signal.Signals(v))
        except ValueError:
            raise _Invalid(f"no such signal number {v}") from None
    if isinstance(v, str):
        name = v.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            return int(signal.Signals[name])
        except KeyError:
            raise _Invalid(
                f"unknown signal {v!r} (use a name such as TERM, INT, HUP, QUIT)"
            ) from None
    raise _Invalid(f'expected a signal name such as "TERM", got {_kind(v)}')


def _duration(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> float:
    try:
        return parse_duration(v)
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _names(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Invalid("expected a list of program names")
    return tuple(v)


def _restart(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> str:
    if v not in ("always", "on-failure", "never"):
        raise _Invalid(f'expected "always", "on-failure" or "never", got {v!r}')
    return str(v)


def _codes(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> frozenset[int]:
    if not isinstance(v, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in v
    ):
        raise _Invalid("expected a list of exit codes from 0 to 255")
    return frozenset(v)


def _sub(cls: type[Any], spec: dict[str, Validator]) -> Validator:
    def check(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> Any:
        table = b.table(v, where)
        b.check_keys(table, list(spec), where)
        values = {}
        for key, val in table.items():
            try:
                values[key] = spec[key](b, val, (*where, key), table)
            except _Invalid as e:
                raise b.error((*where, key), str(e)) from None
        return cls(**values)

    assert set(spec) == {f.name for f in fields(cls)}
    return check


def _float_min(lo: float) -> Validator:
    def check(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not v >= lo or v > 1e6:
            raise _Invalid(f"expected a number >= {lo}")
        return float(v)

    return check


def _int_range(lo: int, hi: int) -> Validator:
    def check(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise _Invalid(f"expected an integer from {lo} to {hi}")
        return v

    return check


def _cooldown(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> float | None:
    if v == "never":
        return None
    return _duration(b, v, where, t)


def _jitter(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        raise _Invalid("expected a fraction from 0 to 1")
    return float(v)


def _size(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> int:
    try:
        n = parse_size(v)
    except ValueError as e:
        raise _Invalid(str(e)) from None
    if n < 4096:
        raise _Invalid("must be at least 4KiB")
    return n


def _ready(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> str:
    if v not in ("started", "notify", "check"):
        raise _Invalid(f'expected "started", "notify" or "check", got {v!r}')
    if v == "check" and "check" not in t:
        raise _Invalid('ready = "check" needs a [check] table for this program')
    return str(v)


def _report_signal(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> int | None:
    if v in ("", "none"):
        return None
    return parse_signal(v)


def _check_url(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> str:
    from urllib.parse import urlsplit

    url = _str(b, v, where, t)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise _Invalid(f"not a valid URL: {e}") from None
    if parts.scheme not in ("tcp", "http", "https"):
        raise _Invalid(f"expected a tcp://, http:// or https:// URL, got {url!r}")
    if not parts.hostname:
        raise _Invalid(f"the URL names no host: {url!r}")
    if parts.scheme == "tcp" and port is None:
        raise _Invalid(f"a tcp:// check needs a port, such as tcp://127.0.0.1:8080, got {url!r}")
    return url


def _check_exec(
    b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]
) -> tuple[str, ...]:
    return _command(b, v, where, {})


def _status_range(
    b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]
) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        lo = hi = v
    elif isinstance(v, str) and "-" in v:
        a, _, c = v.partition("-")
        if not (a.strip().isdigit() and c.strip().isdigit()):
            raise _Invalid(f'expected a status or a range such as "200-399", got {v!r}')
        lo, hi = int(a), int(c)
    else:
        raise _Invalid(f'expected a status or a range such as "200-399", got {_kind(v)}')
    if not 100 <= lo <= hi <= 599:
        raise _Invalid("statuses lie between 100 and 599, low before high")
    return lo, hi


_CHECK = _sub(
    CheckSpec,
    {
        "url": _check_url,
        "exec": _check_exec,
        "interval": _duration,
        "timeout": _duration,
        "grace": _duration,
        "failures": _int_range(1, 1000),
        "status": _status_range,
        "body": _str,
        "insecure": _bool,
    },
)


def _check(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> CheckSpec:
    spec: CheckSpec = _CHECK(b, v, where, t)
    if (spec.url is None) == (spec.exec is None):
        raise b.error(where, "a check needs exactly one of `url` or `exec`")
    if spec.timeout <= 0 or spec.interval <= 0:
        raise b.error(where, "a check's interval and timeout must be above zero")
    return spec


def _lease(b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]) -> float:
    ttl = _duration(b, v, where, t)
    if not 1.0 <= ttl <= 3600.0:
        raise _Invalid("must be from 1s to 1h (the default is 5s)")
    return ttl


def _failover_on(
    b: _Builder, v: Any, where: tuple[str, ...], t: Mapping[str, Any]
) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(x == "fatal" for x in v):
        raise _Invalid('expected [] or ["fatal"] (hand it over when it turns fatal here)')
    return tuple(dict.fromkeys(v))


_PROGRAM_KEYS: dict[str, Validator] = {
    "command": _command,
    "shell": _bool,
    "env": _env,
    "cwd": _path,
    "user": _str,
    "group": _str,
    "umask": _umask,
    "numprocs": _numprocs,
    "autostart": _bool,
    "stop_signal": _signal,
    "stop_timeout": _duration,
    "after": _names,
    "requires": _names,
    "restart": _restart,
    "success_exit_codes": _codes,
    "prevent_restart_exit_codes": _codes,
    "backoff": _sub(
        BackoffSpec,
        {
            "initial": _duration,
            "max": _duration,
            "factor": _float_min(1.0),
            "jitter": _jitter,
            "reset_after": _duration,
        },
    ),
    "crash_loop": _sub(
        CrashLoopSpec,
        {"max_starts": _int_range(0, 1_000_000), "window": _duration, "cooldown": _cooldown},
    ),
    "ready_after": _duration,
    "log": _sub(LogSpec, {"max_size": _size, "backups": _int_range(0, 100)}),
    "redirect_stderr": _bool,
    "watchdog": _duration,
    "ready": _ready,
    "start_timeout": _duration,
    "report_signal": _report_signal,
    "report_wait": _duration,
    "check": _check,
    "singleton": _bool,
    "lease": _lease,
    "failover_on": _failover_on,
}
