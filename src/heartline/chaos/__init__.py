"""Crash-recovery experiments: faults that always undo, probes at a fixed resolution, time to
detect and to recover, reports; a fault proxy; a lock workload and its history checker.

Names load on first use: `heartline chaos check` does not pay for the proxy or the runner.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heartline.chaos._html import render_html
    from heartline.chaos._proxy import FaultProxy, Toxic
    from heartline.chaos._proxy import main as proxy_main
    from heartline.chaos._runner import OUTCOME_ERRORS, Options, plan, run_experiment
    from heartline.chaos._spec import (
        FAULTS,
        BlastRadius,
        Experiment,
        FaultSpec,
        ProbeSpec,
        RunSpec,
        TargetSpec,
        load_experiment,
        parse_experiment,
    )
    from heartline.chaos._undo import undo_left_behind

#: Public name -> "module" (the same name there) or "module:name".
_WHERE: dict[str, str] = {
    "FaultProxy": "_proxy",
    "Toxic": "_proxy",
    "proxy_main": "_proxy:main",
    "render_html": "_html",
    "OUTCOME_ERRORS": "_runner",
    "Options": "_runner",
    "plan": "_runner",
    "run_experiment": "_runner",
    "FAULTS": "_spec",
    "BlastRadius": "_spec",
    "Experiment": "_spec",
    "FaultSpec": "_spec",
    "ProbeSpec": "_spec",
    "RunSpec": "_spec",
    "TargetSpec": "_spec",
    "load_experiment": "_spec",
    "parse_experiment": "_spec",
    "undo_left_behind": "_undo",
}

__all__ = [
    "FAULTS",
    "OUTCOME_ERRORS",
    "BlastRadius",
    "Experiment",
    "FaultProxy",
    "FaultSpec",
    "Options",
    "ProbeSpec",
    "RunSpec",
    "TargetSpec",
    "Toxic",
    "load_experiment",
    "parse_experiment",
    "plan",
    "proxy_main",
    "render_html",
    "run_experiment",
    "undo_left_behind",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attr = where.partition(":")
    value = getattr(import_module(f"heartline.chaos.{module}"), attr or name)
    globals()[name] = value
    return value
