"""`logs -f` followers against a real daemon and a real log flood: a follower that does not
read costs a bounded amount of memory, is told how much it missed, and what it held serves
again once it is gone."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from tests.integration.conftest import py, wait_until

FLOOD_MIB = 96
FOLLOWERS = 25
#: The daemon may grow this much while 25 stalled followers watch the flood (it grew by more
#: than 130 MB when each follower could queue a thousand chunks).
MAX_GROWTH = 32 * 1024 * 1024

ROUNDS = 2
# Says "ready", then floods once each time the test opens the fifo "go".
FLOOD = py(f"""
import sys, time
print("ready", flush=True)
block = (b"y" * 1023 + b"\\n") * 1024
for round in range({ROUNDS}):
    with open("go") as fifo:
        fifo.read()
    for _ in range({FLOOD_MIB}):
        sys.stdout.buffer.write(block)
    sys.stdout.flush()
    open(f"done{{round}}", "w").close()
time.sleep(3600)
""")


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def follow(path: str) -> socket.socket:
    """A follower that has read its first line (the tail) and will now read nothing more."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(path)
    s.sendall(b"GET /v1/logs/flood?follow=true&lines=1 HTTP/1.1\r\nHost: heartline\r\n\r\n")
    got = b""
    while not dechunk(got.partition(b"\r\n\r\n")[2]).endswith(b"\n"):
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    assert got.startswith(b"HTTP/1.1 200 "), got[:80]
    return s


def dechunk(raw: bytes) -> bytes:
    """The payload of a chunked body (as much of it as has arrived)."""
    out, rest = [], raw
    while b"\r\n" in rest:
        size_line, _, after = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0 or len(after) < size + 2:
            break
        out.append(after[:size])
        rest = after[size + 2 :]
    return b"".join(out)


MARKER = re.compile(rb"\[heartline: (\d+) bytes dropped: this follower fell behind\]\n")


def test_followers_that_do_not_read_cost_bounded_memory_and_learn_what_they_missed(make_daemon):
    """25 followers stop reading while a program writes 96 MiB: the daemon's peak memory grows
    by less than MAX_GROWTH; a follower that reads again gets what was kept, then marker lines
    saying how many bytes it missed (kept + missed = everything written). Once they are gone
    their connections are closed, and 25 new followers through a second flood keep the peak,
    still measured from before the first, under the same bound."""
    d = make_daemon(f"""
        [programs.flood]
        command = {FLOOD}
        cwd = "."
        log = {{ max_size = "4MiB", backups = 1 }}
    """)
    os.mkfifo(d.root / "go")
    d.wait_state("flood", "running")
    logs = d.root / "logs" / "flood.out.log"
    wait_until(lambda: logs.exists() and logs.read_bytes() == b"ready\n", 10, "the first line")
    assert d.proc is not None
    pid = d.proc.pid
    before = memory(pid)["VmRSS"]
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    for round in range(ROUNDS):
        followers = [follow(d.socket) for _ in range(FOLLOWERS)]
        try:
            with open(d.root / "go", "w") as go:
                go.write("go")
            wait_until((d.root / f"done{round}").exists, 60, "the flood to be written")
            peak = memory(pid)["VmHWM"]
            assert peak - before < MAX_GROWTH, f"grew by {(peak - before) >> 20} MiB"
            kept, missed, text, markers = account(followers.pop())
            assert len(kept) + missed == FLOOD_MIB << 20
            assert markers and missed > (FLOOD_MIB << 20) // 2
            # Each marker stands on a line of its own.
            assert all(m.start() == 0 or text[m.start() - 1 : m.start()] == b"\n" for m in markers)
            assert set(kept) <= {ord("y"), ord("\n")}
        finally:
            for s in followers:
                s.close()
        wait_until(
            lambda: len(os.listdir(f"/proc/{pid}/fd")) == fds, 10, "the followers to be gone"
        )
    # What the first followers held was freed: the second flood's peak above is still
    # measured from before the first, so buffers left behind would show there. (RSS between
    # rounds is not compared: it moves by several MiB with the allocator's arenas, while the
    # Python objects alive stay the same, as tracemalloc shows.)


def account(reader: socket.socket) -> tuple[bytes, int, bytes, list[re.Match[bytes]]]:
    """Read a stalled follower until every byte of the flood is accounted for, as kept or as
    reported missing: (kept, missed, the stream's text, its markers)."""
    reader.settimeout(20)
    got = b""
    try:
        while True:
            text = dechunk(got)
            markers = list(MARKER.finditer(text))
            kept = MARKER.sub(b"", text)
            missed = sum(int(m.group(1)) for m in markers)
            if len(kept) + missed >= FLOOD_MIB << 20:
                return kept, missed, text, markers
            chunk = reader.recv(65536)
            assert chunk, "the stream ended before accounting for everything written"
            got += chunk
    finally:
        reader.close()
