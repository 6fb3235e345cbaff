"""TOML configuration: load a file into typed, validated specs.

Every error names the file, the key and the line, in one line
(:class:`heartline.errors.ConfigError`).
"""

from heartline.config._loader import default_config_path, load_config, parse_config
from heartline.config._specs import (
    BackoffSpec,
    Config,
    CrashLoopSpec,
    DaemonSpec,
    LogSpec,
    ProgramSpec,
)

__all__ = [
    "BackoffSpec",
    "Config",
    "CrashLoopSpec",
    "DaemonSpec",
    "LogSpec",
    "ProgramSpec",
    "default_config_path",
    "load_config",
    "parse_config",
]
