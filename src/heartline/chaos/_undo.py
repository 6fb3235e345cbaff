"""`heartline chaos undo`: run the undos that crashed runs left behind, from their journals."""

from __future__ import annotations

import shlex

from heartline.chaos._journal import Journal, journals
from heartline.errors import HeartlineError


def undo_left_behind(where: str | None = None) -> tuple[list[str], int]:
    """(what was done, one line each; how many undos failed)."""
    lines: list[str] = []
    failed = 0
    for path in journals(where):
        try:
            j = Journal.read(path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            lines.append(f"{path}: unreadable journal ({e}); left as it is")
            continue
        if j.controller_alive():
            lines.append(
                f"run {j.run} is still running (pid {j.pid}): stop it with Ctrl-C, "
                "SIGTERM or its halt file; it undoes its own faults"
            )
            continue
        todo = j.open_leases()
        if not todo:
            lines.append(f"run {j.run}: nothing left applied")
        for lease in todo:
            if lease.undo is None:
                j.mark(lease, "gone")
                lines.append(f"run {j.run}: {lease.label}: ends by itself")
                continue
            try:
                done = lease.place.run(lease.undo, timeout=90.0)
            except HeartlineError as e:
                j.mark(lease, "applied", str(e))
                lines.append(f"run {j.run}: {lease.label}: undo failed: {e}")
                failed += 1
                continue
            if done.returncode == 0:
                j.mark(lease, "undone")
                lines.append(f"run {j.run}: {lease.label}: undone ({shlex.join(lease.undo)})")
            else:
                why = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
                # An undo that finds nothing to undo (the agent got there first) is fine.
                j.mark(lease, "undone", why[0][:200])
                lines.append(f"run {j.run}: {lease.label}: undo said: {why[0][:200]}")
        j.close()
    if not lines:
        lines.append("nothing to undo: no journals of crashed runs")
    return lines, failed
