"""A daemon's load report, published in the cluster's backend under the daemon's session.

Schedule::Load's ``slreportd``, done so that nobody has to ask: every ``report_interval`` (and
at once when the daemon's programs change) the daemon writes its report to
``heartline/cluster/reports/HOST``. The entry lives under the daemon's own backend session,
so it vanishes when the daemon or its host dies (lockd: the connection closes; etcd: the
lease runs out): "gone" needs no timer of its own. Readers see the report's age and call a
host whose report is older than two intervals unresponsive.

A thread of its own, not the daemon's loop: the backend clients are synchronous and a
backend that does not answer must never hold up supervision. The thread sleeps on an event
between reports (woken early by :meth:`Reporter.poke`), so an idle cluster costs one /proc
walk per interval.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

from heartline.api import CLUSTER_FORMAT, HostReport
from heartline.cluster._load import LoadSampler
from heartline.cluster._store import EntryStore, open_store
from heartline.cluster._wire import HOLDS, BadEntry, decode_hold, encode, report_key
from heartline.errors import HeartlineError

if TYPE_CHECKING:
    from heartline.config import ClusterSpec

log = logging.getLogger(__name__)


def session_ttl(interval: float) -> float:
    """How long the backend keeps a silent daemon's session (and so its report): long
    enough to ride out a lock server restart, short enough that a host cut off is gone soon."""
    return max(10.0, 5 * interval)


class Reporter:
    def __init__(self, spec: ClusterSpec, *, name: str | None = None) -> None:
        self.spec = spec
        self.name = name or spec.name or socket.gethostname()
        self.interval = spec.report_interval
        self.programs = 0
        self.seq = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._store: EntryStore | None = None
        self._last_other: float | None = None
        self._sampler = LoadSampler()
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="heartline-report", daemon=True)
        self._thread.start()

    def set_programs(self, running: int) -> None:
        """Called from the daemon's loop; a change is published at once."""
        if running != self.programs:
            self.programs = running
            self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop publishing and end the session (the report vanishes with it)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def held(self) -> float:
        """CPUs the placements' holds on this host claim now, read from the backend.

        Read after the /proc sample, never before: a placed command starts only after its
        hold is written, so every placed command the sample counted has its hold in this
        read. (Read before, or from a watch that lags behind under load, a command that
        started in between would count as load of the host's own, making it look busier
        than it is until the next report.)"""
        if self._store is None:
            return 0.0
        total = 0.0
        for e in self._store.entries(f"{HOLDS}{self.name}/"):
            try:
                total += decode_hold(e.value)["cpus"]
            except BadEntry:
                continue
        return total

    def report(self) -> HostReport:
        s = self._sampler.sample()
        held = self.held()
        other = max(s.runnable - held, 0.0)
        last, self._last_other = self._last_other, other
        conf = self.spec.host(self.name)
        self.seq += 1
        return HostReport(
            v=CLUSTER_FORMAT,
            host=self.name,
            sampled=s.sampled,
            seq=self.seq,
            interval=self.interval,
            cpus=s.cpus,
            runnable=s.runnable,
            load=s.load,
            cpu_busy=s.cpu_busy,
            mem_available=s.mem_available,
            mem_total=s.mem_total,
            psi=s.psi,
            programs=self.programs,
            held=held,
            other=other if last is None else min(other, last),
            labels=list(conf.labels),
            groups=list(self.spec.groups_of(self.name)),
            capacity={"cpus": conf.cpus, "mem": conf.mem},
            address=conf.ssh_destination,
        )

    def _publish(self) -> None:
        if self._store is None:
            self._store = open_store(self.spec, ttl=session_ttl(self.interval),
                                     label=f"heartline daemon on {self.name}")  # fmt: skip
        self._store.put(report_key(self.name), encode(self.report()))

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                began = time.monotonic()
                try:
                    self._publish()
                    if self._failing:
                        log.info("cluster backend %s reachable again", self.spec.backend)
                        self._failing = False
                except HeartlineError as e:
                    if not self._failing:
                        log.warning("cannot publish this host's load report: %s", e)
                        self._failing = True
                    self._close_store()
                # Sleep to the next interval, or until a change is poked.
                self._wake.wait(max(0.0, self.interval - (time.monotonic() - began)))
                self._wake.clear()
        finally:
            self._close_store()
            self._sampler.close()

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except HeartlineError as e:
                log.debug("closing the cluster backend: %s", e)
