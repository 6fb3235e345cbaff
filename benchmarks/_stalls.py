"""How long a report keeps a program's main thread from running, measured the same way for
heartline (reports.py) and its peer oslo.reports (peers_inside.py).

The child's main thread spins reading ``time.perf_counter()`` and records every gap over 0.5 ms
with the monotonic time it ended; a gap that overlaps the window from the signal to the finished
report is time the report took from the main thread, and the largest gap outside every window is
the noise floor.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

Gap = tuple[float, float]  # (monotonic end, seconds)
Window = tuple[float, float]  # (monotonic start, monotonic end)


def spin_source(ready: str) -> str:
    """Child source (module level, needing ``json``, ``sys``, ``threading`` and ``time``): print
    ``ready`` (the arguments of a print call), then spin recording gaps until a line comes on
    stdin, then print the gaps as one JSON line."""
    return textwrap.dedent(f"""\
        done = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.readline(), done.set()), daemon=True).start()
        gaps = []  # (monotonic end, gap seconds) for every gap over 0.5 ms
        print({ready}, flush=True)
        pc, mono = time.perf_counter, time.monotonic
        last = pc()
        n = 0
        while True:
            now = pc()
            gap = now - last
            last = now
            if gap > 0.0005:
                gaps.append((mono(), gap))
            n += 1
            if n % 10000 == 0 and done.is_set():
                break
        print(json.dumps(gaps), flush=True)
    """)


def overlaps(end: float, gap: float, t0: float, t1: float) -> bool:
    return end >= t0 and end - gap <= t1


def stalls(gaps: Sequence[Gap], windows: Sequence[Window]) -> tuple[list[float], float]:
    """The largest gap overlapping each window (0 when none does), and the largest gap
    outside every window (the noise floor), in seconds."""
    blocked = [
        max((gap for end, gap in gaps if overlaps(end, gap, t0, t1)), default=0.0)
        for t0, t1 in windows
    ]
    outside = [
        gap for end, gap in gaps if not any(overlaps(end, gap, t0, t1) for t0, t1 in windows)
    ]
    return blocked, max(outside, default=0.0)
