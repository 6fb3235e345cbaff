"""Reports in real processes: a signal from outside writes a report file with every thread's
stack, at once for the raw stacks even when the program holds the GIL, and the files outlive
the program."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from tests.helpers import wait_until

from heartline.service import reports

T = TypeVar("T")

#: Bounds for a broken test only; the reports themselves come within a fraction of a second.
LIMIT = 20


class Child:
    """A Python program (saved as prog.py) running in a fresh interpreter, stdout piped."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expect_line(self, expected: str, timeout: float = LIMIT) -> None:
        """Wait for the next line of stdout, which must be ``expected``."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"no output within {timeout}s"
        line = self.proc.stdout.readline()
        assert line == expected + "\n", (line, self.stderr_so_far())

    def stderr_so_far(self) -> str:
        if self.proc.poll() is None:
            return "<still running>"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """Start programs; every one still running at the end is killed and reaped."""
    children: list[subprocess.Popen[str]] = []

    def run(code: str, *args: str, env: dict[str, str] | None = None) -> Child:
        path = tmp_path / "prog.py"
        path.write_text(textwrap.dedent(code).lstrip("\n"))
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        proc = subprocess.Popen(
            [sys.executable, str(path), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        children.append(proc)
        return Child(proc)

    yield run
    for proc in children:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=LIMIT)


def a_report_of(pid: int, directory: Path) -> reports.StoredReport | None:
    found = [r for r in reports.list(directory) if r.pid == pid]
    return found[0] if found else None


def test_a_signal_writes_a_report_with_every_threads_function(
    start: Callable[..., Child], tmp_path: Path
) -> None:
    """SIGUSR2 to a program that installed reports writes a text and a JSON report naming its
    threads and the functions they wait in; the program carries on."""
    directory = tmp_path / "reports"
    child = start(f"""
        import threading
        from heartline.service import reports

        reports.install(directory={str(directory)!r}, providers={{"app": lambda: {{"mode": "x"}}}})
        stop = threading.Event()

        def waiting_for_orders():
            stop.wait()

        def main_loop_of_the_program():
            threading.Thread(target=waiting_for_orders, name="order-taker").start()
            print("ready", flush=True)
            input()
            stop.set()
            print("bye", flush=True)

        main_loop_of_the_program()
    """)
    child.expect_line("ready")
    os.kill(child.pid, signal.SIGUSR2)
    report = wait_until(lambda: a_report_of(child.pid, directory), LIMIT, what="the report")
    text = report.read_text()
    assert "Thread 'order-taker' (ident 0x" in text
    assert "in waiting_for_orders" in text
    assert "in main_loop_of_the_program" in text
    assert "mode: x" in text
    data = report.read_json()
    assert data["pid"] == child.pid
    names = {t["name"] for t in data["threads"]}  # type: ignore[union-attr,index]
    assert {"MainThread", "order-taker"} <= names
    assert "heartline-reports" not in names
    out, _ = child.proc.communicate("\n", timeout=LIMIT)
    assert out == "bye\n"
    assert child.proc.returncode == 0


def test_two_hundred_threads_are_all_in_the_report(
    start: Callable[..., Child], tmp_path: Path
) -> None:
    """A program with 200 waiting threads: the report lists each by name."""
    directory = tmp_path / "reports"
    child = start(f"""
        import threading
        from heartline.service import reports

        reports.install(directory={str(directory)!r})
        stop = threading.Event()
        for i in range(200):
            threading.Thread(target=stop.wait, name=f"pool-{{i}}", daemon=True).start()
        print("ready", flush=True)
        input()
    """)
    child.expect_line("ready")
    os.kill(child.pid, signal.SIGUSR2)
    report = wait_until(lambda: a_report_of(child.pid, directory), LIMIT, what="the report")
    data = report.read_json()
    names = {t["name"] for t in data["threads"]}  # type: ignore[union-attr,index]
    assert {f"pool-{i}" for i in range(200)} <= names
    assert "== Threads (201) ==" in report.read_text()


def test_raw_stacks_land_at_once_while_the_gil_is_held(
    start: Callable[..., Child], tmp_path: Path
) -> None:
    """A main thread in a long C call that holds the GIL (sum over a huge range): the raw
    faulthandler dump is on disk within a second, before the full report, which follows once
    the call returns and holds the same raw dump."""
    directory = tmp_path / "reports"
    child = start(f"""
        from heartline.service import reports

        reports.install(directory={str(directory)!r})

        def hold_the_gil():
            print("busy", flush=True)  # from in here, so the signal finds this frame
            return sum(range(300_000_000))

        hold_the_gil()
        print("done", flush=True)
        input()
    """)
    raw = directory / f"raw-{child.pid}.txt"
    child.expect_line("busy")
    sent = time.monotonic()
    os.kill(child.pid, signal.SIGUSR2)
    wait_until(lambda: "in hold_the_gil" in raw.read_text(), timeout=5, what="the raw dump")
    assert time.monotonic() - sent < 1.0
    assert a_report_of(child.pid, directory) is None, "the call should still hold the GIL"
    child.expect_line("done", timeout=120)
    report = wait_until(lambda: a_report_of(child.pid, directory), LIMIT, what="the full report")
    text = report.read_text()
    assert "== Raw dump at the signal (faulthandler" in text
    assert text.count("in hold_the_gil") == 1  # in the raw dump; the call is over by now
    assert raw.read_text() == ""


def test_reports_outlive_the_program_and_another_process_lists_them(
    start: Callable[..., Child], tmp_path: Path
) -> None:
    """After the program ends its reports stay (its empty raw file does not); a new process
    finds them with reports.list(), newest first."""
    directory = tmp_path / "reports"
    child = start(f"""
        from heartline.service import reports

        reports.install(directory={str(directory)!r})
        print("ready", flush=True)
        input()
    """)
    child.expect_line("ready")
    for count in (1, 2):
        os.kill(child.pid, signal.SIGUSR2)
        wait_until(lambda n=count: len(reports.list(directory)) == n, what=f"report {count}")
    child.proc.communicate("\n", timeout=LIMIT)
    assert child.proc.returncode == 0
    files = sorted(os.listdir(directory))
    assert len(files) == 4
    assert all(name.startswith("report-") for name in files)
    lister = subprocess.run(
        [sys.executable, "-c",
         "import json, sys\n"
         "from heartline.service import reports\n"
         "print(json.dumps([[r.path, r.pid] for r in reports.list(sys.argv[1])]))",
         str(directory)],
        capture_output=True, text=True, timeout=LIMIT,
    )  # fmt: skip
    assert lister.returncode == 0, lister.stderr
    listed = json.loads(lister.stdout)
    assert [pid for _, pid in listed] == [child.pid, child.pid]
    assert [p for p, _ in listed] == sorted(
        (str(directory / n) for n in files if n.endswith(".txt")), reverse=True
    )


def test_an_asyncio_program_shows_its_tasks(start: Callable[..., Child], tmp_path: Path) -> None:
    """install() inside a running loop records that loop: the report lists its tasks with the
    coroutines they wait in."""
    directory = tmp_path / "reports"
    child = start(f"""
        import asyncio, sys
        from heartline.service import reports

        async def fetch_orders():
            await asyncio.Event().wait()

        async def main():
            reports.install(directory={str(directory)!r})
            task = asyncio.create_task(fetch_orders(), name="orders")
            loop = asyncio.get_running_loop()
            print("ready", flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)
            task.cancel()

        asyncio.run(main())
    """)
    child.expect_line("ready")
    os.kill(child.pid, signal.SIGUSR2)
    report = wait_until(lambda: a_report_of(child.pid, directory), LIMIT, what="the report")
    text = report.read_text()
    assert "Task 'orders' coroutine fetch_orders()" in text
    assert "in fetch_orders\n    await asyncio.Event().wait()" in text


def test_the_default_directory_comes_from_the_environment(
    start: Callable[..., Child], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without directory=, reports go to $HEARTLINE_REPORT_DIR."""
    directory = tmp_path / "from-env"
    monkeypatch.setenv("HEARTLINE_REPORT_DIR", str(directory))
    child = start("""
        from heartline.service import reports

        print(reports.install(), flush=True)
        input()
    """)
    child.expect_line(str(directory))
    os.kill(child.pid, signal.SIGUSR2)
    wait_until(lambda: a_report_of(child.pid, directory), LIMIT, what="the report")


def test_a_forked_child_does_not_inherit_reports(
    start: Callable[..., Child], tmp_path: Path
) -> None:
    """A child forked after install() has no helper thread and the signal's previous handler
    back; the parent still writes reports."""
    directory = tmp_path / "reports"
    child = start(f"""
        import os, signal, threading
        from heartline.service import reports

        reports.install(directory={str(directory)!r})
        pid = os.fork()
        if pid == 0:
            names = [t.name for t in threading.enumerate()]
            default = signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
            print("child", reports.installed(), default, names, flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print("ready", flush=True)
        input()
    """)
    child.expect_line("child False True ['MainThread']")
    child.expect_line("ready")
    os.kill(child.pid, signal.SIGUSR2)
    report = wait_until(
        lambda: a_report_of(child.pid, directory), LIMIT, what="the parent's report"
    )
    assert report.pid == child.pid


def test_a_report_on_the_signal_shows_no_secrets_in_text_or_json(
    start: Callable[..., Child], tmp_path: Path
) -> None:
    """A program with passwords in its environment (under secret names and inside URLs), its
    command line and its registered configuration: after SIGUSR2 neither the text nor the JSON
    report holds any of them, and what is around them (user, host, database) is still there."""
    directory = tmp_path / "reports"
    env = {
        "DATABASE_URL": "postgres://app:SECRET-url@db/app",
        "DB_PASS": "SECRET-db-pass",
        "MYSQL_PWD": "SECRET-mysql-pwd",
        "REDIS_PASS": "SECRET-redis-pass",
        "SENTRY_DSN": "https://SECRET0sentry0key0123456@o1.ingest.example/42",
        "JWT_SIGNING_KEY": "SECRET-jwt",
        "PASSPHRASE": "SECRET-passphrase",
        "STRIPE_SK": "sk_live_SECRET",
    }
    # The secrets of the configuration come from the command line: the program's own source
    # (shown in stacks) holds none.
    child = start(
        f"""
        import os, sys
        from heartline.service import reports

        def settings():
            return {{
                "db": {{"url": os.environ["DATABASE_URL"], "pool": 5}},
                "cache": [{{"nodes": [sys.argv[3]], "auth": {{"password": sys.argv[5]}}}}],
            }}

        reports.install(directory={str(directory)!r}, providers={{"settings": settings}})
        print("ready", flush=True)
        input()
        """,
        "--db-password=SECRET-argv-1",
        "--api-token",
        "redis://:SECRET-argv-2@cache:6379/0",
        "--password",
        "SECRET-argv-3",
        env=env,
    )
    child.expect_line("ready")
    os.kill(child.pid, signal.SIGUSR2)
    report = wait_until(lambda: a_report_of(child.pid, directory), LIMIT, what="the report")
    assert report.json_path is not None
    text = report.read_text()
    raw_json = Path(report.json_path).read_text()
    assert "SECRET" not in text
    assert "SECRET" not in raw_json
    assert "DATABASE_URL=postgres://app:***@db/app" in text
    assert "url: postgres://app:***@db/app" in text
    for name in ("DB_PASS", "MYSQL_PWD", "REDIS_PASS", "SENTRY_DSN", "JWT_SIGNING_KEY"):
        assert f"{name}=***" in text
    data = report.read_json()
    environment = data["environment"]
    assert isinstance(environment, dict)
    assert {name: environment[name] for name in env} == {
        **dict.fromkeys(env, "***"),
        "DATABASE_URL": "postgres://app:***@db/app",
    }
    process = data["process"]
    assert isinstance(process, dict)
    assert process["cmdline"][-5:] == [
        "--db-password=***", "--api-token", "***", "--password", "***"
    ]  # fmt: skip
    assert data["config"] == {
        "settings": {
            "db": {"url": "postgres://app:***@db/app", "pool": 5},
            "cache": [{"nodes": ["redis://:***@cache:6379/0"], "auth": "***"}],
        }
    }
