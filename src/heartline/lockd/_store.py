"""lockd's durable state: an epoch file and an append-only journal of grants and releases.

Why this keeps a restarted server from granting a held lock twice (the flaw of lockerd, which
forgot every lock when it restarted):

* Every grant is appended to the journal with ``write()`` *before* the grant is sent. A write
  that returned is in the kernel's page cache, which outlives the process, so a lockd killed with
  SIGKILL and started again reads back every grant it ever sent. It restores them and holds each
  one for a full lease (TTL) from the restart, during which its holder reconnects and resumes its
  session; a holder that does not come back loses the grant when that lease runs out, exactly as
  if the server had stayed up. Unheld locks are granted at once: nobody waits for the restart.
* The page cache does not outlive the *host*, and fsync on every grant would cost about a
  millisecond each here. So the epoch file records the kernel's boot id; after a reboot the
  journal's tail may be missing, and the server then grants nothing new for one longest lease
  (``max_ttl``, also in the epoch file, fsynced whenever a longer lease is first asked for).
  By then every holder it may have forgotten has seen its own lease run out and stopped.
* Fencing tokens are ``epoch << 32 | n``. The epoch is bumped and fsynced at every start, so
  tokens keep growing across restarts even if the journal lost its tail.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from heartline._util import boot_id
from heartline.errors import HeartlineError, UsageError
from heartline.lock import protocol
from heartline.lockd._table import Grant, Who

log = logging.getLogger(__name__)
quote = protocol.quote

_SEQ_BITS = 32
_COMPACT_BYTES = 8 * 1024 * 1024


@functools.lru_cache(maxsize=4096)
def _who(who: Who) -> bytes:
    return b'"s":%s,"h":%s,"p":%d,"lb":%s' % (
        quote(who.session), quote(who.host), who.pid, quote(who.label))  # fmt: skip


class StoreError(HeartlineError):
    """The data directory cannot be used."""

    exit_code = 2


@dataclass
class Recovered:
    grants: list[tuple[Grant, float]]  # grant and its session's ttl
    rebooted: bool
    max_ttl: float
    epoch: int


class Store:
    """The files under ``--data``: ``state.json`` (fsynced), ``journal`` (append only)."""

    def __init__(self, data_dir: str) -> None:
        self.dir = data_dir
        self.epoch = 0
        self.seq = 0
        self.max_ttl = 0.0
        self._fd = -1
        self._lock_fd = -1
        self._size = 0

    # --- start-up -------------------------------------------------------------------------
    def open(self) -> Recovered:
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            self._lock_fd = os.open(os.path.join(self.dir, "lockd.lock"), os.O_RDWR | os.O_CREAT,
                                    0o600)  # fmt: skip
        except OSError as e:
            raise StoreError(f"lockd --data {self.dir}: {e.strerror}; choose a writable "
                             "directory") from None  # fmt: skip
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(
                f"lockd --data {self.dir}: another lockd uses this directory; stop it or "
                "give each server its own --data"
            ) from None
        state = self._read_state()
        self.epoch = int(state.get("epoch", 0)) + 1
        self.max_ttl = float(state.get("max_ttl", 0.0))
        rebooted = bool(state) and state.get("boot_id") != boot_id()
        self._write_state()
        grants = self._replay()
        self._rewrite_journal([g for g, _ in grants], {g.token: ttl for g, ttl in grants})
        return Recovered(grants, rebooted, self.max_ttl, self.epoch)

    def _read_state(self) -> dict[str, Any]:
        path = os.path.join(self.dir, "state.json")
        try:
            with open(path) as f:
                state = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise StoreError(
                f"{path}: unreadable ({e}); restore it from a backup, or delete the data "
                "directory only when no lock is held"
            ) from None
        if (
            not isinstance(state, dict)
            or type(state.get("epoch", 0)) is not int
            or type(state.get("max_ttl", 0.0)) not in (int, float)
        ):
            raise StoreError(f"{path}: not a lockd state file; move it away")
        return state

    def _write_state(self) -> None:
        path = os.path.join(self.dir, "state.json")
        tmp = path + ".tmp"
        doc = {"epoch": self.epoch, "max_ttl": self.max_ttl, "boot_id": boot_id()}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(doc).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _replay(self) -> list[tuple[Grant, float]]:
        path = os.path.join(self.dir, "journal")
        live: dict[int, tuple[Grant, float]] = {}
        try:
            with open(path, "rb") as f:
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            return []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if "g" in rec:
                    who = Who(rec["s"], rec.get("h", ""), int(rec.get("p", 0)), rec.get("lb", ""))
                    g = Grant(rec["g"], int(rec["t"]), int(rec["l"]), who, float(rec["at"]))
                    live[g.token] = (g, float(rec["ttl"]))
                elif "r" in rec:
                    live.pop(int(rec["t"]), None)
            except (ValueError, KeyError, TypeError) as e:
                # A torn last line after a crash is expected; anything else is worth a warning.
                if n < len(lines) - 1:
                    log.warning("%s:%d: skipped an unreadable record (%s)", path, n, e)
        return sorted(live.values(), key=lambda item: item[0].token)

    def _rewrite_journal(self, grants: list[Grant], ttls: dict[int, float]) -> None:
        path = os.path.join(self.dir, "journal")
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for g in grants:
                os.write(fd, self._grant_line(g, ttls[g.token]))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._size = os.fstat(self._fd).st_size

    # --- running --------------------------------------------------------------------------
    def next_token(self) -> int:
        self.seq += 1
        if self.seq >= 1 << _SEQ_BITS:
            self.epoch += 1
            self.seq = 1
            self._write_state()
        return (self.epoch << _SEQ_BITS) | self.seq

    def raise_max_ttl(self, ttl: float) -> None:
        """Record (durably) that a lease this long may be out there."""
        if ttl > self.max_ttl:
            self.max_ttl = ttl
            self._write_state()

    @staticmethod
    def _grant_line(g: Grant, ttl: float) -> bytes:
        # By hand rather than json.dumps of a dict: this runs for every grant. Strings still go
        # through json.dumps (quotes, escapes); the who-part is the same for a whole session.
        return b'{"g":%s,"t":%d,"l":%d,%s,"at":%r,"ttl":%r}\n' % (
            quote(g.name), g.token, g.limit, _who(g.who), g.since, ttl)  # fmt: skip

    def granted(self, g: Grant, ttl: float) -> None:
        self._append(self._grant_line(g, ttl))

    def released(self, g: Grant) -> None:
        self._append(b'{"r":%s,"t":%d}\n' % (quote(g.name), g.token))

    def _append(self, line: bytes) -> None:
        # One write() per record with O_APPEND: a record is either wholly there or torn at the
        # very end (which replay skips).
        os.write(self._fd, line)
        self._size += len(line)

    def needs_compaction(self) -> bool:
        return self._size > _COMPACT_BYTES

    def compact(self, grants: list[Grant], ttls: dict[int, float]) -> None:
        self._rewrite_journal(grants, ttls)

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = -1
