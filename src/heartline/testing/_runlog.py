"""A program that logs its runs to a shared history and catches a second copy exactly: run it
as a singleton (heartline's, or any home-made failover) and check the history afterwards.
Its path is heartline.testing.RUN_LOG_PROGRAM; heartline's tests and benchmarks/singleton.py
run it.

    python3 _runlog.py HISTORY LOCKFILE [HOST]

Every line it appends to HISTORY is ``WHAT HOST TOKEN T [WAIT]``: HOST is the host it runs
on (the argument, else its UTS namespace's hostname), TOKEN the grant it runs under
(``HEARTLINE_LOCK_TOKEN`` from heartline, ``ETCD_LOCK_REV`` from `etcdctl lock`, else
``-``) and T its CLOCK_MONOTONIC stamp, which every lab host shares with this machine.

- ``start`` first of all, once it runs;
- ``overlap`` when the exclusive flock on LOCKFILE is held by another copy: two copies run at
  once (the kernel drops a flock the moment its holder dies, however it dies, so the flock
  is exact); it then waits for the flock;
- ``locked`` once it holds the flock, with WAIT, the seconds it waited for it (0 without an
  overlap): how long the two copies ran side by side;
- ``stop`` on SIGTERM, just before it exits.

It then sleeps until it is stopped or killed, or exits 3 at once when RUN_LOG_CRASH is set
(a program that cannot run on that host). Standard library only.
"""

import fcntl
import os
import signal
import socket
import sys
import time


def main() -> None:
    history, lockfile = sys.argv[1:3]
    host = sys.argv[3] if len(sys.argv) > 3 else socket.gethostname()
    token = os.environ.get("HEARTLINE_LOCK_TOKEN") or os.environ.get("ETCD_LOCK_REV") or "-"

    def note(what: str, t: float, extra: str = "") -> None:
        fd = os.open(history, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{what} {host} {token} {t:.6f}{extra}\n".encode())
        finally:
            os.close(fd)

    def stop(_signum: int, _frame: object) -> None:
        note("stop", time.monotonic())
        os._exit(0)

    started = time.monotonic()
    signal.signal(signal.SIGTERM, stop)
    note("start", started)
    lock = os.open(lockfile, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        note("overlap", time.monotonic())
        fcntl.flock(lock, fcntl.LOCK_EX)
    now = time.monotonic()
    note("locked", now, f" {now - started:.6f}")
    if os.environ.get("RUN_LOG_CRASH"):
        sys.exit(3)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
