"""The cluster as one read sees it: the backend's report and hold entries joined with what
``[cluster]`` says of each host, as the views placement scores and `heartline hosts` shows."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from heartline.api import HoldRecord, HostInfo, HostReport
from heartline.cluster._score import Hold, HostView
from heartline.cluster._wire import HOLDS, REPORTS, BadEntry, decode_hold, decode_report
from heartline.config import ClusterSpec

log = logging.getLogger(__name__)


class EntryLike(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def age(self) -> float | None: ...


@dataclass(frozen=True)
class Snapshot:
    """Every host's report and hold, read at one moment."""

    reports: dict[str, tuple[HostReport, float]]
    holds: dict[str, list[tuple[HoldRecord, float]]]
    #: Entries skipped because they did not pass the checks: (key, why).
    skipped: tuple[tuple[str, str], ...] = ()


def _age(entry: EntryLike, written_wall: float, now_wall: float) -> float:
    """Seconds since ``entry`` was written: the backend's own count when it keeps one (one
    clock for every host), else the writer's wall clock against ours."""
    if entry.age is not None:
        return max(entry.age, 0.0)
    return max(now_wall - written_wall, 0.0)


def read_snapshot(entries: Iterable[EntryLike], *, now_wall: float) -> Snapshot:
    reports: dict[str, tuple[HostReport, float]] = {}
    holds: dict[str, list[tuple[HoldRecord, float]]] = {}
    skipped: list[tuple[str, str]] = []
    for e in entries:
        try:
            if e.key.startswith(REPORTS):
                r = decode_report(e.value)
                if e.key != REPORTS + r["host"]:
                    raise BadEntry(f"says it is host {r['host']!r}")
                reports[r["host"]] = (r, _age(e, r["sampled"], now_wall))
            elif e.key.startswith(HOLDS):
                h = decode_hold(e.value)
                if not e.key.startswith(f"{HOLDS}{h['host']}/"):
                    raise BadEntry(f"says it holds host {h['host']!r}")
                holds.setdefault(h["host"], []).append((h, _age(e, h["at"], now_wall)))
        except BadEntry as err:
            skipped.append((e.key, str(err)))
    for key, why in skipped:
        log.debug("skipping cluster entry %s: %s", key, why)
    return Snapshot(reports, holds, tuple(skipped))


def host_views(spec: ClusterSpec, snap: Snapshot) -> list[HostView]:
    """One view per host that reported or that ``[cluster.hosts]``/groups name, sorted."""
    names = set(snap.reports) | set(spec.hosts) | {h for m in spec.groups.values() for h in m}
    out = []
    for name in sorted(names):
        conf = spec.host(name)
        groups = set(spec.groups_of(name))
        labels = set(conf.labels)
        holds = tuple(
            Hold(
                id=h["id"],
                host=name,
                cpus=h["cpus"],
                mem=h["mem"],
                age=age,
                who=h["who"],
                command=h["command"],
            )
            for h, age in snap.holds.get(name, [])
        )
        got = snap.reports.get(name)
        if got is None:
            out.append(HostView(name=name, age=None, labels=frozenset(labels),
                                groups=frozenset(groups), cap_cpus=conf.cpus, cap_mem=conf.mem,
                                holds=holds))  # fmt: skip
            continue
        r, age = got
        psi = r["psi"] or {}
        out.append(
            HostView(
                name=name,
                age=age,
                interval=r["interval"],
                cpus=r["cpus"],
                runnable=r["runnable"],
                report_held=r["held"],
                report_other=r["other"],
                mem_available=r["mem_available"],
                mem_total=r["mem_total"],
                psi_cpu=psi.get("cpu"),
                labels=frozenset(labels | set(r["labels"])),
                groups=frozenset(groups | set(r["groups"])),
                cap_cpus=conf.cpus if conf.cpus is not None else r["capacity"]["cpus"],
                cap_mem=conf.mem if conf.mem is not None else r["capacity"]["mem"],
                holds=holds,
            )
        )
    return out


def host_infos(views: Iterable[HostView], snap: Snapshot) -> list[HostInfo]:
    out: list[HostInfo] = []
    for v in views:
        got = snap.reports.get(v.name)
        out.append(
            HostInfo(
                name=v.name,
                state="unknown" if v.age is None else ("up" if v.state == "up" else "unresponsive"),
                age=None if v.age is None else round(v.age, 3),
                report=got[0] if got else None,
                holds=[h for h, _ in snap.holds.get(v.name, [])],
            )
        )
    return out


def known_sets(views: Iterable[HostView]) -> tuple[set[str], set[str]]:
    """(every group, every label) any host has."""
    groups: set[str] = set()
    labels: set[str] = set()
    for v in views:
        groups |= v.groups
        labels |= v.labels
    return groups, labels
