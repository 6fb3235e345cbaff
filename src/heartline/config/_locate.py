"""Where things are: default paths, and the control socket named by a config file.

Kept apart from the loader so that a cold `heartline status` reads only the one setting it
needs (the run directory) without validating every program.
"""

from __future__ import annotations

import os
import tomllib

from heartline.errors import ConfigError

#: The last place the config is looked for.
ETC_CONFIG = "/etc/heartline/heartline.toml"


def default_config_path() -> str:
    """``$HEARTLINE_CONFIG``, else ``./heartline.toml``, else ``/etc/heartline/heartline.toml``."""
    env = os.environ.get("HEARTLINE_CONFIG")
    if env:
        return env
    if os.path.exists("heartline.toml"):
        return "heartline.toml"
    return ETC_CONFIG


def default_run_dir() -> str:
    if os.geteuid() == 0:
        return "/run/heartline"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return f"{xdg}/heartline"
    return f"/tmp/heartline-{os.geteuid()}"


def default_log_dir() -> str:
    if os.geteuid() == 0:
        return "/var/log/heartline"
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return f"{state}/heartline/logs"


def socket_from_config(path: str) -> str:
    """The control socket of the daemon that runs with the config file at ``path``.

    Reads ``[daemon] run_dir`` only; any problem with the file is left to the full loader,
    which reports it with its line.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.loads(f.read().decode("utf-8"))
        run_dir = data.get("daemon", {}).get("run_dir")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError, RecursionError):
        run_dir = None
    if not isinstance(run_dir, str) or not run_dir or "\x00" in run_dir:
        from heartline.config._loader import load_config

        try:
            return load_config(path).daemon.socket_path
        except ConfigError:
            raise
    base = os.path.dirname(os.path.abspath(path))
    return os.path.join(
        os.path.normpath(os.path.join(base, os.path.expanduser(run_dir))), "heartline.sock"
    )
