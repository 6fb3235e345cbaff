"""Session-scoped entries on both backends (a real lockd and a real etcd on loopback): what a
session writes lives as long as the session, watches see every change, and a writer whose
server restarts writes its entries again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from tests.helpers import wait_until

from heartline.errors import LockError
from heartline.lock import ClientInfo, Entries, open_entries
from heartline.testing import EtcdServer

TTL = 2.0


@pytest.fixture
def server(lock_server: Any) -> Any:
    return lock_server


@pytest.fixture
def opened() -> Iterator[list[Entries]]:
    made: list[Entries] = []
    try:
        yield made
    finally:
        for e in made:
            e.close()


def entries_on(server: Any, opened: list[Entries], label: str = "test") -> Entries:
    e = open_entries(server.url, ttl=TTL, client=ClientInfo.here(label))
    opened.append(e)
    return e


def keys(e: Entries, prefix: str = "t/") -> dict[str, str]:
    return {x.key: x.value for x in e.entries(prefix)}


WRITER = textwrap.dedent("""\
    import sys, threading
    from heartline.lock import ClientInfo, open_entries
    e = open_entries(sys.argv[1], ttl=float(sys.argv[2]), client=ClientInfo.here("writer"))
    e.put("t/writer", "alive")
    print("ready", flush=True)
    threading.Event().wait()
""")


@pytest.fixture
def writer(server: Any) -> Iterator[subprocess.Popen[str]]:
    """Another process that wrote ``t/writer`` under its own session and then idles."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, server.url, str(TTL)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_put_is_read_and_watched_by_others_and_a_delete_removes_it(
    server: Any, opened: list[Entries]
) -> None:
    a, b = entries_on(server, opened, "a"), entries_on(server, opened, "b")
    a.put("t/x", "1")
    mirror = b.watch("t/")
    try:
        assert {k: v.value for k, v in mirror.snapshot().items()} == {"t/x": "1"}
        a.put("t/y", "2")
        a.put("t/x", "3")
        a.put("other/z", "not watched")
        wait_until(lambda: {k: v.value for k, v in mirror.snapshot().items()}
                   == {"t/x": "3", "t/y": "2"}, 10, "the watch to see both")  # fmt: skip
        assert keys(b) == {"t/x": "3", "t/y": "2"}
        a.delete("t/x")
        wait_until(lambda: "t/x" not in mirror.snapshot(), 10, "the watch to see the delete")
        assert keys(b) == {"t/y": "2"}
        assert mirror.wait_changed(0.01) is False  # nothing new since the last snapshot
    finally:
        mirror.close()


def test_closing_a_session_removes_its_entries_at_once(server: Any, opened: list[Entries]) -> None:
    a, b = entries_on(server, opened, "a"), entries_on(server, opened, "b")
    a.put("t/mine", "1")
    b.put("t/theirs", "2")
    mirror = b.watch("t/")
    try:
        a.close()
        # At once: well within the TTL after which a silent session would go anyway.
        wait_until(lambda: "t/mine" not in mirror.snapshot(), TTL / 2, "a's entry gone")
        assert keys(b) == {"t/theirs": "2"}
    finally:
        mirror.close()


def test_only_the_writer_deletes_its_entry(server: Any, opened: list[Entries]) -> None:
    a, b = entries_on(server, opened, "a"), entries_on(server, opened, "b")
    a.put("t/k", "a's")
    b.delete("t/k")  # b never wrote it: nothing happens
    assert keys(b) == {"t/k": "a's"}


def test_a_killed_writer_s_entries_end_with_its_session(
    server: Any, opened: list[Entries], writer: subprocess.Popen[str]
) -> None:
    """SIGKILL: lockd sees the connection close at once; etcd lets the lease run out."""
    reader = entries_on(server, opened)
    assert keys(reader) == {"t/writer": "alive"}
    os.killpg(writer.pid, signal.SIGKILL)
    wait_until(lambda: keys(reader) == {}, TTL + 5, "the writer's entry gone")


def test_a_frozen_writer_s_entries_go_after_its_ttl(
    server: Any, opened: list[Entries], writer: subprocess.Popen[str]
) -> None:
    reader = entries_on(server, opened)
    os.killpg(writer.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: keys(reader) == {}, TTL + 5, "the frozen writer's entry gone")
    finally:
        os.killpg(writer.pid, signal.SIGCONT)


def test_after_a_server_restart_a_writer_writes_its_entries_again(
    server: Any, opened: list[Entries]
) -> None:
    """lockd keeps no entries across a restart (etcd does, with its leases): the writer's
    thread reconnects and writes them again, and a watch started before is fed again."""
    a, b = entries_on(server, opened, "a"), entries_on(server, opened, "b")
    a.put("t/report", "v1")
    mirror = b.watch("t/")
    try:
        server.kill()
        server.start()
        wait_until(lambda: keys(b) == {"t/report": "v1"}, 15, "the entry back after a restart")
        a.put("t/report", "v2")
        wait_until(lambda: mirror.snapshot().get("t/report") is not None
                   and mirror.snapshot()["t/report"].value == "v2", 15,
                   "the watch to follow after the restart")  # fmt: skip
    finally:
        mirror.close()


def test_ages_count_from_the_write(server: Any, opened: list[Entries]) -> None:
    """lockd counts each entry's age on its own clock; etcd keeps none (None)."""
    a = entries_on(server, opened)
    a.put("t/aged", "v")
    first = a.entries("t/")[0]
    if isinstance(server, EtcdServer):
        assert first.age is None
        return
    assert first.age is not None and 0 <= first.age < 1
    later = wait_until(lambda: (e := a.entries("t/")[0]).age and e.age > 0.3 and e, 5, "aging")
    assert later.revision == first.revision


def test_an_unreachable_backend_is_a_lock_error(opened: list[Entries]) -> None:
    e = open_entries("heartline://127.0.0.1:1", ttl=TTL, client=ClientInfo.here("t"))
    opened.append(e)
    with pytest.raises(LockError, match="unreachable"):
        e.put("t/x", "1")


def test_a_kept_entry_outlives_its_session(server: Any, opened: list[Entries]) -> None:
    a, b = entries_on(server, opened, "a"), entries_on(server, opened, "b")
    a.put("t/kept", "progress", keep=True)
    a.put("t/mine", "session")
    a.close()
    wait_until(lambda: keys(b) == {"t/kept": "progress"}, TTL + 5, "only the kept entry left")
    b.delete("t/kept")
    assert keys(b) == {}
