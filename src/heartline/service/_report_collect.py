"""What a report holds: the registries of providers and event loops, and the collection of
every section (threads, asyncio, greenlets, process, packages, configuration, environment).

Part of :mod:`heartline.service.reports`, which re-exports :func:`register`,
:func:`unregister` and :func:`register_loop`. A report is plain data here (mappings, lists,
strings, numbers); :mod:`._report_render` turns it into text and JSON.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from heartline.service._report_redact import redact
from heartline.service._stacks import __name__ as _stacks_module
from heartline.service._stacks import greenlet_snapshot, loop_snapshot, thread_snapshot

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Iterable, Mapping

    Provider = Callable[[], Mapping[str, object]]

_providers: dict[str, Provider] = {}
_loops: dict[int, object] = {}  # id -> weakref.ref to an event loop
_registry_lock = threading.Lock()


def register(name: str, provider: Provider) -> None:
    """Add ``provider()``'s mapping to every report, under ``name`` (replacing an earlier one).

    Secrets are shown as ``***`` (see :func:`redact`): values whose key looks like a secret, at
    any depth, and passwords inside URLs and connection strings under any key. A provider that
    fails does not lose the report: its error is shown instead.
    """
    if not callable(provider):
        raise TypeError(f"a provider must be callable, not {provider!r}")
    with _registry_lock:
        _providers[name] = provider


def unregister(name: str) -> None:
    """Forget the provider ``name`` (nothing happens if there is none)."""
    with _registry_lock:
        _providers.pop(name, None)


def register_loop(loop: asyncio.AbstractEventLoop) -> None:
    """List ``loop``'s tasks in reports, as long as the loop lives."""
    import weakref

    key = id(loop)

    def forget(_: object) -> None:
        with _registry_lock:
            _loops.pop(key, None)

    with _registry_lock:
        _loops[key] = weakref.ref(loop, forget)


def _known_loops() -> list[asyncio.AbstractEventLoop]:
    with _registry_lock:
        refs = list(_loops.values())
    loops = []
    for ref in refs:
        loop = ref() if callable(ref) else None
        if loop is not None:
            loops.append(loop)
    return loops


def collect(
    *,
    title: str,
    raw: str | None,
    skip: tuple[int, ...],
    hide: Iterable[str] = (),
    config: bool = True,
) -> dict[str, object]:
    """The report as plain data; a section that fails holds its error instead. The calling
    thread's innermost frames from the modules in ``hide`` (and from this one) are left out of
    its stack. Without ``config`` the providers are not called (the warm-up must not run
    application code)."""
    errors: dict[str, str] = {}

    def section(name: str, fn: Callable[[], object]) -> object:
        try:
            return fn()
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            return None

    now = time.time()
    threads, stacks = thread_snapshot(skip=skip, hide=(*hide, __name__, _stacks_module))
    report: dict[str, object] = {
        "format": "heartline-report/1",
        "title": title,
        "time": _iso(now),
        "pid": os.getpid(),
        "threads": threads,
    }
    loops = [loop_snapshot(lp, stacks) for lp in _known_loops()]
    report["asyncio"] = [lp for lp in loops if lp is not None]
    report["greenlets"] = section("greenlets", greenlet_snapshot)
    # Every section that shows the application's values goes through redact(): the command
    # line and the configuration as much as the environment.
    report["process"] = redact(section("process", _process))
    report["packages"] = section("packages", _packages)
    report["config"] = section("config", _config) if config else {}
    report["environment"] = redact(dict(os.environ))
    report["raw"] = raw
    report["errors"] = redact(errors)
    return report


def _config() -> dict[str, object]:
    with _registry_lock:
        providers = dict(_providers)
    out: dict[str, object] = {}
    for name, provider in sorted(providers.items()):
        try:
            out[name] = redact(provider())
        except Exception as exc:  # its message may hold what it failed to connect to
            out[name] = redact({"error": f"{type(exc).__name__}: {exc}"})
    return out


#: distribution names by top-level module, and versions by distribution: both slow to find, and
#: fixed for the life of the process.
_dist_map: dict[str, Mapping[str, list[str]]] = {}
_versions: dict[str, str] = {}


def _warm_packages() -> Mapping[str, list[str]]:
    found = _dist_map.get("map")
    if found is None:
        import importlib.metadata

        found = _dist_map["map"] = importlib.metadata.packages_distributions()
    return found


def _packages() -> dict[str, str]:
    import importlib.metadata

    dist_map = _warm_packages()
    tops = {name.partition(".")[0] for name in list(sys.modules)}
    out: dict[str, str] = {}
    for top in sorted(tops):
        # Editable installs map no files to their modules: try the module's own name then.
        for dist in dist_map.get(top) or ([top] if _has_dist(top) else []):
            if dist in out:
                continue
            if dist not in _versions:
                try:
                    _versions[dist] = importlib.metadata.version(dist)
                except Exception:
                    _versions[dist] = "?"
            out[dist] = _versions[dist]
    return dict(sorted(out.items()))


#: Whether a name is a distribution's, for top-level modules no distribution lists.
_is_dist: dict[str, bool] = {}


def _has_dist(name: str) -> bool:
    found = _is_dist.get(name)
    if found is None:
        import importlib.metadata

        if name.startswith("_") or name in sys.builtin_module_names:
            found = False
        else:
            try:
                _versions[name] = importlib.metadata.version(name)
                found = True
            except importlib.metadata.PackageNotFoundError:
                found = False
        _is_dist[name] = found
    return found


#: Set to False to read /proc even when psutil is installed (tests use it).
_use_psutil = True


def _process() -> dict[str, object]:
    # /proc first where there is one: psutil reads the same files, but with more system calls,
    # and each lets a busy application thread hold the GIL for a switch interval (a report took
    # over a second that way next to a spinning thread).
    if _use_psutil and not os.path.isdir("/proc/self/task"):
        try:
            import importlib

            psutil = importlib.import_module("psutil")
        except ImportError:
            pass
        else:
            return _process_psutil(psutil)
    return _process_proc()


def _process_psutil(psutil: object) -> dict[str, object]:
    p = psutil.Process()  # type: ignore[attr-defined]
    info: dict[str, object] = {"source": "psutil", "pid": p.pid}
    calls: dict[str, Callable[[], object]] = {
        "ppid": p.ppid,
        "user": p.username,
        "cmdline": p.cmdline,
        "cpu_times": lambda: p.cpu_times()._asdict(),
        "rss": lambda: p.memory_info().rss,
        "num_threads": p.num_threads,
        "open_files": lambda: [f.path for f in p.open_files()],
        "sockets": lambda: [
            {
                "fd": c.fd,
                "family": str(c.family.name),
                "type": str(c.type.name),
                "local": _addr(c.laddr),
                "remote": _addr(c.raddr),
                "status": c.status,
            }
            for c in (p.net_connections if hasattr(p, "net_connections") else p.connections)(
                kind="all"
            )
        ],
        "io": lambda: p.io_counters()._asdict(),
        "children": lambda: [
            {"pid": c.pid, "name": _or_none(c.name)} for c in p.children(recursive=True)
        ],
    }
    with p.oneshot():
        for key, call in calls.items():
            try:
                info[key] = call()
            except Exception as exc:
                info[key] = f"unavailable ({type(exc).__name__})"
    return info


def _or_none(call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception:
        return None


def _addr(addr: object) -> str | None:
    if not addr:
        return None
    if isinstance(addr, tuple) and len(addr) == 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


#: Above this many threads, only the main thread's children are listed: each thread's list is a
#: file to read, and each read lets a busy application thread hold the GIL for a switch interval.
_CHILDREN_SCAN_LIMIT = 32
_user_names: dict[int, str] = {}


def _read(path: str) -> str:
    """A small file in one open, read, close (``open()`` makes twice as many system calls)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def _process_proc() -> dict[str, object]:
    info: dict[str, object] = {"source": "/proc", "pid": os.getpid(), "ppid": os.getppid()}

    def user() -> object:
        uid = os.getuid()
        if uid not in _user_names:
            import pwd

            try:
                _user_names[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                _user_names[uid] = str(uid)
        return _user_names[uid]

    def cpu() -> object:
        t = os.times()
        return {
            "user": t.user,
            "system": t.system,
            "children_user": t.children_user,
            "children_system": t.children_system,
        }

    def fds() -> tuple[list[str], list[dict[str, object]]]:
        files: list[str] = []
        sockets: list[dict[str, object]] = []
        for name in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{name}")
            except OSError:
                continue  # closed meanwhile (the listing's own fd, for one)
            if target.startswith("socket:"):
                sockets.append({"fd": int(name), "inode": target[8:-1]})
            elif target.startswith("/"):
                files.append(target)
        return sorted(files), sockets

    def io() -> object:
        out: dict[str, int] = {}
        for line in _read("/proc/self/io").splitlines():
            key, _, value = line.partition(":")
            out[key.strip()] = int(value)
        return out

    tids = os.listdir("/proc/self/task")
    if len(tids) > _CHILDREN_SCAN_LIMIT:
        # One file per thread: with many threads, read the main thread's only (see the limit).
        info["children_of"] = "the main thread"
        tids = [str(os.getpid())]
    else:
        info["children_of"] = "all threads"

    def children() -> object:
        pids: list[dict[str, object]] = []
        for tid in tids:
            try:
                text = _read(f"/proc/self/task/{tid}/children")
            except OSError:
                continue
            for pid in text.split():
                try:
                    name: str | None = _read(f"/proc/{pid}/comm").strip()
                except OSError:
                    name = None
                pids.append({"pid": int(pid), "name": name})
        return pids

    calls: dict[str, Callable[[], object]] = {
        "user": user,
        "cmdline": lambda: _read("/proc/self/cmdline").rstrip("\0").split("\0"),
        "cpu_times": cpu,
        "rss": lambda: int(_read("/proc/self/statm").split()[1]) * os.sysconf("SC_PAGE_SIZE"),
        "num_threads": lambda: len(os.listdir("/proc/self/task")),
        "io": io,
        "children": children,
    }
    for key, call in calls.items():
        try:
            info[key] = call()
        except Exception as exc:
            info[key] = f"unavailable ({type(exc).__name__})"
    try:
        info["open_files"], info["sockets"] = fds()
    except OSError as exc:
        info["open_files"] = info["sockets"] = f"unavailable ({type(exc).__name__})"
    return info


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
