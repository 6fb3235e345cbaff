"""The journal of a run: every fault applied, as a lease with the undo that ends it.

Written (atomically) before a fault is applied and again when it is undone, in a private
directory (``RUN_DIR/chaos``, 0700). A run that ends cleanly removes its journal. One that was
SIGKILLed leaves it behind, and `heartline chaos undo` runs the undos that did not run, in the
places they belong to (the dead-man agents will most often have done so already; an undo runs
twice harmlessly: SIGCONT, deleting a rule table, removing a file, booting a host that is up
are all safe to repeat).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from heartline.chaos._places import Place

log = logging.getLogger(__name__)


def journal_dir() -> str:
    from heartline.config import default_run_dir

    return os.path.join(default_run_dir(), "chaos")


@dataclass
class Lease:
    id: str
    fault: str
    label: str
    place: Place
    undo: list[str] | None
    #: applied | undone | undo-error | gone (ends by itself: a hog's own deadline)
    state: str = "applied"
    expires: float = 0.0
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fault": self.fault,
            "label": self.label,
            "place": self.place.to_json(),
            "undo": self.undo,
            "state": self.state,
            "expires": self.expires,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, d: Any) -> Lease:
        undo = d.get("undo")
        if undo is not None and not (
            isinstance(undo, list) and all(isinstance(x, str) for x in undo)
        ):
            raise ValueError("undo is not an argv")
        return cls(
            id=str(d["id"]),
            fault=str(d["fault"]),
            label=str(d["label"]),
            place=Place.from_json(d["place"]),
            undo=undo,
            state=str(d["state"]),
            expires=float(d.get("expires", 0.0)),
            error=str(d.get("error", "")),
        )


@dataclass
class Journal:
    path: str
    run: str
    file: str
    pid: int = field(default_factory=os.getpid)
    start: int | None = None
    leases: list[Lease] = field(default_factory=list)

    @classmethod
    def create(cls, experiment_file: str, where: str | None = None) -> Journal:
        from heartline._util import ensure_private_dir, start_time

        where = where or journal_dir()
        ensure_private_dir(where)
        run = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
        j = cls(
            path=os.path.join(where, run + ".json"),
            run=run,
            file=os.path.abspath(experiment_file),
            start=start_time(os.getpid()),
        )
        j.save()
        return j

    def save(self) -> None:
        from heartline._util import atomic_write

        body = {
            "run": self.run,
            "file": self.file,
            "pid": self.pid,
            "start": self.start,
            "leases": [x.to_json() for x in self.leases],
        }
        atomic_write(self.path, json.dumps(body, indent=1).encode(), mode=0o600)

    def add(self, lease: Lease) -> None:
        self.leases.append(lease)
        self.save()

    def mark(self, lease: Lease, state: str, error: str = "") -> None:
        lease.state = state
        lease.error = error
        self.save()

    def open_leases(self) -> list[Lease]:
        return [x for x in self.leases if x.state == "applied"]

    def close(self) -> None:
        """The run ended with every lease undone (or failed to undo, said so): no journal."""
        if self.open_leases():
            self.save()
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    @classmethod
    def read(cls, path: str) -> Journal:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return cls(
            path=path,
            run=str(d["run"]),
            file=str(d["file"]),
            pid=int(d["pid"]),
            start=d.get("start"),
            leases=[Lease.from_json(x) for x in d["leases"]],
        )

    def controller_alive(self) -> bool:
        from heartline._util import start_time

        try:
            return self.start is not None and start_time(self.pid) == self.start
        except OSError:
            return False


def journals(where: str | None = None) -> Iterator[str]:
    where = where or journal_dir()
    try:
        names = sorted(os.listdir(where))
    except FileNotFoundError:
        return
    for name in names:
        if name.endswith(".json"):
            yield os.path.join(where, name)
