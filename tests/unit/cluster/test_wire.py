"""Reports and holds written by other hosts are checked field by field: a bad entry is
skipped with its reason, never trusted, never a crash."""

from __future__ import annotations

import json
import random
from typing import Any, NamedTuple

import pytest

from heartline.api import CLUSTER_FORMAT
from heartline.cluster import host_views, read_snapshot, wire
from heartline.config import ClusterSpec, HostSpec

decode_hold, decode_report, encode = wire.decode_hold, wire.decode_report, wire.encode
hold_key, report_key = wire.hold_key, wire.report_key


class E(NamedTuple):
    key: str
    value: str
    age: float | None = None


def report(host: str = "h1", **kw: Any) -> dict[str, Any]:
    doc = {
        "v": CLUSTER_FORMAT, "host": host, "sampled": 1000.0, "seq": 1, "interval": 2.0,
        "cpus": 4, "runnable": 2, "load": [0.5, 0.4, 0.3], "cpu_busy": 12.5,
        "mem_available": 1 << 30, "mem_total": 2 << 30, "psi": {"cpu": 1.5},
        "programs": 3, "held": 1.5, "other": 0.5, "labels": ["ssd"], "groups": ["web"],
        "capacity": {"cpus": None, "mem": None}, "address": "198.18.0.11",
    }  # fmt: skip
    doc.update(kw)
    return doc


def hold(host: str = "h1", **kw: Any) -> dict[str, Any]:
    doc = {"v": CLUSTER_FORMAT, "id": "abc", "host": host, "cpus": 1.0, "mem": 0,
           "who": "c:1", "command": "make", "at": 1000.0}  # fmt: skip
    doc.update(kw)
    return doc


def test_a_good_report_and_hold_round_trip() -> None:
    """What a reporter encodes, a reader decodes unchanged."""
    r = decode_report(json.dumps(report()))
    assert decode_report(encode(r)) == r
    h = decode_hold(json.dumps(hold()))
    assert decode_hold(encode(h)) == h


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"host": 5},
        {"host": "x" * 300},
        {"host": "a\nb"},
        {"sampled": "now"},
        {"seq": -1},
        {"cpus": True},
        {"runnable": 1.5},
        {"load": "high"},
        {"load": [1e400]},
        {"cpu_busy": 101},
        {"psi": []},
        {"psi": {"cpu": "x"}},
        {"labels": "ssd"},
        {"labels": [1]},
        {"capacity": None},
        {"capacity": {"cpus": -1}},
        {"address": None},
        {"interval": 0},
        {"mem_total": -5},
        {"held": "x"},
        {"held": -1},
        {"held": None},
        {"other": "x"},
        {"other": -2},
    ],
)
def test_each_bad_report_field_is_refused(change: dict[str, Any]) -> None:
    """A field of the wrong type or range makes the whole report unusable."""
    doc = report(**change)
    entries = [E(report_key("h1"), json.dumps(doc))]
    snap = read_snapshot(entries, now_wall=1001.0)
    assert snap.reports == {} and len(snap.skipped) == 1


def test_a_report_without_held_counts_no_holds() -> None:
    """(A report of a daemon that did not say: none of its runnable tasks is a hold's.)"""
    doc = report()
    del doc["held"], doc["other"]
    assert decode_report(json.dumps(doc))["held"] == 0.0
    assert decode_report(json.dumps(doc))["other"] == 2.0  # all its runnable tasks
    assert decode_report(json.dumps(report()))["held"] == 1.5


def test_a_report_filed_under_another_hosts_key_is_refused() -> None:
    """A host cannot speak for another: the key and the report's host must agree."""
    snap = read_snapshot([E(report_key("h2"), json.dumps(report("h1")))], now_wall=1001.0)
    assert snap.reports == {} and "says it is host" in snap.skipped[0][1]
    snap = read_snapshot([E(hold_key("h2", "x"), json.dumps(hold("h1")))], now_wall=1001.0)
    assert snap.holds == {} and "holds host" in snap.skipped[0][1]


def test_ages_come_from_the_backend_when_it_keeps_them_else_from_wall_clocks() -> None:
    """lockd says how old an entry is; etcd cannot, and the writer's clock stands in."""
    entries = [E(report_key("h1"), json.dumps(report(sampled=990.0)), 0.25),
               E(report_key("h2"), json.dumps(report("h2", sampled=995.0)), None)]  # fmt: skip
    snap = read_snapshot(entries, now_wall=1000.0)
    assert snap.reports["h1"][1] == 0.25 and snap.reports["h2"][1] == 5.0


def test_views_join_reports_with_the_config() -> None:
    """Labels and groups are the union of config and report; declared capacity in the config
    wins; a listed host that never reported is a view in state unknown."""
    spec = ClusterSpec(
        groups={"batch": ("h1", "h3")},
        hosts={"h1": HostSpec("h1", labels=("gpu",), cpus=2.0), "h3": HostSpec("h3")},
    )
    snap = read_snapshot(
        [E(report_key("h1"), json.dumps(report()), 0.1),
         E(hold_key("h1", "a"), json.dumps(hold()), 0.05)],
        now_wall=1000.0,
    )  # fmt: skip
    views = {v.name: v for v in host_views(spec, snap)}
    assert set(views) == {"h1", "h3"}
    assert views["h1"].labels == {"ssd", "gpu"} and views["h1"].groups == {"web", "batch"}
    assert views["h1"].cap_cpus == 2.0 and len(views["h1"].holds) == 1
    assert views["h3"].state == "unknown"


def test_random_garbage_never_crashes_the_reader() -> None:
    """Fuzz: mutated reports and holds (bytes flipped, fields dropped, odd JSON) are either
    read or skipped, and the reader always returns."""
    rng = random.Random(1234)
    good = [json.dumps(report()), json.dumps(hold())]
    odd: list[Any] = [None, True, -1, 1e308, "x", [], {}, [[[]]], {"a": {"b": None}}, 2**70]
    for i in range(3000):
        text = rng.choice(good)
        roll = rng.random()
        if roll < 0.4:
            b = bytearray(text.encode())
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            text = b.decode("utf-8", "replace")
        elif roll < 0.8:
            doc = json.loads(text)
            key = rng.choice(list(doc))
            if rng.random() < 0.5:
                del doc[key]
            else:
                doc[key] = rng.choice(odd)
            text = json.dumps(doc)
        else:
            text = "[" * rng.randint(1, 5000)
        key = report_key("h1") if "sampled" in text else hold_key("h1", str(i))
        snap = read_snapshot([E(key, text)], now_wall=1000.0)
        assert len(snap.reports) + sum(map(len, snap.holds.values())) + len(snap.skipped) == 1
