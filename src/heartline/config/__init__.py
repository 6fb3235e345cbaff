"""TOML configuration: load a file into typed, validated specs.

Every error names the file, the key and the line, in one line
(:class:`heartline.errors.ConfigError`). Names are loaded on first use, so that a CLI call that
only needs the socket path (``socket_from_config``) does not pay for the full loader.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heartline.config._loader import KeyLines, load_config, parse_config, parse_signal
    from heartline.config._locate import (
        default_config_path,
        default_log_dir,
        default_run_dir,
        socket_from_config,
    )
    from heartline.config._sample import SAMPLE
    from heartline.config._specs import (
        BackoffSpec,
        CheckSpec,
        ClusterSpec,
        Config,
        CrashLoopSpec,
        DaemonSpec,
        HostSpec,
        LogSpec,
        ProgramSpec,
    )

_WHERE = {
    "BackoffSpec": "_specs",
    "CheckSpec": "_specs",
    "ClusterSpec": "_specs",
    "Config": "_specs",
    "CrashLoopSpec": "_specs",
    "DaemonSpec": "_specs",
    "HostSpec": "_specs",
    "LogSpec": "_specs",
    "ProgramSpec": "_specs",
    "default_config_path": "_locate",
    "default_log_dir": "_locate",
    "default_run_dir": "_locate",
    "socket_from_config": "_locate",
    "KeyLines": "_loader",
    "load_config": "_loader",
    "parse_config": "_loader",
    "parse_signal": "_loader",
    "SAMPLE": "_sample",
}

__all__ = [
    "SAMPLE",
    "BackoffSpec",
    "CheckSpec",
    "ClusterSpec",
    "Config",
    "CrashLoopSpec",
    "DaemonSpec",
    "HostSpec",
    "KeyLines",
    "LogSpec",
    "ProgramSpec",
    "default_config_path",
    "default_log_dir",
    "default_run_dir",
    "load_config",
    "parse_config",
    "parse_signal",
    "socket_from_config",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'heartline.config' has no attribute {name!r}")
    value = getattr(import_module(f"heartline.config.{module}"), name)
    globals()[name] = value
    return value
