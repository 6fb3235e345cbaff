"""An experiment file (TOML) to a checked :class:`Experiment`.

Every error names the file, the line and the key, as the daemon's config does. The file's
shape, in short (README "Chaos experiments" has it whole)::

    title = "..."
    [run]            rounds, interval, order, recover_within, detect_within, resolution,
                     lease, steady_for, steady_within, halt_file
    [blast_radius]   max_targets, max_percent, allow_last
    [lab]            dir                      (hosts below are lab hosts by default)
    [supervise.programs.NAME]                 a daemon of the experiment's own, these programs
    [targets.NAME]   kind = program | pidfiles | hosts | backend | proxy
    [probes.NAME]    kind = tcp | http | exec | program | ssh-port
    [steady]         probes = [...]
    [faults.NAME]    kind = kill | term | signal | stop | crash | partition | drop-port |
                            proxy | cpu | memory | disk-full | backend-kill
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from heartline._util import parse_duration, parse_size
from heartline.errors import ConfigError

#: What each fault kind does, and what it may hit (``heartline chaos list-faults``).
FAULTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "kill": ("SIGKILL the target's processes", ("program", "pidfiles"), ""),
    "term": ("SIGTERM the target's processes", ("program", "pidfiles"), ""),
    "signal": ("send `signal` to the target's processes", ("program", "pidfiles"), ""),
    "stop": (
        "SIGSTOP the processes for `for` (a hang), then SIGCONT",
        ("program", "pidfiles"),
        "SIGCONT",
    ),
    "crash": (
        "crash the host: a lab host's pid namespace killed (booted again after "
        "`restart_after`); a real host's kernel by sysrq `c`, only with "
        "--allow-host-crash HOST",
        ("hosts",),
        "boot (lab)",
    ),
    "partition": (
        "drop every packet between the target's hosts and `other` (hosts, or "
        '"backend") for `for` (nftables in the lab hosts\' namespaces)',
        ("hosts",),
        "rules deleted",
    ),
    "drop-port": (
        "drop TCP traffic to `port` on the target's hosts for `for` (nftables)",
        ("hosts",),
        "rules deleted",
    ),
    "proxy": (
        "set a toxic on the fault proxy for `for`: latency 200ms [jitter 50ms], "
        "bandwidth 64KiB/s, reset, blackhole, timeout 2s, down",
        ("proxy",),
        "cleared",
    ),
    "cpu": ("`workers` busy loops on the target's hosts for `for`", ("hosts",), "stopped"),
    "memory": (
        "hold `size` of touched memory on the target's hosts for `for`",
        ("hosts",),
        "freed",
    ),
    "disk-full": (
        "fill the file system under `path` (at most `limit` big) for `for`",
        ("hosts",),
        "file removed",
    ),
    "backend-kill": (
        "SIGKILL the lab's lock server (lockd or etcd), started again after `restart_after`",
        ("backend",),
        "started again",
    ),
}

TARGET_KINDS = ("program", "pidfiles", "hosts", "backend", "proxy")
PROBE_KINDS = ("tcp", "http", "exec", "program", "ssh-port")
PICKS = ("one", "all", "turn")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HOST = re.compile(r"[A-Za-z0-9_.:@\[\]-]{1,253}")


@dataclass(frozen=True)
class RunSpec:
    rounds: int = 1
    interval: float = 0.0
    #: "each": every fault in every round, in the file's order; "turn": one fault per round.
    order: str = "each"
    recover_within: float = 30.0
    #: After a fault ends, how long a probe has to fail for the fault to count as detected.
    detect_within: float = 2.0
    resolution: float = 0.1
    lease: float = 30.0
    #: The steady state holds when its probes pass for this long in a row ...
    steady_for: float = 0.3
    #: ... within this long (the system may still be starting).
    steady_within: float = 30.0
    halt_file: str | None = None


@dataclass(frozen=True)
class BlastRadius:
    max_targets: int | None = None
    max_percent: float = 100.0
    allow_last: bool = False


@dataclass(frozen=True)
class TargetSpec:
    name: str
    kind: str
    programs: tuple[str, ...] = ()
    #: "local", "lab" or "ssh": where the target's processes or hosts are.
    via: str = "local"
    hosts: tuple[str, ...] = ()
    socket: str | None = None
    dir: str | None = None
    listen: str | None = None
    upstream: str | None = None


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    kind: str
    timeout: float = 1.0
    address: str | None = None
    url: str | None = None
    status: int | None = None
    body: str | None = None
    command: tuple[str, ...] = ()
    program: str | None = None
    socket: str | None = None
    via: str = "local"
    host: str | None = None
    #: ssh-port: the hosts target whose every host is probed.
    target: str | None = None
    port: int = 22


@dataclass(frozen=True)
class FaultSpec:
    name: str
    kind: str
    target: str
    pick: str = "all"
    count: int | None = None
    duration: float = 0.0
    signal: int = 9
    other: str | None = None
    port: int | None = None
    toxic: str | None = None
    workers: int = 1
    size: int = 0
    path: str | None = None
    limit: int = 1 << 30
    restart_after: float | None = None
    recover_within: float | None = None
    probes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Experiment:
    path: str
    source: str
    title: str
    run: RunSpec
    blast: BlastRadius
    targets: Mapping[str, TargetSpec]
    probes: Mapping[str, ProbeSpec]
    steady: tuple[str, ...]
    faults: tuple[FaultSpec, ...]
    description: str = ""
    lab_dir: str | None = None
    #: The heartline.toml of the experiment's own daemon ([supervise]), or None.
    supervise: str | None = None
    supervised: tuple[str, ...] = field(default=())


def load_experiment(path: str) -> Experiment:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(
            "file not found (see examples/chaos/ for experiments to start from)", file=path
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            "not valid UTF-8", file=path, line=raw[: e.start].count(b"\n") + 1
        ) from None
    return parse_experiment(text, path=path)


def parse_experiment(text: str, *, path: str = "<experiment>") -> Experiment:
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
    return _Reader(text, path, data).experiment()


class _Bad(Exception):
    """A value is wrong; the reader adds where."""


class _Reader:
    def __init__(self, text: str, path: str, data: dict[str, Any]) -> None:
        from heartline.config import KeyLines

        self.text = text
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path)) if not path.startswith("<") else "."
        self.data = data
        self.lines = KeyLines(text)

    def error(self, where: tuple[str, ...], message: str) -> ConfigError:
        return ConfigError(
            message, file=self.path, key=".".join(where), line=self.lines.line(where)
        )

    def keys(self, t: Mapping[str, Any], allowed: tuple[str, ...], where: tuple[str, ...]) -> None:
        for key in t:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                fix = (
                    f"; did you mean {hint[0]!r}?"
                    if hint
                    else f"; known keys: {', '.join(allowed)}"
                )
                raise self.error((*where, key), f"unknown key{fix}")

    def table(self, where: tuple[str, ...], value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, f"expected a table, got {_kind(value)}")
        return value

    def get(
        self,
        t: Mapping[str, Any],
        key: str,
        where: tuple[str, ...],
        check: Callable[[object], Any],
        default: Any = None,
    ) -> Any:
        if key not in t:
            return default
        try:
            return check(t[key])
        except _Bad as e:
            raise self.error((*where, key), str(e)) from None

    def need(self, t: Mapping[str, Any], key: str, where: tuple[str, ...], what: str) -> None:
        if key not in t:
            raise self.error(where, f"needs `{key}` ({what})")

    def resolve(self, p: str) -> str:
        return os.path.normpath(os.path.join(self.base, os.path.expanduser(p)))

    # --- the whole file ---------------------------------------------------------------------
    def experiment(self) -> Experiment:
        d = self.data
        self.keys(
            d,
            (
                "title",
                "description",
                "run",
                "blast_radius",
                "lab",
                "supervise",
                "targets",
                "probes",
                "steady",
                "faults",
            ),
            (),
        )
        title = self.get(d, "title", (), _text, "")
        description = self.get(d, "description", (), _text, "")
        run = self.run_spec(self.table(("run",), d.get("run", {})))
        blast = self.blast(self.table(("blast_radius",), d.get("blast_radius", {})))
        lab_t = self.table(("lab",), d.get("lab", {}))
        self.keys(lab_t, ("dir",), ("lab",))
        lab_dir = self.get(lab_t, "dir", ("lab",), _text)
        if "lab" in d and lab_dir is None:
            from heartline.cluster import default_lab_dir

            lab_dir = default_lab_dir()
        elif lab_dir is not None:
            lab_dir = self.resolve(lab_dir)
        supervise, supervised = self.supervise(d)
        has_lab = "lab" in d
        targets = {}
        for name, raw in self.table(("targets",), d.get("targets", {})).items():
            self.name(("targets", name), name)
            targets[name] = self.target(name, self.table(("targets", name), raw), has_lab)
        probes = {}
        for name, raw in self.table(("probes",), d.get("probes", {})).items():
            self.name(("probes", name), name)
            probes[name] = self.probe(name, self.table(("probes", name), raw), targets, has_lab)
        steady_t = self.table(("steady",), d.get("steady", {}))
        self.keys(steady_t, ("probes",), ("steady",))
        steady = self.get(steady_t, "probes", ("steady",), _names, tuple(probes))
        for p in steady:
            if p not in probes:
                raise self.error(("steady", "probes"), f"no probe named {p!r}")
        faults = []
        for name, raw in self.table(("faults",), d.get("faults", {})).items():
            self.name(("faults", name), name)
            faults.append(self.fault(name, self.table(("faults", name), raw), targets, probes))
        if not faults:
            raise self.error(
                ("faults",),
                "no faults: add a [faults.NAME] table with a kind "
                "and a target (see `heartline chaos list-faults`)",
            )
        if not probes:
            raise self.error(
                ("probes",),
                "no probes: add a [probes.NAME] table, or nothing "
                "tells whether the system recovered",
            )
        if has_lab is False and any(t.via == "lab" for t in targets.values()):
            raise self.error(("lab",), "targets on lab hosts need a [lab] table")
        return Experiment(
            path=self.path,
            source=self.text,
            title=title or os.path.basename(self.path),
            description=description,
            run=run,
            blast=blast,
            targets=targets,
            probes=probes,
            steady=steady,
            faults=tuple(faults),
            lab_dir=lab_dir,
            supervise=supervise,
            supervised=supervised,
        )

    def name(self, where: tuple[str, ...], name: str) -> None:
        if not _NAME.fullmatch(name):
            raise self.error(where, "names use letters, digits, '_', '.', '-' (at most 64)")

    def run_spec(self, t: dict[str, Any]) -> RunSpec:
        w = ("run",)
        self.keys(
            t,
            (
                "rounds",
                "interval",
                "order",
                "recover_within",
                "detect_within",
                "resolution",
                "lease",
                "steady_for",
                "steady_within",
                "halt_file",
            ),
            w,
        )
        d = RunSpec()
        halt = self.get(t, "halt_file", w, _text)
        spec = RunSpec(
            rounds=self.get(t, "rounds", w, _int(1, 100_000), d.rounds),
            interval=self.get(t, "interval", w, _dur(0, 86400), d.interval),
            order=self.get(t, "order", w, _choice(("each", "turn")), d.order),
            recover_within=self.get(t, "recover_within", w, _dur(0.01, 86400), d.recover_within),
            detect_within=self.get(t, "detect_within", w, _dur(0, 3600), d.detect_within),
            resolution=self.get(t, "resolution", w, _dur(0.01, 60), d.resolution),
            lease=self.get(t, "lease", w, _dur(1, 86400), d.lease),
            steady_for=self.get(t, "steady_for", w, _dur(0, 3600), d.steady_for),
            steady_within=self.get(t, "steady_within", w, _dur(0.1, 86400), d.steady_within),
            halt_file=self.resolve(halt) if halt else None,
        )
        if spec.resolution > spec.recover_within:
            raise self.error((*w, "resolution"), "is longer than recover_within")
        return spec

    def blast(self, t: dict[str, Any]) -> BlastRadius:
        w = ("blast_radius",)
        self.keys(t, ("max_targets", "max_percent", "allow_last"), w)
        return BlastRadius(
            max_targets=self.get(t, "max_targets", w, _int(1, 1_000_000)),
            max_percent=self.get(t, "max_percent", w, _number(0.001, 100), 100.0),
            allow_last=self.get(t, "allow_last", w, _bool, False),
        )

    def supervise(self, d: dict[str, Any]) -> tuple[str | None, tuple[str, ...]]:
        if "supervise" not in d:
            return None, ()
        from heartline._util import toml_key, toml_value
        from heartline.config import parse_config

        t = self.table(("supervise",), d["supervise"])
        self.keys(t, ("programs", "defaults"), ("supervise",))
        programs = self.table(("supervise", "programs"), t.get("programs", {}))
        if not programs:
            raise self.error(("supervise",), "needs at least one [supervise.programs.NAME]")
        lines: list[str] = []
        for section in ("defaults", "programs"):
            tables = t.get(section, {})
            items = [("", tables)] if section == "defaults" else list(tables.items())
            for name, body in items:
                head = section if not name else f"{section}.{toml_key(name)}"
                lines.append(f"[{head}]")
                for k, v in self.table(("supervise", section, name), body).items():
                    # cwd is relative to this file; the daemon's config lives elsewhere.
                    value = self.resolve(v) if k == "cwd" and isinstance(v, str) else v
                    lines.append(f"{toml_key(k)} = {toml_value(value)}")
        text = "\n".join(lines) + "\n"
        try:
            parse_config(text, path=os.path.join(self.base, "heartline.toml"))
        except ConfigError as e:
            where = ("supervise", *e.key.split(".")) if e.key else ("supervise",)
            raise self.error(where, e.reason) from None
        return text, tuple(programs)

    def target(self, name: str, t: dict[str, Any], has_lab: bool) -> TargetSpec:
        w = ("targets", name)
        self.need(t, "kind", w, " | ".join(TARGET_KINDS))
        kind = self.get(t, "kind", w, _choice(TARGET_KINDS))
        allowed = {
            "program": ("kind", "program", "programs", "hosts", "via", "socket"),
            "pidfiles": ("kind", "dir", "hosts", "via"),
            "hosts": ("kind", "hosts", "via"),
            "backend": ("kind",),
            "proxy": ("kind", "listen", "upstream"),
        }[kind]
        self.keys(t, allowed, w)
        hosts = self.get(t, "hosts", w, _hosts, ())
        via = self.get(
            t,
            "via",
            w,
            _choice(("local", "lab", "ssh")),
            ("lab" if has_lab else "ssh") if hosts else "local",
        )
        if via != "local" and not hosts:
            raise self.error((*w, "via"), f"via = {via!r} needs `hosts`")
        if via == "local" and hosts:
            raise self.error((*w, "hosts"), 'hosts need via = "lab" or "ssh"')
        if kind == "hosts" and not hosts and via != "local":
            raise self.error(w, "needs `hosts` (lab host names or ssh destinations)")
        programs: tuple[str, ...] = ()
        if kind == "program":
            if ("program" in t) == ("programs" in t):
                raise self.error(w, "needs `program = NAME` or `programs = [NAMES]`")
            programs = (
                (self.get(t, "program", w, _text),)
                if "program" in t
                else (self.get(t, "programs", w, _names))
            )
            if not programs:
                raise self.error((*w, "programs"), "is empty")
        if kind == "pidfiles":
            self.need(t, "dir", w, "the directory of pidfiles, e.g. /var/vcap/sys/run")
        if kind == "backend" and not has_lab:
            raise self.error(w, "a backend target is the lab's lock server: add a [lab] table")
        listen = upstream = None
        if kind == "proxy":
            self.need(t, "listen", w, "HOST:PORT the proxy listens on, e.g. 127.0.0.1:18081")
            self.need(t, "upstream", w, "HOST:PORT of the service behind it")
            listen = self.get(t, "listen", w, _address)
            upstream = self.get(t, "upstream", w, _address)
        socket = self.get(t, "socket", w, _text)
        directory = self.get(t, "dir", w, _text)
        if directory is not None and via == "local":
            directory = self.resolve(directory)
        return TargetSpec(
            name=name,
            kind=kind,
            programs=programs,
            via=via,
            hosts=hosts,
            socket=self.resolve(socket) if socket else None,
            dir=directory,
            listen=listen,
            upstream=upstream,
        )

    def probe(
        self, name: str, t: dict[str, Any], targets: Mapping[str, TargetSpec], has_lab: bool
    ) -> ProbeSpec:
        w = ("probes", name)
        self.need(t, "kind", w, " | ".join(PROBE_KINDS))
        kind = self.get(t, "kind", w, _choice(PROBE_KINDS))
        allowed = {
            "tcp": ("address",),
            "http": ("url", "status", "body"),
            "exec": ("command",),
            "program": ("program", "socket", "via", "host"),
            "ssh-port": ("target", "port"),
        }[kind]
        self.keys(t, ("kind", "timeout", *allowed), w)
        timeout = self.get(t, "timeout", w, _dur(0.01, 600), 1.0)
        spec = ProbeSpec(name=name, kind=kind, timeout=timeout)
        if kind == "tcp":
            self.need(t, "address", w, "HOST:PORT")
            return dataclasses.replace(spec, address=self.get(t, "address", w, _address))
        if kind == "http":
            self.need(t, "url", w, "http://HOST:PORT/PATH")
            return dataclasses.replace(
                spec,
                url=self.get(t, "url", w, _url),
                status=self.get(t, "status", w, _int(100, 599), 200),
                body=self.get(t, "body", w, _text),
            )
        if kind == "exec":
            self.need(t, "command", w, "an argv list, exit 0 = healthy")
            return dataclasses.replace(spec, command=self.get(t, "command", w, _argv))
        if kind == "program":
            self.need(t, "program", w, "the supervised program's name")
            host = self.get(t, "host", w, _host)
            via = self.get(
                t,
                "via",
                w,
                _choice(("local", "lab", "ssh")),
                ("lab" if has_lab else "ssh") if host else "local",
            )
            if via != "local" and not host:
                raise self.error((*w, "via"), f"via = {via!r} needs `host`")
            socket = self.get(t, "socket", w, _text)
            return dataclasses.replace(
                spec,
                program=self.get(t, "program", w, _text),
                via=via,
                host=host,
                socket=self.resolve(socket) if socket else None,
            )
        self.need(t, "target", w, "a hosts target whose every host's ssh port is probed")
        target = self.get(t, "target", w, _text)
        if target not in targets or targets[target].kind != "hosts":
            raise self.error((*w, "target"), f"no hosts target named {target!r}")
        return dataclasses.replace(
            spec, target=target, port=self.get(t, "port", w, _int(1, 65535), 22)
        )

    def fault(
        self,
        name: str,
        t: dict[str, Any],
        targets: Mapping[str, TargetSpec],
        probes: Mapping[str, ProbeSpec],
    ) -> FaultSpec:
        w = ("faults", name)
        self.need(t, "kind", w, " | ".join(FAULTS))
        kind = self.get(t, "kind", w, _choice(tuple(FAULTS)))
        extra = {
            "signal": ("signal",),
            "stop": ("for",),
            "crash": ("restart_after",),
            "partition": ("for", "other"),
            "drop-port": ("for", "port"),
            "proxy": ("for", "toxic"),
            "cpu": ("for", "workers"),
            "memory": ("for", "size"),
            "disk-full": ("for", "path", "limit"),
            "backend-kill": ("restart_after",),
        }.get(kind, ())
        self.keys(t, ("kind", "target", "pick", "count", "recover_within", "probes", *extra), w)
        self.need(t, "target", w, "the name of a [targets.NAME] table")
        target = self.get(t, "target", w, _text)
        if target not in targets:
            raise self.error((*w, "target"), f"no target named {target!r}")
        tk = targets[target].kind
        if tk not in FAULTS[kind][1]:
            raise self.error(
                (*w, "kind"),
                f"{kind!r} cannot hit a {tk} target (it hits: {', '.join(FAULTS[kind][1])})",
            )
        if kind in ("partition", "drop-port") and targets[target].via != "lab":
            raise self.error(
                (*w, "target"),
                f"{kind} works on lab hosts only (nftables inside "
                "their namespaces, never on this machine's own network)",
            )
        f = FaultSpec(
            name=name,
            kind=kind,
            target=target,
            pick=self.get(t, "pick", w, _choice(PICKS), "all"),
            count=self.get(t, "count", w, _int(1, 1_000_000)),
            recover_within=self.get(t, "recover_within", w, _dur(0.01, 86400)),
            probes=self.get(t, "probes", w, _names, ()),
        )
        for p in f.probes:
            if p not in probes:
                raise self.error((*w, "probes"), f"no probe named {p!r}")
        if "for" in extra:
            self.need(t, "for", w, 'how long the fault holds, e.g. "3s"')
            f = dataclasses.replace(f, duration=self.get(t, "for", w, _dur(0.01, 86400)))
        if kind == "signal":
            self.need(t, "signal", w, 'a signal name or number, e.g. "HUP"')
            f = dataclasses.replace(f, signal=self.get(t, "signal", w, _signal))
        elif kind == "term":
            f = dataclasses.replace(f, signal=15)
        elif kind == "stop":
            f = dataclasses.replace(f, signal=19)
        if kind in ("crash", "backend-kill"):
            f = dataclasses.replace(
                f, restart_after=self.get(t, "restart_after", w, _dur(0, 86400))
            )
        if kind == "partition":
            self.need(t, "other", w, 'a hosts target, or "backend"')
            other = self.get(t, "other", w, _text)
            if other != "backend" and (
                other not in targets
                or targets[other].kind != "hosts"
                or targets[other].via != "lab"
            ):
                raise self.error(
                    (*w, "other"), f'no lab hosts target named {other!r} (or "backend")'
                )
            f = dataclasses.replace(f, other=other)
        if kind == "drop-port":
            self.need(t, "port", w, "a TCP port")
            f = dataclasses.replace(f, port=self.get(t, "port", w, _int(1, 65535)))
        if kind == "proxy":
            self.need(t, "toxic", w, 'e.g. "latency 200ms", "reset", "blackhole"')
            f = dataclasses.replace(f, toxic=self.get(t, "toxic", w, _toxic))
        if kind == "cpu":
            f = dataclasses.replace(
                f, workers=self.get(t, "workers", w, _int(1, 256), os.cpu_count() or 1)
            )
        if kind == "memory":
            self.need(t, "size", w, 'how much memory to hold, e.g. "256MiB"')
            f = dataclasses.replace(f, size=self.get(t, "size", w, _size(1 << 20, 1 << 40)))
        if kind == "disk-full":
            self.need(t, "path", w, "a directory on the file system to fill")
            path = self.get(t, "path", w, _text)
            f = dataclasses.replace(
                f,
                path=path if targets[target].via != "local" else self.resolve(path),
                limit=self.get(t, "limit", w, _size(1 << 20, 1 << 50), 1 << 30),
            )
        return f


# --- value checks (each raises _Bad with the user's fix) -------------------------------------
def _kind(v: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(v), type(v).__name__)


def _text(v: object) -> str:
    if not isinstance(v, str):
        raise _Bad(f"expected a string, got {_kind(v)}")
    if "\0" in v:
        raise _Bad("contains a NUL character")
    return v


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"expected true or false, got {_kind(v)}")
    return v


def _int(lo: int, hi: int) -> Callable[[object], int]:
    def check(v: object) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad(f"expected an integer, got {_kind(v)}")
        if not lo <= v <= hi:
            raise _Bad(f"must be between {lo} and {hi}")
        return v

    return check


def _number(lo: float, hi: float) -> Callable[[object], float]:
    def check(v: object) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _Bad(f"expected a number, got {_kind(v)}")
        if not (math.isfinite(v) and lo <= v <= hi):
            raise _Bad(f"must be between {lo:g} and {hi:g}")
        return float(v)

    return check


def _dur(lo: float, hi: float) -> Callable[[object], float]:
    def check(v: object) -> float:
        try:
            seconds = parse_duration(v)
        except ValueError as e:
            raise _Bad(str(e)) from None
        if not (math.isfinite(seconds) and lo <= seconds <= hi):
            raise _Bad(f"must be between {lo:g}s and {hi:g}s")
        return seconds

    return check


def _size(lo: int, hi: int) -> Callable[[object], int]:
    def check(v: object) -> int:
        try:
            n = parse_size(v)
        except ValueError as e:
            raise _Bad(str(e)) from None
        if not lo <= n <= hi:
            raise _Bad(f"must be between {lo} and {hi} bytes")
        return n

    return check


def _choice(options: tuple[str, ...]) -> Callable[[object], str]:
    def check(v: object) -> str:
        if v not in options:
            raise _Bad(f"expected one of {', '.join(options)}; got {v!r}")
        return str(v)

    return check


def _names(v: object) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Bad(f"expected an array of names, got {_kind(v)}")
    if len(set(v)) != len(v):
        raise _Bad("names a thing twice")
    return tuple(v)


def _argv(v: object) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise _Bad('expected an argv list of strings, e.g. ["curl", "-f", "URL"]')
    if any("\0" in x for x in v):
        raise _Bad("contains a NUL character")
    return tuple(v)


def _host(v: object) -> str:
    s = _text(v)
    if not _HOST.fullmatch(s) or s.startswith("-"):
        raise _Bad(f"not a host name or ssh destination: {s!r}")
    return s


def _hosts(v: object) -> tuple[str, ...]:
    names = _names(v)
    if not names:
        raise _Bad("is empty")
    return tuple(_host(h) for h in names)


def _address(v: object) -> str:
    s = _text(v)
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _Bad(f"expected HOST:PORT, got {s!r}")
    return s


def _url(v: object) -> str:
    s = _text(v)
    if not re.fullmatch(r"http://[^/\s?#]+(?:[/?#]\S*)?", s):
        raise _Bad(f"expected an http:// URL, got {s!r}")
    return s


def _signal(v: object) -> int:
    from heartline.config import parse_signal

    try:
        return parse_signal(v)
    except ValueError as e:
        raise _Bad(str(e)) from None


def _toxic(v: object) -> str:
    s = _text(v)
    from heartline.chaos._proxy import Toxic
    from heartline.errors import UsageError

    try:
        Toxic.parse(s)
    except UsageError as e:
        raise _Bad(str(e)) from None
    return s
