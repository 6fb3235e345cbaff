"""The etcd lock backend against a real etcd 3.4 on loopback (no mocks).

Each test gets its own etcd (the ``etcd`` fixture) and its own backends, closed at teardown;
every thread it starts is joined and every process it starts is killed, even on failure.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from base64 import b64encode
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.helpers import wait_until

from heartline.errors import LockError, LockServerUnreachable, LockTimeout, UsageError
from heartline.lock import ClientInfo, Lease
from heartline.lock._etcd import DEFAULT_PREFIX, EtcdBackend
from heartline.testing import EtcdServer

ME = ClientInfo(host="testhost", pid=os.getpid(), label="etcd-test")


# --- helpers --------------------------------------------------------------------------------------
def gateway(etcd: EtcdServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """One raw request to etcd's JSON gateway, bypassing the backend."""
    conn = http.client.HTTPConnection(*etcd.endpoint, timeout=5)
    try:
        conn.request("POST", path, body=json.dumps(body))
        resp = conn.getresponse()
        answer: dict[str, Any] = json.loads(resp.read())
        assert resp.status == 200, answer
        return answer
    finally:
        conn.close()


def b64(data: bytes) -> str:
    return b64encode(data).decode()


def raw_keys(etcd: EtcdServer, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Every key under ``prefix``, read straight from etcd."""
    from base64 import b64decode

    end = prefix.encode()[:-1] + bytes([prefix.encode()[-1] + 1])
    answer = gateway(
        etcd,
        "/v3/kv/range",
        {"key": b64(prefix.encode()), "range_end": b64(end), "keys_only": True},
    )
    return [b64decode(kv["key"]).decode() for kv in answer.get("kvs", [])]


def watcher_count(etcd: EtcdServer) -> int:
    """How many watches etcd serves right now (from its Prometheus metrics)."""
    conn = http.client.HTTPConnection(*etcd.endpoint, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith("etcd_debugging_mvcc_watcher_total "):
            return int(float(line.split()[1]))
    raise AssertionError("etcd_debugging_mvcc_watcher_total is missing from /metrics")


class Waiter:
    """``backend.acquire(...)`` in a thread, keeping its lease (or error) and when it returned."""

    def __init__(self, backend: EtcdBackend, name: str, **kw: Any) -> None:
        self.lease: Lease | None = None
        self.error: BaseException | None = None
        self.at = 0.0
        kw = {"limit": 1, "ttl": 3.0, "wait": 20.0, "client": ME, **kw}

        def run() -> None:
            try:
                self.lease = backend.acquire(name, **kw)
            except BaseException as e:
                self.error = e
            self.at = time.monotonic()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def done(self) -> bool:
        return not self.thread.is_alive()

    def result(self, timeout: float = 10.0) -> Lease:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "acquire did not return"
        if self.error is not None:
            raise self.error
        assert self.lease is not None
        return self.lease


@pytest.fixture
def backend(etcd: EtcdServer) -> Iterator[Callable[[], EtcdBackend]]:
    """Factory of backends on the test's etcd; all closed at teardown."""
    made: list[EtcdBackend] = []

    def make() -> EtcdBackend:
        b = EtcdBackend((etcd.endpoint,))
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def queued(b: EtcdBackend, name: str, waiters: int) -> bool:
    return any(info.name == name and len(info.waiters) == waiters for info in b.locks())


# --- tests ------------------------------------------------------------------------------------------
def test_uncontended_acquire_release_and_increasing_tokens(
    etcd: EtcdServer, backend: Callable[[], EtcdBackend]
) -> None:
    """A free lock is granted at once; release deletes its key; each grant's fencing token is
    greater than the one before."""
    b = backend()
    tokens = []
    for _ in range(3):
        sent = time.monotonic()
        lease = b.acquire("db/migrate", limit=1, ttl=2.0, wait=0, client=ME)
        assert lease.name == "db/migrate" and lease.limit == 1 and lease.ttl == 2.0
        assert not lease.lost
        assert sent + 2.0 <= lease.valid_until <= time.monotonic() + 2.0
        assert raw_keys(etcd) and raw_keys(etcd)[0].startswith(DEFAULT_PREFIX + "db%2Fmigrate/")
        tokens.append(lease.token)
        b.release(lease)
        b.release(lease)  # idempotent
        assert lease.released and not lease.lost
        assert raw_keys(etcd) == []
    assert tokens == sorted(tokens) and len(set(tokens)) == 3


def test_waiters_are_granted_in_arrival_order(backend: Callable[[], EtcdBackend]) -> None:
    """Five waiters queued one after another get the lock in that order, with increasing
    tokens, each as soon as the one before releases."""
    holder_b = backend()
    holder = holder_b.acquire("fifo", limit=1, ttl=3.0, wait=0, client=ME)
    order: list[tuple[int, int]] = []
    waiters = []
    for i in range(5):
        b = backend()

        def run(b: EtcdBackend = b, i: int = i) -> None:
            lease = b.acquire("fifo", limit=1, ttl=3.0, wait=20.0, client=ME)
            order.append((i, lease.token))
            b.release(lease)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        waiters.append(t)
        wait_until(lambda i=i: queued(holder_b, "fifo", i + 1), 5, f"waiter {i} to queue")
    assert order == []
    holder_b.release(holder)
    for t in waiters:
        t.join(10)
        assert not t.is_alive()
    assert [i for i, _ in order] == [0, 1, 2, 3, 4]
    tokens = [holder.token] + [tok for _, tok in order]
    assert tokens == sorted(tokens) and len(set(tokens)) == 6


def test_try_lock_on_a_held_lock_raises_lock_timeout(
    etcd: EtcdServer, backend: Callable[[], EtcdBackend]
) -> None:
    """wait=0 on a held lock raises LockTimeout at once, naming the holder, and leaves no key
    of the failed request behind."""
    a, b = backend(), backend()
    lease = a.acquire("busy", limit=1, ttl=3.0, wait=0, client=ME)
    start = time.monotonic()
    with pytest.raises(LockTimeout, match="busy") as info:
        b.acquire("busy", limit=1, ttl=3.0, wait=0, client=ME)
    assert time.monotonic() - start < 1.0
    assert "testhost" in str(info.value) and info.value.name == "busy"
    assert len(raw_keys(etcd)) == 1
    a.release(lease)


def test_wait_timeout_raises_and_leaves_no_key(
    etcd: EtcdServer, backend: Callable[[], EtcdBackend]
) -> None:
    """A waiter that is not granted within ``wait`` seconds gets LockTimeout after about that
    long, and its key and lease are gone from etcd."""
    a, b = backend(), backend()
    lease = a.acquire("slow", limit=1, ttl=3.0, wait=0, client=ME)
    start = time.monotonic()
    with pytest.raises(LockTimeout, match=r"not granted within 0\.6s"):
        b.acquire("slow", limit=1, ttl=3.0, wait=0.6, client=ME)
    assert 0.55 <= time.monotonic() - start < 2.0
    assert len(raw_keys(etcd)) == 1
    assert [info.waiters for info in a.locks()] == [()]
    leases = gateway(etcd, "/v3/lease/leases", {}).get("leases", [])
    assert len(leases) == 1  # only the holder's
    a.release(lease)


def test_semaphore_admits_limit_holders(backend: Callable[[], EtcdBackend]) -> None:
    """With limit 2, two holders are granted at once, a third waits, and gets a place as soon
    as either holder releases."""
    b = backend()
    first = b.acquire("pool", limit=2, ttl=3.0, wait=0, client=ME)
    second = b.acquire("pool", limit=2, ttl=3.0, wait=0, client=ME)
    assert first.token < second.token
    with pytest.raises(LockTimeout):
        b.acquire("pool", limit=2, ttl=3.0, wait=0, client=ME)
    third = Waiter(backend(), "pool", limit=2)
    wait_until(lambda: queued(b, "pool", 1), 5, "the third request to queue")
    [info] = b.locks()
    assert info.limit == 2 and [h.token for h in info.holders] == [first.token, second.token]
    b.release(second)
    lease = third.result()
    assert lease.token > second.token and not first.lost
    b.release(first)


def test_limit_mismatch_raises_usage_error(
    etcd: EtcdServer, backend: Callable[[], EtcdBackend]
) -> None:
    """Asking for a lock with another limit than its holders' raises UsageError naming both
    limits, and cleans up the request's key."""
    a, b = backend(), backend()
    lease = a.acquire("mixed", limit=2, ttl=3.0, wait=0, client=ME)
    with pytest.raises(UsageError, match=r"limit 2.*limit 1"):
        b.acquire("mixed", limit=1, ttl=3.0, wait=5.0, client=ME)
    assert len(raw_keys(etcd)) == 1
    a.release(lease)


HOLDER_SCRIPT = textwrap.dedent(
    """
    import sys
    from heartline.lock._backend import ClientInfo
    from heartline.lock._etcd import EtcdBackend
    b = EtcdBackend((("127.0.0.1", int(sys.argv[1])),))
    lease = b.acquire("crash", limit=1, ttl=float(sys.argv[2]), wait=0, client=ClientInfo.here())
    print("held", lease.token, flush=True)
    sys.stdin.read()
    """
)


def test_killed_holder_loses_the_lock_within_its_ttl(
    etcd: EtcdServer, backend: Callable[[], EtcdBackend]
) -> None:
    """A holder process killed with SIGKILL stops renewing; the next waiter gets the lock
    within ttl + 0.5 s of the kill."""
    ttl = 1.0
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, str(etcd.client_port), str(ttl)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("held "), line
        held_token = int(line.split()[1])
        b = backend()
        waiter = Waiter(b, "crash", ttl=ttl)
        wait_until(lambda: queued(b, "crash", 1), 5, "the waiter to queue")
        killed_at = time.monotonic()
        os.killpg(proc.pid, signal.SIGKILL)
        lease = waiter.result()
        assert waiter.at - killed_at < ttl + 0.5
        assert lease.token > held_token
        b.release(lease)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                f.close()


def test_break_lock_makes_the_holders_lease_lost(
    etcd: EtcdServer, backend: Callable[[], EtcdBackend]
) -> None:
    """break_lock drops the holder (returns 1, waiters stay); the holder's lease turns lost
    and its on_lost callback runs; the waiter is granted."""
    a, admin = backend(), backend()
    lease = a.acquire("broken", limit=1, ttl=1.5, wait=0, client=ME)
    lost: list[LockError] = []
    lease.on_lost(lost.append)
    waiter = Waiter(backend(), "broken")
    wait_until(lambda: queued(admin, "broken", 1), 5, "the waiter to queue")
    assert admin.break_lock("broken") == 1
    next_lease = waiter.result()
    assert next_lease.token > lease.token
    wait_until(lambda: lease.lost, 2.0, "the broken lease to be lost")
    wait_until(lambda: lost, 2.0, "the on_lost callback")
    assert "broken" in str(lease.lost_error)
    assert admin.break_lock("nothing-here") == 0
    a.release(lease)  # releasing a lost lease is fine
    assert len(raw_keys(etcd)) == 1  # the new holder's


def test_waiter_keeps_waiting_across_an_etcd_restart(
    etcd: EtcdServer, backend: Callable[[], EtcdBackend]
) -> None:
    """etcd killed and restarted while a waiter waits: the waiter watches again (etcd sees a
    new watcher), and when the holder releases after the restart, the waiter gets the lock."""
    a = backend()
    lease = a.acquire("restart", limit=1, ttl=4.0, wait=0, client=ME)
    waiter = Waiter(backend(), "restart", ttl=4.0, wait=30.0)
    wait_until(lambda: watcher_count(etcd) == 1, 5, "the waiter to watch")
    etcd.kill()
    etcd.start()
    wait_until(lambda: watcher_count(etcd) == 1, 5, "the waiter to watch again after restart")
    assert not waiter.done()
    released_at = time.monotonic()
    a.release(lease)
    granted = waiter.result()
    assert waiter.at - released_at < 2.0  # a watch event, not a periodic re-read
    assert granted.token > lease.token and not granted.lost


def test_holder_survives_an_etcd_restart_shorter_than_its_ttl(
    etcd: EtcdServer, backend: Callable[[], EtcdBackend]
) -> None:
    """A holder keeps renewing through an etcd crash and restart shorter than its TTL: its
    lease is renewed after the restart, is never lost, and others still cannot take it."""
    ttl = 3.0
    a, b = backend(), backend()
    lease = a.acquire("steady", limit=1, ttl=ttl, wait=0, client=ME)
    killed_at = time.monotonic()
    etcd.kill()
    etcd.start()
    assert not lease.lost
    wait_until(lambda: lease.valid_until > killed_at + ttl, ttl, "a renewal after the restart")
    assert not lease.lost
    with pytest.raises(LockTimeout):
        b.acquire("steady", limit=1, ttl=ttl, wait=0, client=ME)
    [info] = b.locks()
    assert [h.token for h in info.holders] == [lease.token]
    a.release(lease)


def test_a_renewal_crossing_a_release_is_not_reported_as_a_loss(
    backend: Callable[[], EtcdBackend], caplog: pytest.LogCaptureFixture
) -> None:
    """The keepalive thread picks a held lease for renewal just as its holder releases it.
    What it then finds (etcd no longer has the lease, nor the key) is our own release, not a
    loss or a break: nothing says "lost" in the log and the released lease is not lost.
    (The interleaving is made certain by running the thread's renewal step right after the
    release, against the real etcd.)"""
    caplog.set_level(logging.DEBUG, logger="heartline.lock._etcd")
    b = backend()
    lease = b.acquire("crossed", limit=1, ttl=3.0, wait=0, client=ME)
    entry = b._held[lease]
    b.release(lease)
    b._renew(entry)
    assert [r.getMessage() for r in caplog.records if "lost" in r.getMessage()] == []
    assert not lease.lost and lease.lost_error is None


def test_a_release_etcd_misses_says_when_the_key_really_goes(
    etcd: EtcdServer, backend: Callable[[], EtcdBackend], caplog: pytest.LogCaptureFixture
) -> None:
    """Released while etcd is down, a lease cannot be revoked. The one-line warning does not
    promise that the key goes within the TTL: etcd gives every lease its full TTL again when
    it restarts (or elects a leader). And so it goes: after an outage longer than the TTL
    the key is still there, and it goes about one TTL after etcd is back."""
    caplog.set_level(logging.WARNING, logger="heartline.lock._etcd")
    ttl = 2.0
    b, other = backend(), backend()
    lease = b.acquire("outage", limit=1, ttl=ttl, wait=0, client=ME)
    witness = other.acquire("witness", limit=1, ttl=ttl, wait=0, client=ME)
    [key] = [k for k in raw_keys(etcd) if "/outage/" in k]
    etcd.kill()
    b.release(lease)
    [warning] = [r.getMessage() for r in caplog.records if "revoke" in r.getMessage()]
    assert "\n" not in warning and "within" not in warning, warning
    assert "2s TTL" in warning and "restarts" in warning, warning
    # The outage lasts longer than a TTL: the witness, granted with the released lock, sees
    # its own lease run out on its clock.
    wait_until(lambda: witness.lost, ttl + 5, "a whole TTL of outage")
    etcd.start()
    back = time.monotonic()
    assert key in raw_keys(etcd)
    wait_until(lambda: key not in raw_keys(etcd), ttl + 3, "etcd to drop the released key")
    assert time.monotonic() - back > ttl / 2


def test_locks_lists_holders_and_waiters_under_the_prefix(
    etcd: EtcdServer, backend: Callable[[], EtcdBackend]
) -> None:
    """locks() shows each lock's name (decoded), limit, holders with their tokens and waiters
    with token 0, and ignores keys outside its prefix or not written by heartline."""
    b = backend()
    other_prefix = EtcdBackend((etcd.endpoint,), prefix="/elsewhere/")
    try:
        other_lease = other_prefix.acquire("x", limit=1, ttl=3.0, wait=0, client=ME)
        gateway(etcd, "/v3/kv/put", {"key": b64(DEFAULT_PREFIX.encode() + b"stray"), "value": ""})
        held = b.acquire("a/b c", limit=1, ttl=3.0, wait=0, client=ME)
        pool = [b.acquire("pool", limit=3, ttl=3.0, wait=0, client=ME) for _ in range(2)]
        waiter = Waiter(backend(), "a/b c", client=ClientInfo("otherhost", 42, "batch"))
        wait_until(lambda: queued(b, "a/b c", 1), 5, "the waiter to queue")
        infos = {info.name: info for info in b.locks()}
        assert set(infos) == {"a/b c", "pool"}
        ab = infos["a/b c"]
        assert ab.limit == 1
        assert [(h.host, h.pid, h.label, h.token) for h in ab.holders] == [
            ("testhost", os.getpid(), "etcd-test", held.token)
        ]
        assert [(w.host, w.pid, w.label, w.token) for w in ab.waiters] == [
            ("otherhost", 42, "batch", 0)
        ]
        assert abs(ab.holders[0].since - time.time()) < 30
        assert infos["pool"].limit == 3 and [h.token for h in infos["pool"].holders] == [
            p.token for p in pool
        ]
        assert [i.name for i in other_prefix.locks()] == ["x"]
        b.release(held)
        b.release(waiter.result())
        other_prefix.release(other_lease)
    finally:
        other_prefix.close()


def test_unreachable_etcd_raises_lock_server_unreachable(
    etcd: EtcdServer, backend: Callable[[], EtcdBackend]
) -> None:
    """With etcd down, acquire and locks() raise LockServerUnreachable with a one-line message
    naming the endpoint and what to check; releasing a lease then does not raise."""
    b = backend()
    lease = b.acquire("down", limit=1, ttl=3.0, wait=0, client=ME)
    etcd.kill()
    for call in (
        lambda: b.acquire("down", limit=1, ttl=3.0, wait=None, client=ME),
        b.locks,
    ):
        with pytest.raises(LockServerUnreachable) as info:
            call()
        message = str(info.value)
        assert "\n" not in message
        assert f"127.0.0.1:{etcd.client_port}" in message and "is etcd running" in message
    b.release(lease)  # logs and moves on
    assert lease.released and not lease.lost


def test_unreachable_endpoint_is_skipped_for_a_live_one(etcd: EtcdServer) -> None:
    """With several endpoints, a dead one is skipped and the request goes to the next."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    b = EtcdBackend((("127.0.0.1", dead), etcd.endpoint))
    try:
        lease = b.acquire("multi", limit=1, ttl=2.0, wait=0, client=ME)
        b.release(lease)
    finally:
        b.close()


def test_close_releases_leases_wakes_waiters_and_stops_its_thread(
    etcd: EtcdServer, backend: Callable[[], EtcdBackend]
) -> None:
    """close() releases every lease the backend holds (their keys go), makes a waiting acquire
    raise LockError, and its keepalive thread exits."""
    a, b = backend(), backend()
    held = b.acquire("closing", limit=1, ttl=3.0, wait=0, client=ME)
    other = a.acquire("other", limit=1, ttl=3.0, wait=0, client=ME)
    waiter = Waiter(b, "other")
    wait_until(lambda: queued(a, "other", 1), 5, "the waiter to queue")
    threads = {t for t in threading.enumerate() if t.name == "heartline-etcd-keepalive"}
    b.close()
    assert held.released
    with pytest.raises(LockError, match="closed"):
        waiter.result(5)
    assert [i.name for i in a.locks()] == ["other"]
    assert queued(a, "other", 0)
    wait_until(lambda: sum(t.is_alive() for t in threads) == 1, 5, "b's thread to exit")
    a.release(other)
