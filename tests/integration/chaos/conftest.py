"""Running `heartline chaos` for real, cleaning up whatever a test's run left, and a headless
Debian Chromium page for the report, kept off the network.

Every process a test starts (the controller, its agents and hogs, the experiment's daemon and
programs, the test's own services) carries the test's tag in its environment; teardown ends
exactly those, stopped ones included, whatever the test did to them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import tagged_pids

CHROMIUM = "/usr/bin/chromium"
#: No sandbox (tests may run as root), and none of the background calls Chromium makes on its
#: own: the machine has no network and the report must be seen to load nothing.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "chaos"
WEBAPP = EXAMPLES / "webapp.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_state(pid: int) -> str:
    """The process's state letter (T: stopped), or "" when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return ""


@dataclass
class Chaos:
    tmp: Path
    env: dict[str, str]
    journal: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def write(self, text: str, name: str = "exp.toml") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def argv(self, exp: Path, *args: str) -> list[str]:
        return [sys.executable, "-m", "heartline", "chaos", "run", str(exp),
                "--journal", str(self.journal), *args]  # fmt: skip

    def run(self, text: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(self.write(text), *args), env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def start(self, text: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(self.write(text), *args), env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def events(self, out: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def result(self, out: str) -> dict[str, Any]:
        last = self.events(out)[-1]
        assert last["event"] == "result", last
        result: dict[str, Any] = last["result"]
        return result

    def webapp(self, port: int, *, warm: float = 0.1, pidfile: Path | None = None) -> int:
        """A web service of the test's own (answers ``ok``), its pid written to ``pidfile``."""
        proc = subprocess.Popen(
            [sys.executable, str(WEBAPP), str(port), str(warm)], env=self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.procs.append(proc)
        if pidfile is not None:
            pidfile.parent.mkdir(parents=True, exist_ok=True)
            pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return proc.pid
            time.sleep(0.02)
        raise AssertionError(f"webapp on {port} did not start")


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[Chaos]:
    tag = uuid.uuid4().hex
    env = {**os.environ, "HEARTLINE_TEST_TAG": tag, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("HEARTLINE_CONFIG", None)
    env.pop("HEARTLINE_SOCKET", None)
    c = Chaos(tmp=tmp_path, env=env, journal=tmp_path / "journal")
    try:
        yield c
    finally:
        for _ in range(3):
            pids = tagged_pids(tag)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for p in c.procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait()


def wait_state(pid: int, want: Callable[[str], bool], timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = proc_state(pid)
        if want(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} state {state!r} after {timeout}s")
        time.sleep(0.02)


@pytest.fixture
def chromium_page() -> Iterator[Any]:
    """A fresh page (1280 x 900) in a Chromium of its own, closed whatever the test does."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            yield page
        finally:
            browser.close()
