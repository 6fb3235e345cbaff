"""The cluster: hosts' live load reports, load-aware placement over SSH, and lab hosts.

Names load on first use, so `heartline hosts` does not pay for the lab and `heartline lab`
does not pay for placement.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heartline.cluster import _wire as wire
    from heartline.cluster._lab import HostStatus, Lab, LabStatus, lab_unavailable
    from heartline.cluster._labfiles import LAB_MAX_HOSTS, default_lab_dir
    from heartline.cluster._load import LoadSampler, Sample, count_runnable
    from heartline.cluster._place import decide, explain, hosts, read_cluster, run_placed
    from heartline.cluster._reporter import Reporter, session_ttl
    from heartline.cluster._rolling import Gate, Notifier, Roll
    from heartline.cluster._score import (
        Candidate,
        Decision,
        Hold,
        HostView,
        NoFit,
        Request,
        assess,
        charged,
        choose,
    )
    from heartline.cluster._singleton import SeatKeeper
    from heartline.cluster._ssh import Remote, Ssh
    from heartline.cluster._store import EntryStore, open_store
    from heartline.cluster._view import Snapshot, host_infos, host_views, read_snapshot

# --- load reports and placement -----------------------------------------------------------
_WHERE = {
    "LoadSampler": "_load",
    "Sample": "_load",
    "count_runnable": "_load",
    "decide": "_place",
    "explain": "_place",
    "hosts": "_place",
    "read_cluster": "_place",
    "run_placed": "_place",
    "Gate": "_rolling",
    "Notifier": "_rolling",
    "Roll": "_rolling",
    "Reporter": "_reporter",
    "session_ttl": "_reporter",
    "Candidate": "_score",
    "Decision": "_score",
    "Hold": "_score",
    "HostView": "_score",
    "NoFit": "_score",
    "Request": "_score",
    "assess": "_score",
    "charged": "_score",
    "choose": "_score",
    "SeatKeeper": "_singleton",
    "Remote": "_ssh",
    "Ssh": "_ssh",
    "EntryStore": "_store",
    "open_store": "_store",
    "Snapshot": "_view",
    "host_infos": "_view",
    "host_views": "_view",
    "read_snapshot": "_view",
}
# --- lab hosts ------------------------------------------------------------------------------
_WHERE.update(
    {
        "HostStatus": "_lab",
        "Lab": "_lab",
        "LabStatus": "_lab",
        "lab_unavailable": "_lab",
        "LAB_MAX_HOSTS": "_labfiles",
        "default_lab_dir": "_labfiles",
    }
)

__all__ = [
    "LAB_MAX_HOSTS",
    "Candidate",
    "Decision",
    "EntryStore",
    "Gate",
    "Hold",
    "HostStatus",
    "HostView",
    "Lab",
    "LabStatus",
    "LoadSampler",
    "NoFit",
    "Notifier",
    "Remote",
    "Reporter",
    "Request",
    "Roll",
    "Sample",
    "SeatKeeper",
    "Snapshot",
    "Ssh",
    "assess",
    "charged",
    "choose",
    "count_runnable",
    "decide",
    "default_lab_dir",
    "explain",
    "host_infos",
    "host_views",
    "hosts",
    "lab_unavailable",
    "open_store",
    "read_cluster",
    "read_snapshot",
    "run_placed",
    "session_ttl",
    "wire",
]


def __getattr__(name: str) -> Any:
    if name == "wire":
        return import_module("heartline.cluster._wire")
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'heartline.cluster' has no attribute {name!r}")
    value = getattr(import_module(f"heartline.cluster.{module}"), name)
    globals()[name] = value
    return value
