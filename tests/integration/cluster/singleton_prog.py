"""A singleton program for the tests: it keeps a history of its runs in a shared file.

Usage: singleton_prog.py HISTORY LOCKFILE HOST. At start it appends ``start HOST TOKEN T``
(T: CLOCK_MONOTONIC, which every host of one machine shares), then takes an exclusive flock
on LOCKFILE without waiting: if another copy holds it, two copies run at once and it appends
``overlap HOST TOKEN T`` before waiting for the flock. The kernel drops the flock the moment a
copy dies, however it dies, so the flock is an exact detector of two copies. On SIGTERM it
appends ``stop HOST TOKEN T`` and exits.
"""

import fcntl
import os
import signal
import socket
import sys
import time

history, lockfile = sys.argv[1:3]
host = sys.argv[3] if len(sys.argv) > 3 else socket.gethostname()
token = os.environ.get("HEARTLINE_LOCK_TOKEN", "-")


def note(what: str) -> None:
    fd = os.open(history, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{what} {host} {token} {time.monotonic():.6f}\n".encode())
    finally:
        os.close(fd)


def stop(_signum: int, _frame: object) -> None:
    note("stop")
    os._exit(0)


signal.signal(signal.SIGTERM, stop)
note("start")
lock = os.open(lockfile, os.O_RDWR | os.O_CREAT, 0o644)
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    note("overlap")
    fcntl.flock(lock, fcntl.LOCK_EX)
note("locked")
if os.environ.get("SINGLETON_CRASH"):
    sys.exit(3)
while True:
    signal.pause()
