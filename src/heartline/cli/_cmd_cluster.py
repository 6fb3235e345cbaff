"""`heartline hosts` and `heartline place`: the cluster's hosts, and running a command on the
best of them."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from heartline.cli._main import client, config_path, echo
from heartline.errors import NotInCluster, UsageError

if TYPE_CHECKING:
    from heartline.api import HostInfo
    from heartline.cluster import Request
    from heartline.config import ClusterSpec


def _cluster(args: argparse.Namespace) -> ClusterSpec:
    from heartline.config import load_config

    path = config_path(args)
    cluster = load_config(path).cluster
    if cluster is None:
        raise NotInCluster(
            f"{path} has no [cluster] section: add one (see `heartline init`), or pass the "
            "cluster's config with -c FILE"
        )
    return cluster


@contextlib.contextmanager
def _backend_named(args: argparse.Namespace) -> Iterator[None]:
    """The lock layer's advice names `--server`; here the backend comes from [cluster]."""
    from heartline.errors import LockServerUnreachable

    try:
        yield
    except LockServerUnreachable as e:
        text = str(e).replace(
            "is --server right?", f"is [cluster] backend in {config_path(args)} right?"
        )
        raise LockServerUnreachable(text) from None


def _log_to_stderr() -> None:
    from heartline.lock import log_to_stderr_when_used

    log_to_stderr_when_used()


def _size(n: int) -> str:
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n}B"


def hosts_table(infos: list[HostInfo]) -> str:
    head = (
        f"{'HOST':<14} {'STATE':<13} {'AGE':>6} {'CPUS':>4} {'RUNNABLE':>8} {'BUSY':>5} "
        f"{'MEM FREE':>8} {'PSI CPU':>7} {'PROGS':>5} {'HOLDS':>5}  LABELS"
    )
    lines = [head]
    for h in infos:
        r = h["report"]
        age = "-" if h["age"] is None else f"{h['age']:.1f}s"
        if r is None:
            lines.append(f"{h['name']:<14} {h['state']:<13} {age:>6}")
            continue
        busy = "-" if r["cpu_busy"] is None else f"{r['cpu_busy']:.0f}%"
        psi = "-" if not r["psi"] or "cpu" not in r["psi"] else f"{r['psi']['cpu']:.1f}"
        held = sum(x["cpus"] for x in h["holds"])
        labels = ",".join(r["labels"]) or "-"
        lines.append(
            f"{h['name']:<14} {h['state']:<13} {age:>6} {r['cpus']:>4} {r['runnable']:>8} "
            f"{busy:>5} {_size(r['mem_available']):>8} {psi:>7} {r['programs']:>5} "
            f"{held:>5g}  {labels}"
        )
    return "\n".join(lines) + "\n"


def cmd_hosts(args: argparse.Namespace) -> None:
    with _backend_named(args):
        _hosts(args)


def _hosts(args: argparse.Namespace) -> None:
    from heartline.cluster import hosts, open_store
    from heartline.cluster import wire as cluster_wire

    spec = _cluster(args)
    _log_to_stderr()
    store = open_store(spec, ttl=_ttl(spec), label="heartline hosts")
    try:
        if not args.watch:
            infos = hosts(spec, store.entries(cluster_wire.PREFIX))
            echo(json.dumps({"hosts": infos}, indent=2) + "\n" if args.json else hosts_table(infos))
            return
        mirror = store.watch(cluster_wire.PREFIX)
        try:
            while True:
                infos = hosts(spec, mirror.snapshot().values())
                if args.json:
                    echo(json.dumps({"at": time.time(), "hosts": infos}) + "\n")
                else:
                    echo("\x1b[H\x1b[2J" if sys.stdout.isatty() else "\n")
                    echo(hosts_table(infos))
                # Redraw on every change, and each second so that ages move on.
                mirror.wait_changed(1.0)
        finally:
            mirror.close()
    finally:
        store.close()


def _ttl(spec: ClusterSpec) -> float:
    from heartline.cluster import session_ttl

    return session_ttl(spec.report_interval)


def parse_need(text: str) -> tuple[float, int]:
    """``cpus=N,mem=SIZE`` (either part optional) -> (cpus, bytes)."""
    from heartline._util import parse_size

    cpus, mem = 1.0, 0
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        try:
            if not eq:
                raise ValueError
            if key == "cpus":
                cpus = float(value)
                if not 0 <= cpus <= 65536:
                    raise ValueError
            elif key == "mem":
                mem = parse_size(value)
            else:
                raise ValueError
        except ValueError:
            raise UsageError(
                f"--need {text!r}: write cpus=N and/or mem=SIZE, e.g. --need cpus=2,mem=512M"
            ) from None
    return cpus, mem


def _request(args: argparse.Namespace) -> Request:
    from heartline.cluster import Request

    cpus, mem = parse_need(args.need)
    return Request(cpus=cpus, mem=mem, labels=tuple(args.label), group=args.group)


def cmd_place(args: argparse.Namespace) -> int:
    with _backend_named(args):
        return _place(args)


def _place(args: argparse.Namespace) -> int:
    from heartline.cluster import decide, explain, open_store, run_placed

    spec = _cluster(args)
    req = _request(args)
    command = list(args.command)
    if not args.print_only and not command:
        raise UsageError("place: give the command after --: heartline place -- CMD ARGS...")
    _log_to_stderr()
    if args.print_only:
        store = open_store(spec, ttl=_ttl(spec), label="heartline place --print")
        try:
            placed = decide(spec, store, req, command=command, charge=False)
        finally:
            store.close()
        if args.explain:
            explain(placed.decision, sys.stderr)
        echo(placed.decision.host + "\n")
        return 0
    return run_placed(spec, req, command, explain_to=sys.stderr if args.explain else None)


def cmd_rolling(args: argparse.Namespace) -> int:
    from heartline._util import parse_duration
    from heartline.cluster import Gate, Notifier, Roll

    spec = _cluster(args)
    durations = {}
    for opt in ("timeout", "pause"):
        try:
            durations[opt] = parse_duration(getattr(args, opt))
        except ValueError as e:
            raise UsageError(f"--{opt} {getattr(args, opt)!r}: {e}") from None
    for opt in ("check", "notify"):
        url = getattr(args, opt)
        if url is not None and not url.startswith(("http://", "https://")):
            raise UsageError(f"--{opt} {url!r}: give an http:// or https:// URL")
    if not 1 <= args.healthy <= 1000:
        raise UsageError(f"--healthy {args.healthy}: give a number of passes from 1 to 1000")
    gate = None
    if args.check or args.check_exec:
        gate = Gate(url=args.check, exec=args.check_exec, healthy=args.healthy,
                    timeout=durations["timeout"])  # fmt: skip
    _log_to_stderr()

    def warn(text: str) -> None:
        sys.stderr.write(f"heartline: {text}\n")

    notifier = Notifier(args.notify, warn=warn) if args.notify else None

    def emit(event: dict[str, Any]) -> None:
        if notifier is not None:
            notifier(event)
        if args.json:
            echo(json.dumps(event) + "\n")
            return
        sys.stderr.write(f"heartline: {_event_text(event)}\n")
        sys.stderr.flush()

    roll = Roll(spec, args.group, args.command, gate=gate, lock=args.lock,
                pause=durations["pause"], emit=emit, order=args.order,
                resume=args.resume)  # fmt: skip
    try:
        with _backend_named(args):
            roll.run()
    finally:
        if notifier is not None:
            notifier.close()
    return 0


def _event_text(e: dict[str, Any]) -> str:
    where = f"{e['host']}: " if e.get("host") else ""
    at = f"[{e['elapsed']:.1f}s] "
    kind = e["event"]
    if kind == "gate":
        verdict = "ok" if e["ok"] else "not yet"
        return (f"{at}{where}gate attempt {e['attempt']}: {verdict} ({e['why']}), "
                f"{e['passes']} in a row")  # fmt: skip
    if kind == "host started":
        return f"{at}{where}running the command ({e['step']})"
    if kind == "host done":
        return f"{at}{where}done in {e['seconds']:.1f}s"
    if kind == "started":
        return f"{at}holding lock {e['lock']} (token {e['token']}): {', '.join(e['hosts'])}"
    if kind == "waiting for the lock":
        return f"{at}waiting for lock {e['lock']}"
    if kind == "finished":
        return f"{at}finished: {e['hosts']} hosts"
    extra = {k: v for k, v in e.items() if k not in ("event", "host", "elapsed")}
    return f"{at}{where}{kind} {json.dumps(extra)}"


def cmd_move(args: argparse.Namespace) -> int:
    """`heartline move NAME [--to HOST]`: through this host's daemon, which watches the
    singleton's seats on every host and waits until it runs on the target."""
    with client(args) as c:
        out = c.post("/v1/move", {"name": args.name, "to": args.to})
    if args.json:
        from heartline.cli._render import to_json

        echo(to_json(out))
    else:
        echo(f"{out['name']}: moved from {out['from']} to {out['to']} (token {out['token']}) "
             f"in {out['took']:.2f}s\n")  # fmt: skip
    return 0
