"""How a report reads: the collected data (see :mod:`._report_collect`) as JSON and as text.

Part of :mod:`heartline.service.reports`. Both forms hold the same sections; the text is the
one people read (stacks in the interpreter's traceback layout), the JSON the one tools read.
"""

from __future__ import annotations

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def render_json(data: Mapping[str, object]) -> str:
    import json

    # No indent: only the compact form uses the C encoder (5x faster on large reports). Lists
    # are encoded item by item, so that the application's threads can take the GIL in between
    # (one call for 1000 threads holds it for ~10 ms).
    parts = []
    for key, value in data.items():
        if isinstance(value, list):
            items = ",".join(json.dumps(item, default=repr) for item in value)
            parts.append(f"{json.dumps(key)}:[{items}]")
        else:
            parts.append(f"{json.dumps(key)}:{json.dumps(value, default=repr)}")
    return "{" + ",".join(parts) + "}\n"


def render_text(data: Mapping[str, object]) -> str:
    out = [
        f"heartline: {data['title']}",
        f"pid {data['pid']}, {data['time']}",
        "",
    ]
    threads = _seq(data.get("threads"))
    out.append(f"== Threads ({len(threads)}) ==")
    for t in threads:
        daemon = " (daemon)" if t.get("daemon") else ""
        main = " (main)" if t.get("main") else ""
        name = repr(t["name"]) if t.get("name") is not None else "<unknown>"
        out.append(
            f"Thread {name}{daemon}{main} (ident {t['ident']:#018x}, native id {t['native_id']})"
        )
        out.append("Stack (most recent call last):")
        out.extend(_frames_text(t.get("stack")))
        out.append("")
    loops = _seq(data.get("asyncio"))
    out.append(f"== asyncio ({len(loops)} loops) ==")
    for lp in loops:
        state = "running" if lp.get("running") else "not running"
        tasks = _seq(lp.get("tasks"))
        out.append(f"Loop {lp['loop']} ({state}): {len(tasks)} tasks")
        if lp.get("error"):
            out.append(f"  tasks {lp['error']}")
        for task in tasks:
            note = "  <-- running now" if task.get("current") else ""
            out.append(f"Task {task['name']!r} coroutine {task['coroutine']}(){note}")
            if task.get("stack"):
                out.append("Await chain (most recent call last):")
                out.extend(_frames_text(task.get("stack")))
            if task.get("waiting_for"):
                out.append(f"  waiting for {task['waiting_for']}")
        out.append("")
    greenlets = data.get("greenlets")
    if greenlets is None:
        out += ["== Greenlets: none (neither gevent nor eventlet is imported) ==", ""]
    else:
        glist = _seq(greenlets)
        out.append(f"== Greenlets ({len(glist)} suspended) ==")
        for g in glist:
            out.append(f"Greenlet {g['name']}")
            out.extend(_frames_text(g.get("stack")))
        out.append("")
    out.append("== Process ==")
    out.extend(_mapping_text(data.get("process")))
    out += ["", "== Packages =="]
    packages = data.get("packages")
    if isinstance(packages, dict):
        out.extend(f"{name} {version}" for name, version in packages.items())
    out += ["", "== Configuration =="]
    out.extend(_mapping_text(data.get("config")))
    out += ["", "== Environment =="]
    env = data.get("environment")
    if isinstance(env, dict):
        out.extend(f"{k}={v}" for k, v in sorted(env.items()))
    errors = data.get("errors")
    if errors:
        out += ["", "== Sections that failed =="]
        out.extend(_mapping_text(errors))
    raw = data.get("raw")
    if raw:
        out += ["", "== Raw dump at the signal (faulthandler, most recent call first) ==", str(raw)]
    return "\n".join(out).rstrip("\n") + "\n"


def _seq(value: object) -> list[dict[str, object]]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, dict)]


def _frames_text(frames: object) -> list[str]:
    out = []
    for f in _seq(frames):
        out.append(f'  File "{f["file"]}", line {f["line"]}, in {f["function"]}')
        if f.get("code"):
            out.append(f"    {f['code']}")
    return out


def _mapping_text(value: object, indent: str = "") -> list[str]:
    if not isinstance(value, dict):
        return [f"{indent}{value}"]
    out = []
    for key, item in value.items():
        if isinstance(item, dict) and item:
            out.append(f"{indent}{key}:")
            out.extend(_mapping_text(item, indent + "  "))
        elif isinstance(item, list) and item and isinstance(item[0], dict):
            out.append(f"{indent}{key}:")
            out.extend(f"{indent}  - {_inline(v)}" for v in item)
        else:
            out.append(f"{indent}{key}: {_inline(item)}")
    return out


def _inline(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_inline(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return str(value)
