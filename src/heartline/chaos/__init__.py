"""Crash-recovery experiments: faults that always undo, probes at a fixed resolution, time to
detect and to recover, reports; a fault proxy; a lock workload and its history checker.

Names load on first use: `heartline chaos check` does not pay for the proxy or the runner.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heartline.chaos._html import render_html

_WHERE: dict[str, str] = {
    "render_html": "_html",
}

__all__ = [
    "render_html",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"heartline.chaos.{where}"), name)
    globals()[name] = value
    return value
