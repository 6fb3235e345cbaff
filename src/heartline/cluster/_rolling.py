"""`heartline rolling`: a command on one host of a group at a time, under a cluster lock, each
host passing a health gate before the next one starts.

The operator's "clustrol" loop done once: the cluster lock (``--lock``, one per group by
default) keeps two operators or two cron jobs from rolling at once (the second waits); on
each host in the group's order CMD runs over SSH (the transport of `heartline place`, so
nothing is left running there when the roll stops); then the gate (an HTTP URL, ``{host}``
replaced by the host's address, or a shell command run on the host) must pass ``healthy``
times in a row within ``timeout``. The first failure stops the roll and the hosts after it
are left untouched. Losing the lock stops the command running on the current host.

Every step is an event (a dict with ``event``, ``host``, ``elapsed`` ...), handed to the
caller's ``emit``: a line each in the terminal, or JSON lines with ``--json``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from heartline.cluster._ssh import Remote, Ssh
from heartline.cluster._store import EntryStore, open_store
from heartline.config import ClusterSpec
from heartline.errors import (
    ClusterError,
    LockError,
    LockLost,
    RollStopped,
    UnknownHostSet,
    UsageError,
)
from heartline.lock import ClientInfo, LeaseState, open_backend

#: The lock's lease: short enough that a roll whose operator's machine died frees the group
#: soon, renewed every third of it.
LOCK_TTL = 10.0
#: Between two gate attempts.
GATE_EVERY = 1.0
#: One gate attempt (an HTTP request, or the check command over SSH).
GATE_TIMEOUT = 5.0
#: The events a --notify URL is told of.
NOTIFIED = ("started", "host done", "command failed", "gate failed", "finished")


class Notifier:
    """POSTs events as JSON to a URL from a thread of its own, in order, each with a short
    timeout and a few quick retries: a slow or dead receiver never holds up the roll (at
    the end, undelivered events get at most ``drain`` seconds)."""

    TIMEOUT = 2.0
    TRIES = 3

    def __init__(self, url: str, *, warn: Callable[[str], None]) -> None:
        self.url = url
        self.warn = warn
        self._queue: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._warned = False
        self._thread = threading.Thread(target=self._run, name="heartline-notify", daemon=True)
        self._thread.start()

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] in NOTIFIED:
            with self._cond:
                self._queue.append(event)
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return
                event = self._queue.pop(0)
            self._post(event)

    def _post(self, event: dict[str, Any]) -> None:
        import json
        import urllib.request

        body = json.dumps(event).encode()
        why = ""
        for attempt in range(self.TRIES):
            req = urllib.request.Request(  # noqa: S310 - http(s) only, checked by the CLI
                self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=self.TIMEOUT) as resp:  # noqa: S310
                    if 200 <= resp.status < 300:
                        return
                    why = f"HTTP {resp.status}"
            except (OSError, ValueError) as e:
                why = str(getattr(e, "reason", e))
            if attempt + 1 < self.TRIES:
                time.sleep(0.2 * (attempt + 1))
        if not self._warned:
            self._warned = True
            self.warn(f"--notify {self.url}: {why}; the roll goes on without it")

    def close(self, drain: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(drain)


@dataclass(frozen=True)
class Gate:
    url: str | None = None
    exec: str | None = None
    healthy: int = 3
    timeout: float = 60.0

    @property
    def what(self) -> str:
        return self.url or f"sh -c {self.exec!r}"


Emit = Callable[[dict[str, Any]], None]


def hosts_of(spec: ClusterSpec, group: str) -> list[str]:
    members = spec.groups.get(group)
    if members is None:
        known = ", ".join(sorted(spec.groups)) or "none"
        raise UnknownHostSet(f"no host group {group!r} (groups: {known}; declare groups in "
                             "[cluster.groups])")  # fmt: skip
    if not members:
        raise UsageError(f"host group {group!r} is empty: name its hosts in [cluster.groups]")
    return list(members)


class Roll:
    def __init__(
        self, spec: ClusterSpec, group: str, command: Sequence[str], *, gate: Gate | None,
        lock: str | None = None, pause: float = 0.0, emit: Emit, order: str = "group",
        resume: bool = False,
    ) -> None:  # fmt: skip
        if not command:
            raise UsageError("rolling: give the command after --: heartline rolling --group G "
                             "-- CMD ARGS...")  # fmt: skip
        self.spec = spec
        self.group = group
        self.hosts = hosts_of(spec, group)
        self.command = list(command)
        self.gate = gate
        self.order = order
        self.resume = resume
        self.lock = lock or f"heartline-rolling-{group}"
        self.pause = pause
        self.emit = emit
        self.ssh = Ssh(config=spec.ssh_config, options=spec.ssh_options)
        self.t0 = time.monotonic()
        self._lost = threading.Event()
        self._remote: Remote | None = None
        self._addresses: dict[str, str] = {}
        self._lookup: threading.Thread | None = None

    def _event(self, event: str, host: str | None = None, **kw: Any) -> None:
        self.emit({"event": event, "host": host, "elapsed": round(time.monotonic() - self.t0, 3),
                   **kw})  # fmt: skip

    def _on_lease(self, state: LeaseState) -> None:
        if state in (LeaseState.SUSPECT, LeaseState.LOST):
            # Stop before the lease can run out on the server: nobody else may roll while
            # our command still runs.
            self._lost.set()
            remote = self._remote
            if remote is not None:
                remote.stop()

    def run(self) -> None:
        """Roll over every host; raises RollStopped or LockLost at the first failure."""
        backend = open_backend(self.spec.backend, **self.spec.credentials)
        # The gate's URLs need each host's address (an `ssh -G` each): looked up all at once,
        # while the lock is asked for and the first command runs, not one by one between hosts.
        lookup = self._look_up_addresses()
        try:
            self._event("waiting for the lock", lock=self.lock)
            who = ClientInfo.here(f"heartline rolling {self.group}")
            lease = backend.acquire(self.lock, limit=1, ttl=LOCK_TTL, wait=None, client=who)
            lease.on_state(self._on_lease)
            self._lookup = lookup
            store = open_store(self.spec, ttl=LOCK_TTL, label=who.label)
            try:
                self._roll(store, lease.token)
            finally:
                store.close()
                backend.release(lease)
        finally:
            backend.close()

    def _roll(self, store: EntryStore, token: int) -> None:
        """Under the lock: the hosts still to do (all, or with --resume those the stopped
        roll left), each in turn; the progress kept in the backend after every host."""
        key = progress_key(self.lock)
        before = read_progress(store, key)
        done: list[str] = []
        if self.resume:
            if before is None:
                raise UsageError(f"--resume: no stopped roll under lock {self.lock!r} to "
                                 "continue; run it without --resume")  # fmt: skip
            if before["group"] != self.group:
                raise UsageError(f"--resume: the stopped roll under lock {self.lock!r} was of "
                                 f"group {before['group']!r}, not {self.group!r}")  # fmt: skip
            self.hosts = list(before["hosts"])
            done = [h for h in before["done"] if h in self.hosts]
        else:
            if before is not None:
                self._event("progress discarded", stopped_at=before.get("stopped_at"),
                            done=before["done"])  # fmt: skip
            if self.order == "load":
                self.hosts = by_load(self.spec, self.hosts)
        todo = [h for h in self.hosts if h not in done]

        def save(stopped_at: str | None) -> None:
            doc = {"v": 1, "group": self.group, "hosts": self.hosts, "done": done,
                   "stopped_at": stopped_at, "command": self.command}  # fmt: skip
            store.put(key, json.dumps(doc), keep=True)

        self._event("started", lock=self.lock, token=token, hosts=todo, done=done)
        save(None)
        host = None
        try:
            for i, host in enumerate(todo):
                if i and self.pause:
                    self._check_lock()
                    time.sleep(self.pause)
                self._one(host, self.hosts.index(host))
                done.append(host)
                save(None)
        except BaseException:
            # Stopped (a failure, a lost lock, Ctrl-C): --resume continues at this host.
            with contextlib.suppress(ClusterError, LockError):
                save(host)
            raise
        store.delete(key)
        self._event("finished", hosts=len(todo))

    def _check_lock(self) -> None:
        if self._lost.is_set():
            raise LockLost(f"lost the lock {self.lock!r}: the roll stopped", name=self.lock)

    def _destination(self, host: str) -> str:
        return self.spec.host(host).ssh_destination or host

    def _look_up_addresses(self) -> threading.Thread | None:
        gate = self.gate
        if gate is None or gate.url is None or "{host}" not in gate.url:
            return None

        def look_up() -> None:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(8, len(self.hosts)) or 1) as pool:
                found = pool.map(lambda h: self.ssh.hostname(self._destination(h)), self.hosts)
                self._addresses.update(zip(self.hosts, found, strict=True))

        thread = threading.Thread(target=look_up, name="heartline-addresses", daemon=True)
        thread.start()
        return thread

    def _address(self, host: str) -> str:
        """The host's address for a URL: its ssh destination as ssh resolves it."""
        lookup, self._lookup = self._lookup, None
        if lookup is not None:
            lookup.join()  # done by now, mostly: it ran while the first command did
        if host not in self._addresses:
            self._addresses[host] = self.ssh.hostname(self._destination(host))
        return self._addresses[host]

    def _one(self, host: str, index: int) -> None:
        self._check_lock()
        began = time.monotonic()
        self._event("host started", host, step=f"{index + 1}/{len(self.hosts)}")
        self._remote = remote = self.ssh.start(self._destination(host), self.command)
        if self._lost.is_set():
            # Lost while the command was being started, before _on_lease could see it.
            remote.stop()
        try:
            rc = remote.wait()
        finally:
            self._remote = None
        self._check_lock()
        if rc != 0:
            self._event("command failed", host, exit=rc)
            raise RollStopped(f"stopped at host {host}: the command exited {rc}; hosts after "
                              "it were left untouched")  # fmt: skip
        if self.gate is not None:
            self._gate(host)
        self._event("host done", host, seconds=round(time.monotonic() - began, 3))

    def _gate(self, host: str) -> None:
        gate = self.gate
        assert gate is not None
        deadline = time.monotonic() + gate.timeout
        passes = attempts = 0
        while True:
            self._check_lock()
            attempts += 1
            ok, why = self._check(host, gate)
            passes = passes + 1 if ok else 0
            self._event("gate", host, attempt=attempts, ok=ok, passes=passes, why=why)
            if passes >= gate.healthy:
                return
            if time.monotonic() + GATE_EVERY > deadline:
                self._event("gate failed", host, attempts=attempts, why=why)
                raise RollStopped(
                    f"stopped at host {host}: {gate.what} did not pass {gate.healthy} times in "
                    f"a row within {gate.timeout:g}s (last: {why}); hosts after it were left "
                    "untouched"
                )  # fmt: skip
            time.sleep(GATE_EVERY)

    def _check(self, host: str, gate: Gate) -> tuple[bool, str]:
        if gate.url is not None:
            # Imported here: urllib.request brings ssl, which a roll without a URL gate
            # (and every cold start of the command) does without.
            import urllib.error
            import urllib.request

            url = gate.url.replace("{host}", self._address(host))
            try:
                with urllib.request.urlopen(url, timeout=GATE_TIMEOUT) as resp:  # noqa: S310
                    return 200 <= resp.status < 400, f"HTTP {resp.status}"
            except urllib.error.HTTPError as e:
                return False, f"HTTP {e.code}"
            except (OSError, ValueError) as e:
                return False, str(getattr(e, "reason", e))
        remote = self.ssh.start(self._destination(host), ["sh", "-c", gate.exec or "true"])
        try:
            rc = remote.wait(GATE_TIMEOUT)
        except subprocess.TimeoutExpired:
            remote.stop()  # the far side stops the check
            remote.proc.kill()
            remote.proc.wait()
            return False, f"no answer within {GATE_TIMEOUT:g}s"
        except ClusterError as e:  # ssh could not reach the host: a failed attempt
            return False, str(e)
        return rc == 0, f"exit {rc}"


def by_load(spec: ClusterSpec, hosts: list[str]) -> list[str]:
    """``hosts``, the least loaded first (load per CPU of their live reports and holds); those
    without a fresh report last, in the group's order."""
    from heartline.cluster._place import hosts as host_list
    from heartline.cluster._reporter import session_ttl
    from heartline.cluster._wire import PREFIX

    store = open_store(spec, ttl=session_ttl(spec.report_interval), label="heartline rolling")
    try:
        infos = {i["name"]: i for i in host_list(spec, store.entries(PREFIX))}
    finally:
        store.close()

    def key(host: str) -> tuple[int, float, int]:
        info = infos.get(host)
        report = info["report"] if info else None
        if info is None or report is None or info["state"] != "up":
            return (1, 0.0, hosts.index(host))
        held = sum(h["cpus"] for h in info["holds"])
        load = (report["other"] + held) / max(report["cpus"], 1)
        return (0, load, hosts.index(host))

    return sorted(hosts, key=key)


#: Where a roll's progress is kept (an entry that outlives the roll), by its lock's name.
PROGRESS = "heartline/rolling/"


def progress_key(lock: str) -> str:
    return PROGRESS + lock


def read_progress(store: EntryStore, key: str) -> dict[str, Any] | None:
    """The progress a stopped roll left under ``key``, checked; None when there is none (or
    it cannot be read: a roll then starts over)."""
    for e in store.entries(key):
        if e.key != key:
            continue
        try:
            doc = json.loads(e.value)
        except ValueError:
            return None
        ok = (isinstance(doc, dict) and isinstance(doc.get("group"), str)
              and all(isinstance(doc.get(k), list) and all(isinstance(h, str) for h in doc[k])
                      for k in ("hosts", "done")))  # fmt: skip
        return doc if ok else None
    return None
