"""Where the cluster keeps its entries in the backend, and reading them back safely.

Reports and holds are written by other hosts: every field is checked, and an entry that does
not pass is skipped (with the reason, for ``hosts --explain`` and the log), never trusted
and never a crash.
"""

from __future__ import annotations

import json
import math
from typing import Any

from heartline.api import CLUSTER_FORMAT, HoldRecord, HostReport
from heartline.errors import ClusterError

PREFIX = "heartline/cluster/"
REPORTS = PREFIX + "reports/"
HOLDS = PREFIX + "holds/"
#: The short lock that serialises placement decisions across every chooser.
PLACE_LOCK = "heartline-cluster-place"


def report_key(host: str) -> str:
    return REPORTS + host


def hold_key(host: str, hold_id: str) -> str:
    return f"{HOLDS}{host}/{hold_id}"


def encode(doc: HostReport | HoldRecord) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True)


class BadEntry(ClusterError):
    """An entry another host wrote that does not pass the checks (skipped, never raised
    beyond the reader)."""


def _num(doc: dict[str, Any], key: str, *, lo: float = 0.0, hi: float = 1e18) -> float:
    v = doc.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadEntry(f"{key} is not a number")
    if not (math.isfinite(v) and lo <= v <= hi):
        raise BadEntry(f"{key} is out of range")
    return float(v)


def _int(doc: dict[str, Any], key: str, *, hi: int = 1 << 62) -> int:
    v = doc.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
        raise BadEntry(f"{key} is not a count")
    return v


def _text(doc: dict[str, Any], key: str, *, limit: int = 256) -> str:
    v = doc.get(key)
    if not isinstance(v, str) or len(v) > limit or not v.isprintable():
        raise BadEntry(f"{key} is not short printable text")
    return v


def _names(doc: dict[str, Any], key: str) -> list[str]:
    v = doc.get(key)
    if not isinstance(v, list) or len(v) > 256:
        raise BadEntry(f"{key} is not a list")
    return [_text({"x": x}, "x", limit=64) for x in v]


def _load_json(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise BadEntry("not JSON") from None
    if not isinstance(doc, dict):
        raise BadEntry("not a JSON object")
    if doc.get("v") != CLUSTER_FORMAT:
        raise BadEntry(f"format {doc.get('v')!r}, not {CLUSTER_FORMAT}")
    return doc


def decode_report(text: str) -> HostReport:
    doc = _load_json(text)
    psi_raw = doc.get("psi")
    psi: dict[str, float] | None = None
    if psi_raw is not None:
        if not isinstance(psi_raw, dict) or len(psi_raw) > 8:
            raise BadEntry("psi is not an object")
        psi = {_text({"k": k}, "k", limit=16): _num(psi_raw, k, hi=100) for k in psi_raw}
    cap = doc.get("capacity")
    if not isinstance(cap, dict):
        raise BadEntry("capacity is not an object")
    load = doc.get("load")
    if not isinstance(load, list) or len(load) > 3:
        raise BadEntry("load is not a list of 3 numbers")
    busy = doc.get("cpu_busy")
    return HostReport(
        v=CLUSTER_FORMAT,
        host=_text(doc, "host", limit=63),
        sampled=_num(doc, "sampled"),
        seq=_int(doc, "seq"),
        interval=_num(doc, "interval", lo=0.05, hi=3600),
        cpus=max(1, _int(doc, "cpus", hi=1 << 20)),
        runnable=_int(doc, "runnable", hi=1 << 30),
        load=[_num({"x": x}, "x", hi=1e9) for x in load],
        cpu_busy=None if busy is None else _num(doc, "cpu_busy", hi=100),
        mem_available=_int(doc, "mem_available"),
        mem_total=_int(doc, "mem_total"),
        psi=psi,
        programs=_int(doc, "programs", hi=1 << 30),
        held=(held := _num(doc, "held", hi=1 << 20) if "held" in doc else 0.0),
        other=(
            _num(doc, "other", hi=1 << 30)
            if "other" in doc
            else max(_int(doc, "runnable", hi=1 << 30) - held, 0.0)
        ),
        labels=_names(doc, "labels"),
        groups=_names(doc, "groups"),
        capacity={
            "cpus": None if cap.get("cpus") is None else _num(cap, "cpus", hi=1 << 20),
            "mem": None if cap.get("mem") is None else _int(cap, "mem"),
        },
        address=_text(doc, "address", limit=255),
    )


def decode_hold(text: str) -> HoldRecord:
    doc = _load_json(text)
    return HoldRecord(
        v=CLUSTER_FORMAT,
        id=_text(doc, "id", limit=64),
        host=_text(doc, "host", limit=63),
        cpus=_num(doc, "cpus", hi=1 << 20),
        mem=_int(doc, "mem"),
        who=_text(doc, "who", limit=128),
        command=_text(doc, "command", limit=256),
        at=_num(doc, "at"),
    )
