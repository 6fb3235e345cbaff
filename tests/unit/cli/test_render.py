"""Rendering of API answers for people: the status and top tables."""

from __future__ import annotations

from heartline.cli._render import top_table


def _proc(pid: int, ppid: int, name: str) -> dict[str, object]:
    return {"pid": pid, "ppid": ppid, "name": name, "cpu_pct": 0.0, "rss": 0,
            "read_bps": 0, "write_bps": 0, "fds": 3}  # fmt: skip


def test_top_tree_lists_parents_before_children_whatever_the_pids() -> None:
    """After pid wrap-around a child may have a lower pid than its parent: the tree still
    shows the parent first and the child indented below it."""
    doc = {
        "window": 1.0,
        "programs": [
            {"name": "web", "state": "running", "pid": 30000, "restarts": 0, "cpu_pct": 0.0,
             "rss": 0, "read_bps": 0, "write_bps": 0, "fds": 3,
             "processes": [_proc(12, 30001, "grandchild"), _proc(30000, 1, "web"),
                           _proc(30001, 30000, "worker"), _proc(13, 30000, "helper")]},
        ],
    }  # fmt: skip
    lines = top_table(doc, tree=True).splitlines()[3:]
    names = [ln.split("  ")[0:4] for ln in lines]
    order = [ln.strip().split()[0] for ln in lines]
    assert order == ["web", "web", "helper", "worker", "grandchild"], names
    indent = {ln.strip().split()[0]: len(ln) - len(ln.lstrip()) for ln in lines[1:]}
    assert indent["web"] < indent["helper"] == indent["worker"] < indent["grandchild"]
