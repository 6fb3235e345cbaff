"""lockd, heartline's lock server: a program of its own (`heartline lockd`).

One asyncio loop serving sessions over TCP (or TLS), a pure lock table (FIFO queues,
semaphores, fencing tokens) and a journal that keeps grants across restarts. It speaks the wire
protocol of :mod:`heartline.lock` (``heartline.lock.protocol``), whose lockd client is what
:class:`heartline.Lock` and `heartline lock` use; nothing below this package imports it.
"""

from heartline.lockd._server import LockServer, Session, parse_listen, read_tokens, serve
from heartline.lockd._store import Store, StoreError
from heartline.lockd._table import Grant, LimitMismatch, Table, Waiter, Who

__all__ = [
    "Grant",
    "LimitMismatch",
    "LockServer",
    "Session",
    "Store",
    "StoreError",
    "Table",
    "Waiter",
    "Who",
    "parse_listen",
    "read_tokens",
    "serve",
]
