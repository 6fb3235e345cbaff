"""benchmarks/RESULTS.md is written by several scripts: run.py writes the file's head and its
tables, and each other script (liveness.py, inside.py, locks.py) owns one section between
``<!-- section: NAME -->`` and ``<!-- /section -->`` markers, which the others carry over."""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Callable
from typing import Any

from _common import BENCH_DIR

RESULTS_MD = os.path.join(BENCH_DIR, "RESULTS.md")


def _section_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- section: {name} -->.*?<!-- /section -->\n?", re.S)


def section_text(name: str, lines: list[str]) -> str:
    """``lines`` as the text of the section ``name``, between its markers."""
    return "\n".join([f"<!-- section: {name} -->", *lines, "<!-- /section -->"]) + "\n"


def kept_sections(path: str = RESULTS_MD) -> str:
    """Every marked section of the file at ``path``, in order ("" when there is none)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    return "".join(m.group(0) for m in _section_pattern(r"[\w-]+").finditer(text))


def write_section(text: str, name: str) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md with ``text``."""
    try:
        with open(RESULTS_MD) as f:
            old = f.read()
    except OSError:
        old = "# heartline benchmark results\n"
    pattern = _section_pattern(name)
    new = pattern.sub(lambda _m: text, old) if pattern.search(old) else old.rstrip() + "\n\n" + text
    with open(RESULTS_MD, "w") as f:
        f.write(new)


def publish(text: str, name: str, results: object, json_path: str, *, print_only: bool) -> None:
    """Keep ``results`` in ``json_path`` and write ``text`` as the section ``name`` of
    RESULTS.md; with ``print_only``, print ``text`` and write nothing."""
    if print_only:
        print(text)
        return
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(results, f, indent=2)
    write_section(text, name)


def load_average() -> str:
    return "{:.2f} / {:.2f} / {:.2f}".format(*os.getloadavg())


def measure_and_publish(
    name: str,
    measure: Callable[[], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
    json_path: str,
    *,
    print_only: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """``measure()``, with the load average before and after it (``results["load"]``) and the
    time (``results["when"]``), published as the section ``name``. A result that says
    ``skipped`` leaves RESULTS.md as it was (with ``print_only`` its section is printed)."""
    load0 = load_average()
    results = measure()
    results["load"] = [load0, load_average()]
    if "skipped" in results:
        log(f"skipped: {results['skipped']}")
        if not print_only:
            return results
    results["when"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    publish(render(results), name, results, json_path, print_only=print_only)
    if not print_only:
        log(f"wrote the {name} section of benchmarks/RESULTS.md")
    return results
