"""`heartline rolling` over four lab hosts: one host at a time under the cluster lock, a health
gate after each, the first failure stops the roll, two rolls on one lock take turns, Ctrl-C
and a lost lock each stop the command on the host. The roll's lock and progress live in the
backend the controller's config names: the tests that take ``config`` run once with the lab's
lockd and once with a real etcd on loopback (the hosts' daemons keep reporting to the lab's
lockd; a roll in the group's order reads no reports). Skipped (with the reason) where lab hosts
cannot be made."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import wait_until
from tests.integration.conftest import HEARTLINE

from heartline.testing import EtcdServer, LabHosts, lab_hosts, lab_unavailable

pytestmark = [
    pytest.mark.skipif(lab_unavailable() is not None, reason=lab_unavailable() or ""),
    pytest.mark.timeout(180),
]

LOCK = "heartline-rolling-lab"


@pytest.fixture(scope="module")
def lab() -> Iterator[LabHosts]:
    with lab_hosts(4) as made:
        yield made


@pytest.fixture(scope="module")
def etcd_config(lab: LabHosts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The lab's controller config with its backend a real etcd on loopback (the controller
    runs in the root namespace), for as long as the module's tests need it."""
    where = tmp_path_factory.mktemp("rolling-etcd")
    server = EtcdServer(where / "etcd")
    server.start()
    try:
        text, n = re.subn(r"(?m)^backend = .*$", f"backend = {json.dumps(server.url)}",
                          Path(lab.config).read_text())  # fmt: skip
        assert n == 1, text
        path = where / "heartline.toml"
        path.write_text(text)
        yield str(path)
    finally:
        server.kill()


@pytest.fixture
def clean(lab: LabHosts) -> LabHosts:
    """Every host's marks of earlier rolls removed (each host has a /run of its own)."""
    for host in lab.hosts:
        lab.run(host, ["rm", "-f", "/run/rolled", "/run/log", "/run/roll.pid"], check=True)
    return lab


@pytest.fixture(params=["lockd", "etcd"])
def config(request: pytest.FixtureRequest, clean: LabHosts) -> str:
    """The controller's config: the lab's own (its lockd), or the same naming etcd."""
    if request.param == "lockd":
        return clean.config
    path: str = request.getfixturevalue("etcd_config")
    return path


def rolling(lab: LabHosts, *args: str, config: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run([*HEARTLINE, "-c", config or lab.config, "rolling", "--group", "lab",
                           *args], capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip


def events(res: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in res.stdout.splitlines()]


def rolled(lab: LabHosts, mark: str = "/run/rolled") -> list[str]:
    return [h for h in lab.hosts if lab.run(h, ["test", "-e", mark]).returncode == 0]


def backend_of(config: str) -> dict[str, Any]:
    with open(config, "rb") as f:
        cluster: dict[str, Any] = tomllib.load(f)["cluster"]
    return cluster


MARK = ["sh", "-c", "date +%s.%N > /run/rolled"]


def test_a_roll_runs_on_each_host_in_turn_behind_its_gate(clean: LabHosts, config: str) -> None:
    lab = clean
    res = rolling(lab, "--json", "--check-exec", "test -e /run/rolled", "--healthy", "2",
                  "--", *MARK, config=config)  # fmt: skip
    assert res.returncode == 0, res.stderr
    ev = events(res)
    assert [e["host"] for e in ev if e["event"] == "host done"] == lab.hosts
    assert ev[-1]["event"] == "finished"
    # Each host's gate passed twice before the next host's command started.
    for i, host in enumerate(lab.hosts[:-1]):
        gates = [e for e in ev if e["event"] == "gate" and e["host"] == host]
        assert gates[-1]["passes"] == 2
        nxt = next(e for e in ev if e["event"] == "host started" and e["host"] == lab.hosts[i + 1])
        assert gates[-1]["elapsed"] <= nxt["elapsed"]
    stamps = [float(lab.run(h, ["cat", "/run/rolled"]).stdout) for h in lab.hosts]
    assert stamps == sorted(stamps)


def test_a_failing_command_stops_the_roll(clean: LabHosts) -> None:
    lab = clean
    cmd = 'date > /run/rolled; [ "$(hostname)" != lab2 ]'
    res = rolling(lab, "--", "sh", "-c", cmd)
    assert res.returncode == 16, res.stderr
    assert "stopped at host lab2: the command exited 1" in res.stderr
    assert rolled(lab) == ["lab1", "lab2"]


def test_two_rolls_on_one_lock_take_turns(clean: LabHosts, config: str) -> None:
    """Started at once, the second waits for the first's lock: on every host one roll's
    command ran wholly before the other's began."""
    lab = clean
    procs = []
    for tag in ("A", "B"):
        cmd = f"echo {tag}-in >> /run/log; sleep 0.2; echo {tag}-out >> /run/log"
        procs.append(subprocess.Popen(
            [*HEARTLINE, "-c", config, "rolling", "--group", "lab", "--", "sh", "-c", cmd],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    first = None
    for host in lab.hosts:
        log = lab.run(host, ["cat", "/run/log"]).stdout.split()
        assert log in (["A-in", "A-out", "B-in", "B-out"], ["B-in", "B-out", "A-in", "A-out"])
        # The whole of one roll came first on every host: it held the lock throughout.
        first = first or log[0]
        assert log[0] == first


class OnLab1:
    """A roll whose command, on lab1, writes its pid to /run/roll.pid and sleeps for long:
    started in a session of its own, and killed (with its ssh) if the test leaves it running."""

    def __init__(self, lab: LabHosts, config: str) -> None:
        self.lab = lab
        argv = [*HEARTLINE, "-c", config, "rolling", "--group", "lab", "--", "sh", "-c",
                "echo $$ > /run/roll.pid; exec sleep 300"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)  # fmt: skip

    def __enter__(self) -> OnLab1:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def started(self) -> str:
        """The command's pid on lab1 (in lab1's pid namespace), once it runs."""

        def pid() -> str:
            return self.lab.run("lab1", ["cat", "/run/roll.pid"]).stdout.strip()

        return wait_until(pid, 20, "the command on lab1")

    def ended(self, timeout: float = 30) -> tuple[int, str]:
        _out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err

    def gone(self, pid: str) -> None:
        """The command's process is gone on lab1 (checked there, within a deadline)."""
        wait_until(lambda: self.lab.run("lab1", ["kill", "-0", pid]).returncode != 0, 15,
                   "the command on lab1 to stop")  # fmt: skip


def test_ctrl_c_stops_the_command_on_the_host_and_releases_the_lock(
    clean: LabHosts, config: str
) -> None:
    lab = clean
    with OnLab1(lab, config) as roll:
        pid = roll.started()
        os.killpg(roll.proc.pid, signal.SIGINT)
        rc, err = roll.ended()
    assert rc == 130, err
    roll.gone(pid)
    assert rolled(lab, "/run/roll.pid") == ["lab1"]
    # The lock is free at once: another roll starts and finishes.
    res = rolling(lab, "--", "true", config=config, timeout=60)
    assert res.returncode == 0, res.stderr


def test_a_lost_lock_stops_the_command_on_the_host_and_the_roll(
    clean: LabHosts, config: str
) -> None:
    """An admin breaks the roll's lock while its command runs on lab1: the command there is
    stopped, the roll exits 79 with one line saying so, and lab2..lab4 are left untouched."""
    lab = clean
    cluster = backend_of(config)
    with OnLab1(lab, config) as roll:
        pid = roll.started()
        broke = subprocess.run([*HEARTLINE, "lock", "--break", LOCK, "--server",
                                cluster["backend"]], capture_output=True, text=True, timeout=30,
                               env={**os.environ, "HEARTLINE_LOCK_TOKEN_FILE":
                                    cluster["token_file"]}, check=False)  # fmt: skip
        assert broke.returncode == 0 and "1 holder(s) dropped" in broke.stdout, broke
        rc, err = roll.ended()
    assert rc == 79, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("heartline: ") and "lost the lock" in last, err
    assert "Traceback" not in err and err.count("lost the lock") == 1, err
    roll.gone(pid)
    assert rolled(lab, "/run/roll.pid") == ["lab1"]


def test_bad_input_is_one_line(lab: LabHosts) -> None:
    for args, code in ((["--group", "nope", "--", "true"], 12),
                       (["--group", "lab", "--healthy", "0", "--check-exec", "true", "--",
                         "true"], 2),
                       (["--group", "lab", "--timeout", "soon", "--", "true"], 2),
                       (["--group", "lab"], 2),
                       (["--group", "lab", "--notify", "file:///etc/passwd", "--", "true"], 2),
                       (["--group", "lab", "--check", "ftp://x/", "--", "true"], 2)):  # fmt: skip
        res = subprocess.run([*HEARTLINE, "-c", lab.config, "rolling", *args],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert res.returncode == code, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_a_url_gate_asks_each_host_by_its_address(clean: LabHosts) -> None:
    """The command starts a small HTTP server on the host; the gate GETs it at the host's
    address (its ssh alias resolved as ssh would), and passes once it answers."""
    lab = clean
    serve = ("date > /run/rolled; cd /run && setsid python3 -m http.server 8765 "
             ">/dev/null 2>&1 </dev/null & sleep 0.1")  # fmt: skip
    res = rolling(lab, "--json", "--check", "http://{host}:8765/rolled", "--healthy", "2",
                  "--timeout", "20s", "--", "sh", "-c", serve)  # fmt: skip
    assert res.returncode == 0, res.stderr
    ev = events(res)
    assert [e["host"] for e in ev if e["event"] == "host done"] == lab.hosts
    assert all(e["why"] == "HTTP 200" for e in ev if e["event"] == "gate" and e["ok"])


def test_notify_posts_every_step_to_a_receiver(clean: LabHosts) -> None:
    """A small HTTP receiver on loopback gets started, one host done per host, and finished,
    as JSON, in order."""
    import http.server
    import threading

    got: list[dict[str, Any]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/events"
        res = rolling(clean, "--notify", url, "--", "true")
        assert res.returncode == 0, res.stderr
    finally:
        server.shutdown()
        server.server_close()
    assert [e["event"] for e in got] == ["started", *["host done"] * 4, "finished"]
    assert [e["host"] for e in got if e["event"] == "host done"] == clean.hosts


def test_a_dead_notify_receiver_does_not_hold_up_the_roll(clean: LabHosts) -> None:
    res = rolling(clean, "--notify", "http://127.0.0.1:1/", "--", "true")
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("the roll goes on without it") == 1


def test_order_load_takes_the_least_loaded_host_first(clean: LabHosts) -> None:
    lab = clean
    # --foreground: timeout stays in the process group, so killing the group ends the loops.
    spin = "timeout --foreground 60 sh -c 'while :; do :; done' &"
    argv, env = lab.exec_argv("lab1", ["sh", "-c", f"{spin} {spin} wait"])
    busy = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    try:

        def lab1_busy() -> bool:
            res = subprocess.run([*HEARTLINE, "-c", lab.config, "hosts", "--json"],
                                 capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
            hosts = {h["name"]: h for h in json.loads(res.stdout)["hosts"]}
            return bool(hosts["lab1"]["report"]) and hosts["lab1"]["report"]["other"] >= 2

        wait_until(lab1_busy, 15, "lab1's report to show it busy")
        res = rolling(lab, "--json", "--order", "load", "--", "true")
        assert res.returncode == 0, res.stderr
        done = [e["host"] for e in events(res) if e["event"] == "host done"]
        assert sorted(done) == lab.hosts and done[-1] == "lab1"
    finally:
        os.killpg(busy.pid, signal.SIGKILL)
        busy.wait(10)


def kept_in_etcd(config: str) -> list[str]:
    """The keys of rolls' progress in the etcd ``config`` names, read with etcdctl."""
    url = backend_of(config)["backend"].replace("etcd://", "http://", 1)
    res = subprocess.run(["etcdctl", f"--endpoints={url}", "get", "", "--prefix", "--keys-only"],
                         capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    return [k for k in res.stdout.split() if k.endswith(f"heartline/rolling/{LOCK}")]


def test_resume_continues_a_stopped_roll_at_the_host_it_stopped_at(
    clean: LabHosts, config: str
) -> None:
    """A gate that fails on lab3 stops the roll with one line, lab4 untouched; once "fixed", --resume runs
    lab3 and lab4 only; a roll that finished leaves nothing to resume. On etcd the progress
    is a key there while the roll is stopped, and gone once it finished."""
    lab = clean
    on_etcd = backend_of(config)["backend"].startswith("etcd://")
    fixed = "/run/fixed"
    gate = f'[ "$(hostname)" != lab3 ] || [ -e {fixed} ]'
    cmd = ["sh", "-c", "date +%s.%N >> /run/log"]
    args = ["--check-exec", gate, "--healthy", "1", "--timeout", "2s"]
    res = rolling(lab, *args, "--", *cmd, config=config)
    assert res.returncode == 16, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("heartline: stopped at host lab3:") and "did not pass" in last
    assert rolled(lab, "/run/log") == ["lab1", "lab2", "lab3"]
    if on_etcd:
        assert len(kept_in_etcd(config)) == 1
    lab.run("lab3", ["touch", fixed], check=True)
    try:
        res = rolling(lab, "--json", "--resume", *args, "--", *cmd, config=config)
        assert res.returncode == 0, res.stderr
        assert [e["host"] for e in events(res) if e["event"] == "host done"] == ["lab3", "lab4"]
        runs = {h: len(lab.run(h, ["cat", "/run/log"]).stdout.split()) for h in lab.hosts}
        assert runs == {"lab1": 1, "lab2": 1, "lab3": 2, "lab4": 1}
        if on_etcd:
            assert kept_in_etcd(config) == []
        res = rolling(lab, "--resume", "--", "true", config=config)
        assert res.returncode == 2 and "no stopped roll" in res.stderr, res.stderr
    finally:
        lab.run("lab3", ["rm", "-f", fixed])
