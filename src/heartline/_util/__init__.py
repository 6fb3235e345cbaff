"""Small shared helpers: durations, sizes, atomic files, the clock, retries, Linux process
helpers (/proc, pidfds, process groups), inotify, batched datagram reads, private directories,
a small TOML writer, and running an etcd of one's own (its command line, its TLS files).

Names are loaded on first use: heartline.service runs inside users' programs and imports only
what it uses from here (no typing, no ctypes until asked for).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heartline._util._atomic import atomic_write
    from heartline._util._clock import SYSTEM_CLOCK, Clock, SystemClock
    from heartline._util._etcdrun import (
        ETCD_BINARY,
        TlsFiles,
        etcd_argv,
        etcd_serves,
        make_tls_files,
    )
    from heartline._util._inotify import add_watch, drain, open_inotify, watch_directory, watch_file
    from heartline._util._linux import (
        OWN_CHILDREN,
        ProcInfo,
        become_subreaper,
        boot_id,
        children_of,
        descendants,
        environ_of,
        handles_signal,
        read_stat,
        reap_zombie,
        release_exited,
        scan,
        signal_group,
        signal_leader,
        start_time,
    )
    from heartline._util._mmsg import BatchReader
    from heartline._util._paths import (
        UnsafeDirectory,
        check_private_dir,
        ensure_private_dir,
        program_name,
    )
    from heartline._util._retry import Retry
    from heartline._util._toml import toml_key, toml_string, toml_value
    from heartline._util._units import format_duration, parse_duration, parse_size

_WHERE = {
    "atomic_write": "_atomic",
    "SYSTEM_CLOCK": "_clock",
    "Clock": "_clock",
    "SystemClock": "_clock",
    "ETCD_BINARY": "_etcdrun",
    "TlsFiles": "_etcdrun",
    "etcd_argv": "_etcdrun",
    "etcd_serves": "_etcdrun",
    "make_tls_files": "_etcdrun",
    "add_watch": "_inotify",
    "drain": "_inotify",
    "open_inotify": "_inotify",
    "watch_directory": "_inotify",
    "watch_file": "_inotify",
    "OWN_CHILDREN": "_linux",
    "ProcInfo": "_linux",
    "become_subreaper": "_linux",
    "boot_id": "_linux",
    "children_of": "_linux",
    "descendants": "_linux",
    "environ_of": "_linux",
    "handles_signal": "_linux",
    "reap_zombie": "_linux",
    "read_stat": "_linux",
    "release_exited": "_linux",
    "scan": "_linux",
    "signal_group": "_linux",
    "signal_leader": "_linux",
    "start_time": "_linux",
    "BatchReader": "_mmsg",
    "UnsafeDirectory": "_paths",
    "check_private_dir": "_paths",
    "ensure_private_dir": "_paths",
    "program_name": "_paths",
    "Retry": "_retry",
    "toml_key": "_toml",
    "toml_string": "_toml",
    "toml_value": "_toml",
    "format_duration": "_units",
    "parse_duration": "_units",
    "parse_size": "_units",
}

__all__ = [
    "ETCD_BINARY",
    "OWN_CHILDREN",
    "SYSTEM_CLOCK",
    "BatchReader",
    "Clock",
    "ProcInfo",
    "Retry",
    "SystemClock",
    "TlsFiles",
    "UnsafeDirectory",
    "add_watch",
    "atomic_write",
    "become_subreaper",
    "boot_id",
    "check_private_dir",
    "children_of",
    "descendants",
    "drain",
    "ensure_private_dir",
    "environ_of",
    "etcd_argv",
    "etcd_serves",
    "format_duration",
    "handles_signal",
    "make_tls_files",
    "open_inotify",
    "parse_duration",
    "parse_size",
    "program_name",
    "read_stat",
    "reap_zombie",
    "release_exited",
    "scan",
    "signal_group",
    "signal_leader",
    "start_time",
    "toml_key",
    "toml_string",
    "toml_value",
    "watch_directory",
    "watch_file",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'heartline._util' has no attribute {name!r}")
    value = getattr(import_module(f"heartline._util.{module}"), name)
    globals()[name] = value
    return value
