"""``heartline.Lock``: a cluster lock as a sync or async context manager."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import asyncio
    import ssl
    from types import TracebackType

    from heartline.lock._entries import Entries
    from heartline.lock._lockd import LockdBackend

from heartline.errors import LockError, LockLost, LockReleased, UsageError
from heartline.lock._backend import ClientInfo, LockBackend
from heartline.lock._lease import Lease, LeaseState
from heartline.lock._params import (
    DEFAULT_TTL,
    DEFAULT_URL,
    check_limit,
    check_name,
    check_ttl,
    check_wait,
    parse_url,
)
from heartline.lock._secret import read_token_text

T = TypeVar("T")

#: Where to find the lock server when no ``url`` is given.
URL_ENV = "HEARTLINE_LOCK_URL"
#: A file holding the client token of a lockd that asks for one.
TOKEN_FILE_ENV = "HEARTLINE_LOCK_TOKEN_FILE"  # noqa: S105 - a variable name


def read_token_file(path: str, *, source: str = "--token-file") -> str:
    """The client token in ``path`` (named by ``source``: the option or the variable)."""
    where = f"token file {path}" + ("" if source == "--token-file" else f" (from ${source})")
    text = read_token_text(path, where=where, layout="put the token on its first line")
    words = text.split("#", 1)[0].split()
    if not words:
        raise UsageError(f"{where}: empty; put the token on its first line")
    return words[0]


def open_backend(
    url: str | None = None,
    *,
    token_file: str | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> LockBackend:
    """The backend for ``url`` (``heartline://``, ``heartlines://``, ``etcd://``, ``etcds://``).
    ``cert_file``/``key_file``: the client certificate and key for an etcd that asks for one
    (etcds:// only; default ``$HEARTLINE_LOCK_CERT_FILE``/``$HEARTLINE_LOCK_KEY_FILE``)."""
    where = parse_url(url or os.environ.get(URL_ENV) or DEFAULT_URL)
    if where.scheme.startswith("etcd"):
        from heartline.lock._etcd import EtcdBackend

        context = _etcd_tls(where.scheme, ca_file, cert_file, key_file)
        return EtcdBackend(where.endpoints, tls=where.tls, context=context)
    _etcd_tls(where.scheme, ca_file, cert_file, key_file)  # refuses a client certificate
    return _lockd(where.endpoints[0], where.tls, token_file=token_file, ca_file=ca_file)


def _etcd_tls(
    scheme: str, ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext | None:
    """The TLS context of an etcds:// client (None for any other scheme, which a client
    certificate given is refused for)."""
    if scheme != "etcds" and not (cert_file or key_file):
        return None  # without loading ssl: a cold `heartline lock` would pay for it
    from heartline.lock._tls import client_cert, client_context

    cert = client_cert(cert_file, key_file, scheme=scheme)
    return client_context(ca_file, cert) if scheme == "etcds" else None


def _lockd(
    endpoint: tuple[str, int], tls: bool, *, token_file: str | None, ca_file: str | None
) -> LockdBackend:
    from heartline.lock._lockd import LockdBackend

    source = "--token-file"
    if not token_file:
        token_file, source = os.environ.get(TOKEN_FILE_ENV), TOKEN_FILE_ENV
    auth = read_token_file(token_file, source=source) if token_file else None
    host, port = endpoint
    return LockdBackend(host, port, tls=tls, ca_file=ca_file, auth=auth)


def open_entries(
    url: str | None = None,
    *,
    ttl: float,
    client: ClientInfo,
    token_file: str | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> Entries:
    """Session-scoped entries on the backend at ``url`` (see :mod:`heartline.lock._entries`);
    ``ttl``: how long the backend keeps them once nothing is heard from this process. The
    credentials are :func:`open_backend`'s."""
    where = parse_url(url or os.environ.get(URL_ENV) or DEFAULT_URL)
    check_ttl(ttl)
    context = _etcd_tls(where.scheme, ca_file, cert_file, key_file)
    if where.scheme.startswith("etcd"):
        from heartline.lock._etcd_entries import EtcdEntries
        from heartline.lock._etcd_gateway import EtcdGateway

        gateway = EtcdGateway(where.endpoints, tls=where.tls, context=context)
        return EtcdEntries(gateway, ttl=ttl)
    from heartline.lock._lockd_entries import LockdEntries

    dialer = _lockd(where.endpoints[0], where.tls, token_file=token_file, ca_file=ca_file)
    return LockdEntries(dialer, ttl=ttl, client=client)


def _in_thread(loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``fn`` on a thread of its own and give its result to ``loop``.

    Not the loop's default executor: it has a handful of threads, and a program waiting for
    more locks than that at once would have the rest stuck before they even asked.
    """
    fut: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if fut.cancelled():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = fn()
        except BaseException as e:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, None, e)
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="heartline-lock", daemon=True).start()
    return fut


class Lock:
    """A named lock held by at most ``limit`` holders at once, granted in arrival order.

    ``with Lock("nightly-backup", url="heartline://locks:7717") as lock: ...`` waits for the
    lock (for ever, or ``wait`` seconds, raising :class:`~heartline.errors.LockTimeout`), runs
    the block, then releases it. ``lock.token`` is the grant's fencing token: it grows with
    every grant of this lock, across server restarts, so a resource that remembers the largest
    token it has seen can refuse a late write from a holder that lost the lock.

    Losing the lock (the lease could not be renewed in time, the server said so, an admin broke
    it) is reported three ways: ``lock.lost`` turns true; ``on_lost`` is called (from a
    background thread); and :class:`~heartline.errors.LockLost` is raised where the block ends
    -- in ``async with`` the block's task is cancelled at once, so the body stops at its next
    ``await``.

    Before it is lost, a lease turns SUSPECT when its renewals are late: ``lock.state`` is a
    :class:`~heartline.lock.LeaseState` (HELD, SUSPECT, LOST, RELEASED; each says what the
    holder may assume), and ``lock.on_state(callback)`` is told every change, for this grant
    and every later one.

    A Lock object can be acquired again after release; it keeps its connection for that.
    """

    def __init__(
        self,
        name: str,
        *,
        url: str | None = None,
        ttl: float = DEFAULT_TTL,
        limit: int = 1,
        wait: float | None = None,
        token_file: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        label: str = "",
        on_lost: Callable[[LockLost], None] | None = None,
        backend: LockBackend | None = None,
    ) -> None:
        self.name = check_name(name)
        self.ttl = check_ttl(float(ttl))
        self.limit = check_limit(int(limit))
        self.wait = check_wait(wait)
        self.url = url
        self._token_file = token_file
        self._ca_file = ca_file
        self._cert_file = cert_file
        self._key_file = key_file
        self._client = ClientInfo.here(label)
        self._on_lost = on_lost
        self._backend = backend
        self._lease: Lease | None = None
        self._mutex = threading.Lock()
        self._listeners: list[Callable[[LeaseState], None]] = []
        self._task: asyncio.Task[object] | None = None
        self._cancelled_for_loss = False

    # --- state ------------------------------------------------------------------------------
    @property
    def backend(self) -> LockBackend:
        if self._backend is None:
            self._backend = open_backend(
                self.url, token_file=self._token_file, ca_file=self._ca_file,
                cert_file=self._cert_file, key_file=self._key_file,
            )  # fmt: skip
        return self._backend

    @property
    def lease(self) -> Lease | None:
        return self._lease

    @property
    def token(self) -> int:
        """The fencing token of the current (or last) grant."""
        if self._lease is None:
            raise LockReleased(f"lock {self.name!r} has not been acquired", name=self.name)
        return self._lease.token

    @property
    def held(self) -> bool:
        lease = self._lease
        return lease is not None and not lease.released and not lease.lost

    @property
    def lost(self) -> bool:
        """True once the lease is known or presumed gone (poll this in long loops)."""
        lease = self._lease
        return lease is not None and not lease.released and lease.lost

    @property
    def state(self) -> LeaseState | None:
        """The state of the current (or last) grant's lease; None before the first grant."""
        lease = self._lease
        return None if lease is None else lease.state

    def on_state(self, callback: Callable[[LeaseState], None]) -> None:
        """Call ``callback(state)`` on each change of the lease's :class:`LeaseState`: HELD when
        granted (and again on each renewal), SUSPECT when renewals are late, then LOST or
        RELEASED. For the current grant (told its state at once) and every later one.

        It runs in a backend thread (or in the thread that acquires or releases), one change
        at a time and in order. It must be quick and must not call acquire or release (the
        backend's thread may be the one that would answer them): hand such work to a thread of
        your own or to your event loop (``loop.call_soon_threadsafe``). This is the hook to
        stop work on: begin at SUSPECT, be done by LOST.
        """
        with self._mutex:
            self._listeners.append(callback)
            lease = self._lease
        if lease is not None:
            lease.on_state(callback, current=True)

    def check(self) -> None:
        """Raise :class:`LockLost` if the lease is gone."""
        lease = self._lease
        if lease is not None and not lease.released:
            err = lease.lost_error
            if err is not None:
                raise err

    # --- sync -------------------------------------------------------------------------------
    def acquire(self, wait: float | bool | None = True) -> Lease:
        """Wait for the lock (``wait``: True for the object's own, None for ever, 0 to try)."""
        if self.held:
            raise LockError(f"lock {self.name!r} is already held by this object", name=self.name)
        w = self.wait if wait is True else (None if wait is None else float(wait))
        lease = self.backend.acquire(
            self.name, limit=self.limit, ttl=self.ttl, wait=w, client=self._client
        )
        with self._mutex:
            self._lease = lease
            listeners = list(self._listeners)
        self._cancelled_for_loss = False
        lease.on_lost(self._lost_now)
        for listener in listeners:
            lease.on_state(listener, current=True)
        return lease

    def release(self) -> None:
        lease = self._lease
        if lease is not None and not lease.released:
            self.backend.release(lease)

    def close(self) -> None:
        """Release and hang up; the object can still be used again afterwards."""
        with contextlib.suppress(LockError):
            self.release()
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lease = self._lease
        lost = lease.lost_error if lease is not None else None
        self.release()
        if lost is not None and exc is None:
            raise lost

    def _lost_now(self, err: LockLost) -> None:
        if self._on_lost is not None:
            self._on_lost(err)
        task = self._task
        if task is not None and not task.done():
            self._cancelled_for_loss = True
            with contextlib.suppress(RuntimeError):  # the loop is closed
                task.get_loop().call_soon_threadsafe(task.cancel)

    # --- async ------------------------------------------------------------------------------
    async def acquire_async(self, wait: float | bool | None = True) -> Lease:
        import asyncio  # here: `heartline lock` must not pay for importing asyncio

        loop = asyncio.get_running_loop()
        fut = _in_thread(loop, lambda: self.acquire(wait))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            # Stop waiting on the server's side too, and give back a grant that raced in.
            backend = self._backend
            cancel = getattr(backend, "cancel_waits", None)
            if cancel is not None:
                cancel(self.name)
            elif backend is not None:
                backend.close()
                self._backend = None
            fut.add_done_callback(self._release_late_grant)
            raise

    def _release_late_grant(self, fut: asyncio.Future[Lease]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            with contextlib.suppress(LockError):
                self.release()

    async def __aenter__(self) -> Lock:
        import asyncio

        await self.acquire_async()
        self._task = asyncio.current_task()
        if self._lease is not None and self._lease.lost:
            self._lost_now(self._lease.lost_error or LockLost("lost", name=self.name))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        import asyncio

        task, self._task = self._task, None
        lease = self._lease
        lost = lease.lost_error if lease is not None else None
        await _in_thread(asyncio.get_running_loop(), self.release)
        if self._cancelled_for_loss and task is not None:
            self._cancelled_for_loss = False
            if task.uncancel() == 0 and isinstance(exc, asyncio.CancelledError):
                assert lost is not None
                raise lost from exc
        if lost is not None and exc is None:
            raise lost

    def __repr__(self) -> str:
        state = "held" if self.held else ("lost" if self.lost else "free")
        return f"<Lock {self.name!r} {state} token={self._lease.token if self._lease else None}>"
