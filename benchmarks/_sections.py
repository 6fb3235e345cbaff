"""benchmarks/RESULTS.md is written by several scripts: run.py writes the file's head and its
tables, and each other script (liveness.py, inside.py, locks.py) owns one section between
``<!-- section: NAME -->`` and ``<!-- /section -->`` markers, which the others carry over."""

from __future__ import annotations

import os
import re

from _common import BENCH_DIR

RESULTS_MD = os.path.join(BENCH_DIR, "RESULTS.md")


def _section_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- section: {name} -->.*?<!-- /section -->\n?", re.S)


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
