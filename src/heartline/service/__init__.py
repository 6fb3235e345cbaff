"""Inside supervised programs: tell the supervisor how things go, and catch code that stalls.

Standard library only, and nothing runs until it is used: no thread, no timer, no signal handler.

* :mod:`notify <heartline.service._notify>`: systemd's notify protocol (``notify.ready()``,
  ``notify.status(text)``, ``notify.kick()``, ...), for systemd and the heartline daemon alike.
* :class:`Watchdog` / :func:`watchdog`: fire when guarded code stops making progress.
* :class:`LoopWatchdog` / :func:`loop_watchdog`: fire when an asyncio event loop is blocked.

A watchdog that fires writes every thread's stack (and the asyncio tasks) to stderr, then ends
the process with :data:`EXIT_WATCHDOG` or raises :class:`WatchdogTimeout`.
"""

from heartline.service import _notify as notify
from heartline.service._watchdog import (
    EXIT_WATCHDOG,
    LoopWatchdog,
    Watchdog,
    WatchdogTimeout,
    loop_watchdog,
    watchdog,
)

__all__ = [
    "EXIT_WATCHDOG",
    "LoopWatchdog",
    "Watchdog",
    "WatchdogTimeout",
    "loop_watchdog",
    "notify",
    "watchdog",
]
