"""`heartline place`: choose a host from the live reports, charge a hold there, run the command.

The decision and the hold are one step under the placement lock (``PLACE_LOCK``, taken on
the caller's own backend session): a chooser that comes next already sees the hold, so a burst
of placements spreads instead of herding onto the host that looked idlest a moment ago. The
hold lives under the caller's session, so it ends when the command ends, when the caller exits,
and when the caller dies (its session goes with it).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TextIO

from heartline.api import CLUSTER_FORMAT, HoldRecord, HostInfo
from heartline.cluster._reporter import session_ttl
from heartline.cluster._score import Decision, Request, choose
from heartline.cluster._ssh import Ssh
from heartline.cluster._store import EntryStore, open_store
from heartline.cluster._view import (
    EntryLike,
    Snapshot,
    host_infos,
    host_views,
    known_sets,
    read_snapshot,
)
from heartline.cluster._wire import PLACE_LOCK, PREFIX, encode, hold_key
from heartline.config import ClusterSpec
from heartline.errors import UnknownHostSet

log = logging.getLogger(__name__)

#: How long a chooser waits for the placement lock (held for milliseconds at a time).
LOCK_WAIT = 10.0


def read_cluster(store: EntryStore) -> Snapshot:
    return read_snapshot(store.entries(PREFIX), now_wall=time.time())


def hosts(spec: ClusterSpec, entries: Iterable[EntryLike]) -> list[HostInfo]:
    """Every host as `heartline hosts` shows it, from the entries under ``PREFIX`` (a read,
    or a watch's snapshot)."""
    snap = read_snapshot(entries, now_wall=time.time())
    return host_infos(host_views(spec, snap), snap)


def _check_known(spec: ClusterSpec, snap: Snapshot, req: Request) -> None:
    groups, labels = known_sets(host_views(spec, snap))
    if req.group is not None and req.group not in groups:
        known = ", ".join(sorted(groups)) or "none"
        raise UnknownHostSet(
            f"no host group {req.group!r} (groups: {known}; declare groups in [cluster.groups])"
        )
    for lab in req.labels:
        if lab not in labels:
            known = ", ".join(sorted(labels)) or "none"
            raise UnknownHostSet(
                f"no host has label {lab!r} (labels: {known}; set them in [cluster.hosts.NAME])"
            )


@dataclass
class Placement:
    decision: Decision
    destination: str
    hold: HoldRecord | None


def decide(
    spec: ClusterSpec,
    store: EntryStore,
    req: Request,
    *,
    command: Sequence[str],
    charge: bool,
    rng: random.Random | None = None,
) -> Placement:
    """Choose under the placement lock and, with ``charge``, write the hold before letting go."""
    rng = rng or random.Random()  # noqa: S311 - spreading load, not a secret
    with store.locked(PLACE_LOCK, wait=LOCK_WAIT):
        snap = read_cluster(store)
        _check_known(spec, snap, req)
        views = host_views(spec, snap)
        decision = choose(views, req, rng)  # NoFit (NoHostFits) says why for each host
        hold = None
        if charge:
            hold = HoldRecord(
                v=CLUSTER_FORMAT,
                id=uuid.uuid4().hex[:16],
                host=decision.host,
                cpus=req.cpus,
                mem=req.mem,
                who=f"{socket.gethostname()}:{os.getpid()}",
                command=_short(command),
                at=time.time(),
            )
            store.put(hold_key(decision.host, hold["id"]), encode(hold))
    report = snap.reports.get(decision.host)
    destination = report[0]["address"] if report else spec.host(decision.host).ssh_destination
    if spec.host(decision.host).address:
        destination = spec.host(decision.host).address
    return Placement(decision, destination or decision.host, hold)


def _short(command: Sequence[str]) -> str:
    text = " ".join(command)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 200 else text[:197] + "..."


def explain(decision: Decision, out: TextIO) -> None:
    """Every candidate with its inputs, its score and why it won or lost."""
    out.write(f"heartline: placed on {decision.host} ({decision.rule})\n")
    out.write(
        f"  {'HOST':<16} {'AGE':>6} {'CPUS':>4} {'RUNNABLE':>8} {'HELD':>5} {'SCORE':>8}  VERDICT\n"
    )
    for c in decision.candidates:
        age = "-" if c.age is None else f"{c.age:.1f}s"
        score = "-" if c.score is None else f"{c.score:.3f}"
        out.write(
            f"  {c.host:<16} {age:>6} {c.cpus:>4} {c.runnable:>8} {c.held_cpus:>5g} "
            f"{score:>8}  {c.verdict}\n"
        )
    out.flush()


def run_placed(
    spec: ClusterSpec,
    req: Request,
    command: Sequence[str],
    *,
    explain_to: TextIO | None = None,
) -> int:
    """Place ``command``, run it there over SSH, and return its exit status."""
    store = open_store(spec, ttl=session_ttl(spec.report_interval), label="heartline place")
    try:
        placed = decide(spec, store, req, command=command, charge=True)
        if explain_to is not None:
            explain(placed.decision, explain_to)
        ssh = Ssh(config=spec.ssh_config, options=spec.ssh_options)
        remote = ssh.start(placed.destination, command)
        # SIGTERM and SIGHUP end the command on the far side too, as Ctrl-C does.
        previous = {}

        def stop(signum: int, _frame: FrameType | None) -> None:
            remote.stop()

        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, stop)
        try:
            return remote.wait()
        except KeyboardInterrupt:
            remote.stop()
            remote.wait()
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            remote.stop()
    finally:
        store.close()  # the hold ends with the session
