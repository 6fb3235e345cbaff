"""The heartline daemon (composition root): supervisor + control API + systemd integration."""

from heartline.daemon._daemon import Daemon, run_daemon, setup_logging

__all__ = ["Daemon", "run_daemon", "setup_logging"]
