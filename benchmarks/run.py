#!/usr/bin/env python3
"""Benchmark harness: heartline against supervisord and circus.

Usage:
    python3 benchmarks/run.py [--quick] [--only NAME] [--tools LIST]

NAME is one of: crash, startup, idle, status.
LIST is a comma-separated subset of: heartline, supervisord, circus.

Standard library only. The peers (supervisor, circus) are installed into
benchmarks/.venv-peers on first use; heartline is taken from the project's
own virtualenv (/work/main/.venv, i.e. <repo>/.venv). Scratch files go to
benchmarks/work/. Results are written to benchmarks/RESULTS.md (overwritten)
and, machine-readable, to benchmarks/work/results.json.

Every daemon is started in its own session; at the end of each run it is
stopped (SIGTERM, then SIGKILL to its process group) and every process that
it left behind is killed by pid. This script makes itself a child
sub-reaper so that orphaned children land with it and can be reaped.
"""

import argparse
import contextlib
import ctypes
import datetime
import http.client
import itertools
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
WORK_DIR = os.path.join(BENCH_DIR, "work")
BIN_DIR = os.path.join(WORK_DIR, "bin")
PEERS_VENV = os.path.join(BENCH_DIR, ".venv-peers")
PEERS_PY = os.path.join(PEERS_VENV, "bin", "python")
RESULTS_MD = os.path.join(BENCH_DIR, "RESULTS.md")
RESULTS_JSON = os.path.join(WORK_DIR, "results.json")
CHILD_SRC = os.path.join(BENCH_DIR, "child.c")
CHILD_BIN = os.path.join(BIN_DIR, "crashchild")
SLEEP_BIN = os.path.join(BIN_DIR, "sleepbench")  # a copy of /bin/sleep
# Bytecode cache for every Python tool under test, so that all of them run
# from compiled bytecode (as after a normal install) without writing
# __pycache__ folders into anybody's source tree.
PYCACHE_DIR = os.path.join(WORK_DIR, "pycache")

HEARTLINE_BIN = os.environ.get("HEARTLINE_BIN", os.path.join(REPO_DIR, ".venv", "bin", "heartline"))

PEER_PACKAGES = ["supervisor==4.3.0", "circus==0.19.0"]

TOOLS = ["heartline", "supervisord", "circus"]
BENCHES = ["crash", "startup", "idle", "status"]

N_PROGRAMS = 500
N_STATUS_PROGRAMS = 10

# circus' check_delay: how often circusd reaps and respawns (it has no
# SIGCHLD handler). The config-file default is 5 s.
CIRCUS_FAST_CHECK_DELAY = 0.1
CIRCUS_DEFAULT_CHECK_DELAY = 5.0

MODES = {
    "quick": {
        "crash_samples": 20,
        "crash_default_circus_samples": 0,  # skipped: 5 s per sample
        "idle_window": 10.0,
        "startup_runs": 1,
        "status_runs": 10,
        "circus_fast_idle_variant": False,
        "budget": 115.0,
        "stop_grace": 8.0,
    },
    "full": {
        "crash_samples": 50,
        "crash_default_circus_samples": 6,
        "idle_window": 60.0,
        "startup_runs": 3,
        "status_runs": 30,
        "circus_fast_idle_variant": True,
        "budget": 570.0,
        "stop_grace": 15.0,
    },
}

GOALS = {
    "crash_p50_ms": 3.0,
    "startup_s": 1.0,
    "rss_mb": 35.0,
    "cpu_pct": 0.3,
    "fds_per_child": 3.0,
    "status_p50_ms": 80.0,
}

# ---------------------------------------------------------------------------
# heartline adapter: everything heartline-specific is in this block.
# Relative paths in the config resolve against the config file's directory.
# ---------------------------------------------------------------------------

HEARTLINE_CONFIG_HEAD = """\
[daemon]
run_dir = "run"
log_dir = "logs"
"""

HEARTLINE_CRASH_PROGRAM = """
[programs.crasher]
command = [{child}, {out}]
restart = "always"
backoff = {{ initial = "0s", max = "0s" }}
crash_loop = {{ max_starts = 0 }}
"""

HEARTLINE_SLEEP_PROGRAM = """
[programs.{name}]
command = [{sleep}, "3600"]
"""


def heartline_cmd_up(config):
    return [HEARTLINE_BIN, "up", "-c", config]


def heartline_cmd_status_json(config):
    return [HEARTLINE_BIN, "-c", config, "status", "--json"]


def heartline_cmd_status(config):
    return [HEARTLINE_BIN, "-c", config, "status"]


def heartline_count_running(stdout_text):
    """Return (running, total) from `status --json` output."""
    doc = json.loads(stdout_text)
    progs = doc.get("programs", []) if isinstance(doc, dict) else doc
    running = sum(1 for p in progs if p.get("state") == "running")
    return running, len(progs)


# ---------------------------------------------------------------------------
# small utilities
# ---------------------------------------------------------------------------


def toml_str(s):
    # TOML basic strings accept JSON string escapes for these inputs.
    return json.dumps(s)


def percentile(values, pct):
    """Linear interpolation between closest ranks."""
    vals = sorted(values)
    if not vals:
        return float("nan")
    if len(vals) == 1:
        return vals[0]
    k = (len(vals) - 1) * pct / 100.0
    lo = int(k)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def one_line(text, limit=160):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tail_of(path, limit=160):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return one_line(lines[-1], limit) if lines else "(empty log)"
    except OSError:
        return "(no log)"


def fresh_dir(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def log(msg):
    print("[bench {}] {}".format(time.strftime("%H:%M:%S"), msg), flush=True)


class BenchError(Exception):
    """A tool failed a benchmark; the message goes into the results cell."""


class Budget:
    def __init__(self, seconds):
        self.t0 = time.monotonic()
        self.deadline = self.t0 + seconds

    def remaining(self):
        return self.deadline - time.monotonic()

    def elapsed(self):
        return time.monotonic() - self.t0

    def limit(self, wanted):
        left = self.remaining()
        if left < 3.0:
            raise BenchError("run time budget exhausted")
        return min(wanted, left)


# ---------------------------------------------------------------------------
# /proc helpers and process cleanup
# ---------------------------------------------------------------------------


def proc_stat(pid):
    """Return dict with state, ppid, pgrp, session, utime, stime, starttime."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2 :].split()
    return {
        "state": rest[0],
        "ppid": int(rest[1]),
        "pgrp": int(rest[2]),
        "session": int(rest[3]),
        "utime": int(rest[11]),
        "stime": int(rest[12]),
        "starttime": int(rest[19]),
    }


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def proc_exe(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def vm_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_ticks(pid):
    st = proc_stat(pid)
    if st is None:
        raise BenchError(f"daemon pid {pid} vanished")
    return st["utime"] + st["stime"]


def sched_ns(pid):
    """On-CPU time of all live threads in ns (finer than clock ticks)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def helper_pids(daemon_pid):
    """Descendants of the daemon that are not the benchmark's programs."""
    return [p for p in descendants([daemon_pid]) if (proc_exe(p) or "") != SLEEP_BIN]


def helper_ticks(pids):
    total = 0
    for pid in pids:
        st = proc_stat(pid)
        if st:
            total += st["utime"] + st["stime"]
    return total


def thread_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def descendants(root_pids):
    """All live descendants of root_pids (by ppid links)."""
    children = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st:
            children.setdefault(st["ppid"], []).append(pid)
    out, todo, seen = [], list(root_pids), set()
    while todo and len(seen) < 100000:
        p = todo.pop()
        for c in children.get(p, []):
            if c not in seen:
                seen.add(c)
                out.append(c)
                todo.append(c)
    return out


def become_subreaper():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:
        return False


class Tracker:
    """Remembers every process this harness is responsible for."""

    def __init__(self):
        self.sessions = set()  # session ids of daemons we started
        self.owned = {}  # pid -> starttime
        self.live_popen = set()  # pids that a Popen object will reap

    def add_daemon(self, pid):
        self.sessions.add(pid)  # start_new_session: sid == pgid == pid
        self.remember([pid])

    def remember(self, pids):
        for pid in pids:
            st = proc_stat(pid)
            if st:
                self.owned[pid] = st["starttime"]

    def _ours(self):
        me = os.getpid()
        ours = []
        for pid in all_pids():
            if pid == me:
                continue
            st = proc_stat(pid)
            if st is None or st["state"] in ("Z", "X"):
                continue
            exe = proc_exe(pid) or ""
            if (
                exe.startswith(BIN_DIR + "/")
                or st["session"] in self.sessions
                or st["pgrp"] in self.sessions
                or self.owned.get(pid) == st["starttime"]
            ):
                ours.append(pid)
        return ours

    def reap_orphans(self):
        me = os.getpid()
        for pid in all_pids():
            if pid in self.live_popen:
                continue
            st = proc_stat(pid)
            if st and st["ppid"] == me and st["state"] == "Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)

    def sweep(self, rounds=50):
        """SIGKILL every live process of ours; bounded."""
        left = []
        for _ in range(rounds):
            left = self._ours()
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.reap_orphans()
            if not left:
                break
            time.sleep(0.1)
        self.reap_orphans()
        # drop stale entries
        for pid in list(self.owned):
            st = proc_stat(pid)
            if st is None or st["starttime"] != self.owned[pid]:
                del self.owned[pid]
        return self._ours()


TRACKER = Tracker()


def tool_env(extra=None):
    """Environment for the tools under test and their CLIs."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = PYCACHE_DIR
    env["HLBENCH_MARK"] = f"hlbench-{os.getpid()}"
    if extra:
        env.update(extra)
    return env


class Daemon:
    """A supervisor daemon in the foreground, in its own session."""

    def __init__(self, name, cmd, cwd, env=None):
        self.name = name
        self.log_path = os.path.join(cwd, "daemon.out")
        self.logf = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        full_env = tool_env(env)
        self.t_launch = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
        self.pid = self.proc.pid
        TRACKER.live_popen.add(self.pid)
        TRACKER.add_daemon(self.pid)

    def alive(self):
        return self.proc.poll() is None

    def check_alive(self):
        if not self.alive():
            raise BenchError(
                f"{self.name} exited with {self.proc.returncode}: {tail_of(self.log_path)}"
            )

    def stop(self, grace=10.0):
        try:
            if self.alive():
                TRACKER.remember(descendants([self.pid]))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=grace)
            if self.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=5)
        finally:
            TRACKER.live_popen.discard(self.pid)
            left = TRACKER.sweep()
            with contextlib.suppress(OSError):
                self.logf.close()
        if left:
            log(f"warning: {len(left)} processes survived cleanup: {left[:10]}")


def run_cmd(cmd, timeout, cwd=None):
    """subprocess.run with bounded time; returns CompletedProcess."""
    p = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=tool_env(),
    )
    TRACKER.live_popen.add(p.pid)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=5)
        raise BenchError(f"{os.path.basename(cmd[0])} timed out after {timeout:.0f} s") from None
    finally:
        TRACKER.live_popen.discard(p.pid)
    return subprocess.CompletedProcess(
        cmd, p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    )


# ---------------------------------------------------------------------------
# supervisord XML-RPC over its unix socket (stdlib only)
# ---------------------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._unix_path)
        self.sock = s


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path, timeout):
        super().__init__()
        self._unix_path = path
        self._timeout = timeout
        self._conn = None

    def make_connection(self, host):
        self._conn = _UnixHTTPConnection(self._unix_path, self._timeout)
        return self._conn

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def supervisor_rpc(sock_path, method, timeout=5.0):
    transport = _UnixTransport(sock_path, timeout)
    proxy = xmlrpc.client.ServerProxy("http://localhost", transport=transport)
    try:
        return getattr(proxy.supervisor, method)()
    finally:
        transport.close()


# ---------------------------------------------------------------------------
# circus status poller: runs under the peers venv (needs pyzmq)
# ---------------------------------------------------------------------------

CIRCUS_POLLER = r"""
import sys, time
from circus.client import CircusClient
from circus.exc import CallError
endpoint, n, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
print("READY", flush=True)
sys.stdin.readline()
deadline = time.monotonic() + timeout
client = CircusClient(endpoint=endpoint, timeout=2.0)
polls = 0
while time.monotonic() < deadline and polls < 100000:
    polls += 1
    t_send = time.monotonic()
    try:
        res = client.call({"command": "status", "properties": {}})
    except CallError:
        time.sleep(0.02)
        continue
    st = res.get("statuses") or {}
    active = sum(1 for v in st.values() if v == "active")
    if res.get("status") == "ok" and len(st) == n and active == n:
        print("OK %.9f %.9f %d" % (time.monotonic(), t_send, polls), flush=True)
        client.stop()
        sys.exit(0)
    time.sleep(0.02)
print("TIMEOUT %d" % polls, flush=True)
sys.exit(1)
"""


# ---------------------------------------------------------------------------
# tool adapters
# ---------------------------------------------------------------------------


class Tool:
    name = "?"
    label = "?"

    def available(self):
        return None  # or a reason string

    def version(self):
        return ""

    # configs: each returns the daemon argv (and writes files into d)
    def crash_config(self, d, out_file):
        raise NotImplementedError

    def sleep_config(self, d, n):
        raise NotImplementedError

    def status_cli(self, d):
        raise NotImplementedError

    # status polling: prepare() before launch, wait() after launch
    def poll_prepare(self, d, n, timeout):
        return None

    def poll_wait(self, d, n, daemon, state, deadline):
        """Return (t_done, t_poll_start, polls): monotonic time at which a
        status reply showing n programs running was received."""
        raise NotImplementedError


class Heartline(Tool):
    name = "heartline"
    label = "heartline"

    def available(self):
        if not os.access(HEARTLINE_BIN, os.X_OK):
            return "not installed"
        return None

    def version(self):
        try:
            r = run_cmd([HEARTLINE_BIN, "--version"], 10)
            return one_line(r.stdout or r.stderr, 60)
        except Exception as e:
            return f"unknown ({one_line(e, 40)})"

    def _write(self, d, body):
        path = os.path.join(d, "heartline.toml")
        os.makedirs(os.path.join(d, "run"), exist_ok=True)
        os.makedirs(os.path.join(d, "logs"), exist_ok=True)
        with open(path, "w") as f:
            f.write(HEARTLINE_CONFIG_HEAD + body)
        return path

    def crash_config(self, d, out_file):
        cfg = self._write(
            d, HEARTLINE_CRASH_PROGRAM.format(child=toml_str(CHILD_BIN), out=toml_str(out_file))
        )
        return heartline_cmd_up(cfg)

    def sleep_config(self, d, n):
        body = "".join(
            HEARTLINE_SLEEP_PROGRAM.format(name=f"p{i:03d}", sleep=toml_str(SLEEP_BIN))
            for i in range(1, n + 1)
        )
        cfg = self._write(d, body)
        return heartline_cmd_up(cfg)

    def status_cli(self, d):
        return heartline_cmd_status(os.path.join(d, "heartline.toml"))

    def poll_wait(self, d, n, daemon, state, deadline):
        cmd = heartline_cmd_status_json(os.path.join(d, "heartline.toml"))
        polls, last = 0, "no reply"
        while time.monotonic() < deadline and polls < 20000:
            daemon.check_alive()
            polls += 1
            t_send = time.monotonic()
            try:
                r = run_cmd(cmd, max(1.0, min(10.0, deadline - t_send)))
            except BenchError as e:
                last = str(e)
                continue
            t_done = time.monotonic()
            try:
                running, total = heartline_count_running(r.stdout)
            except (ValueError, AttributeError, TypeError) as e:
                if r.returncode == 0:
                    raise BenchError(f"bad status --json output: {one_line(e, 80)}") from e
                last = f"status rc={r.returncode}: {one_line(r.stderr or r.stdout, 80)}"
            else:
                last = f"{running}/{total} running (rc={r.returncode})"
                if running == n and total == n:
                    return t_done, t_send, polls
            time.sleep(0.02)
        raise BenchError(f"not all running before timeout (last: {last})")


class Supervisord(Tool):
    name = "supervisord"
    label = "supervisord"

    def available(self):
        if not os.access(os.path.join(PEERS_VENV, "bin", "supervisord"), os.X_OK):
            return "not installed (peers venv)"
        return None

    def version(self):
        r = run_cmd([os.path.join(PEERS_VENV, "bin", "supervisord"), "--version"], 20)
        return r.stdout.strip()

    def _write(self, d, programs, minfds=1024):
        sock = os.path.join(d, "supervisor.sock")
        text = f"""\
[unix_http_server]
file = {sock}

[supervisord]
nodaemon = true
user = root
logfile = {d}/supervisord.log
pidfile = {d}/supervisord.pid
childlogdir = {d}/childlogs
minfds = {minfds}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix://{sock}
"""
        os.makedirs(os.path.join(d, "childlogs"), exist_ok=True)
        path = os.path.join(d, "supervisord.conf")
        with open(path, "w") as f:
            f.write(text + programs)
        return [os.path.join(PEERS_VENV, "bin", "supervisord"), "-n", "-c", path]

    def crash_config(self, d, out_file):
        prog = f"""
[program:crasher]
command = {CHILD_BIN} {out_file}
autorestart = true
startsecs = 0
startretries = 1000000
"""
        return self._write(d, prog)

    def sleep_config(self, d, n):
        progs = "".join(
            f"""
[program:p{i:03d}]
command = {SLEEP_BIN} 3600
"""
            for i in range(1, n + 1)
        )
        # supervisord refuses to start if it cannot get minfds descriptors;
        # it needs ~5 per program.
        return self._write(d, progs, minfds=max(1024, 8 * n + 64))

    def status_cli(self, d):
        return [
            os.path.join(PEERS_VENV, "bin", "supervisorctl"),
            "-c",
            os.path.join(d, "supervisord.conf"),
            "status",
        ]

    def poll_wait(self, d, n, daemon, state, deadline):
        sock = os.path.join(d, "supervisor.sock")
        polls, last = 0, "no reply"
        while time.monotonic() < deadline and polls < 100000:
            daemon.check_alive()
            polls += 1
            t_send = time.monotonic()
            try:
                infos = supervisor_rpc(
                    sock, "getAllProcessInfo", timeout=max(0.5, min(10.0, deadline - t_send))
                )
            except (OSError, xmlrpc.client.Error, http.client.HTTPException) as e:
                last = one_line(e, 80)
                time.sleep(0.02)
                continue
            t_done = time.monotonic()
            running = sum(1 for p in infos if p.get("statename") == "RUNNING")
            last = f"{running}/{len(infos)} RUNNING"
            if running == n and len(infos) == n:
                return t_done, t_send, polls
            time.sleep(0.02)
        raise BenchError(f"not all RUNNING before timeout (last: {last})")


class Circus(Tool):
    name = "circus"

    def __init__(self, check_delay):
        self.check_delay = check_delay
        default = ", default" if check_delay == CIRCUS_DEFAULT_CHECK_DELAY else ""
        self.label = f"circus (check_delay {check_delay:g} s{default})"

    def available(self):
        if not os.access(os.path.join(PEERS_VENV, "bin", "circusd"), os.X_OK):
            return "not installed (peers venv)"
        return None

    def version(self):
        r = run_cmd([os.path.join(PEERS_VENV, "bin", "circusd"), "--version"], 20)
        return r.stdout.strip()

    @staticmethod
    def endpoint(d):
        return "ipc://" + os.path.join(d, "ctl.sock")

    def _write(self, d, watchers):
        text = f"""\
[circus]
check_delay = {self.check_delay}
endpoint = {self.endpoint(d)}
pubsub_endpoint = ipc://{d}/pub.sock
statsd = false
"""
        path = os.path.join(d, "circus.ini")
        with open(path, "w") as f:
            f.write(text + watchers)
        return [os.path.join(PEERS_VENV, "bin", "circusd"), path]

    def crash_config(self, d, out_file):
        w = f"""
[watcher:crasher]
cmd = {CHILD_BIN}
args = {out_file}
numprocesses = 1
warmup_delay = 0
respawn = true
max_retry = -1
"""
        return self._write(d, w)

    def sleep_config(self, d, n):
        ws = "".join(
            f"""
[watcher:p{i:03d}]
cmd = {SLEEP_BIN}
args = 3600
numprocesses = 1
"""
            for i in range(1, n + 1)
        )
        return self._write(d, ws)

    def status_cli(self, d):
        return [
            os.path.join(PEERS_VENV, "bin", "circusctl"),
            "--endpoint",
            self.endpoint(d),
            "status",
        ]

    def poll_prepare(self, d, n, timeout):
        script = os.path.join(WORK_DIR, "circus_poll.py")
        with open(script, "w") as f:
            f.write(CIRCUS_POLLER)
        p = subprocess.Popen(
            [PEERS_PY, script, self.endpoint(d), str(n), str(timeout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
            env=tool_env(),
        )
        TRACKER.live_popen.add(p.pid)
        TRACKER.remember([p.pid])
        line = p.stdout.readline().strip()  # imports done
        if line != "READY":
            p.kill()
            p.wait(5)
            TRACKER.live_popen.discard(p.pid)
            raise BenchError("circus status poller did not start")
        return p

    def poll_go(self, state):
        state.stdin.write("GO\n")
        state.stdin.flush()

    def poll_wait(self, d, n, daemon, state, deadline):
        p = state
        try:
            # the poller has its own deadline; bound our wait as well
            while time.monotonic() < deadline + 5:
                daemon.check_alive()
                try:
                    p.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if p.poll() is None:
                raise BenchError("circus status poller hung")
            out = p.stdout.read().strip()
            if not out.startswith("OK "):
                raise BenchError(f"not all watchers active before timeout ({one_line(out, 60)})")
            _, t_done, t_send, polls = out.split()
            return float(t_done), float(t_send), int(polls)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(5)
            TRACKER.live_popen.discard(p.pid)


# ---------------------------------------------------------------------------
# benchmarks
# ---------------------------------------------------------------------------


def wait_running(tool, d, n, daemon, timeout, state=None):
    deadline = time.monotonic() + timeout
    return tool.poll_wait(d, n, daemon, state, deadline)


def launch_and_wait(tool, d, cmd, n, timeout, name):
    """Start the daemon and poll until n programs are running.
    Returns (daemon, seconds_from_launch, poll_info)."""
    state = tool.poll_prepare(d, n, timeout)
    try:
        daemon = Daemon(name, cmd, d)
    except Exception:
        if state is not None:
            state.kill()
            state.wait(5)
            TRACKER.live_popen.discard(state.pid)
        raise
    if state is not None:
        tool.poll_go(state)
    try:
        t_done, t_send, polls = wait_running(tool, d, n, daemon, timeout, state)
    except BaseException:
        daemon.stop(grace=3.0)
        raise
    return (
        daemon,
        t_done - daemon.t_launch,
        {"poll_sent_s": round(t_send - daemon.t_launch, 4), "polls": polls},
    )


def parse_crash_file(path):
    events = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0] in ("S", "E"):
                    events.append((parts[0], int(parts[1])))
    except OSError:
        pass
    lat = []
    for (tag_a, t_a), (tag_b, t_b) in itertools.pairwise(events):
        if tag_a == "E" and tag_b == "S":
            lat.append((t_b - t_a) / 1e6)
    starts = sum(1 for t, _ in events if t == "S")
    return lat, starts


def bench_crash(tool, mode, budget, samples):
    d = fresh_dir(
        os.path.join(
            WORK_DIR,
            "crash-" + tool.name + (f"-{tool.check_delay:g}" if isinstance(tool, Circus) else ""),
        )
    )
    out = os.path.join(d, "events.txt")
    cmd = tool.crash_config(d, out)
    # per-sample worst cases: supervisord ~1.1 s, circus check_delay + 0.1 s
    per = {"heartline": 0.5, "supervisord": 1.5}.get(
        tool.name, getattr(tool, "check_delay", 1.0) + 0.3
    )
    timeout = budget.limit(10.0 + (samples + 2) * per)
    daemon = Daemon(tool.name, cmd, d)
    try:
        deadline = time.monotonic() + timeout
        lat, starts = [], 0
        while time.monotonic() < deadline:
            daemon.check_alive()
            lat, starts = parse_crash_file(out)
            if len(lat) >= samples + 1:
                break
            time.sleep(0.05)
    finally:
        daemon.stop(grace=mode["stop_grace"])
    lat, starts = parse_crash_file(out)
    lat = lat[1 : samples + 1]  # drop the first restart (daemon warm-up)
    if len(lat) < max(3, samples // 4):
        raise BenchError(f"only {len(lat)} restarts observed in {timeout:.0f} s ({starts} starts)")
    res = {
        "n": len(lat),
        "p50_ms": percentile(lat, 50),
        "p90_ms": percentile(lat, 90),
        "p99_ms": percentile(lat, 99),
        "min_ms": min(lat),
        "max_ms": max(lat),
    }
    if len(lat) < samples:
        res["note"] = f"only {len(lat)} of {samples} samples before timeout"
    return res


def empty_baseline_fds(tool, mode, budget):
    """fds held by a daemon with no programs (or 1 if it needs one)."""
    for n in (0, 1):
        d = fresh_dir(os.path.join(WORK_DIR, f"fdbase-{tool.name}-{n}"))
        cmd = tool.sleep_config(d, n)
        try:
            daemon, _, _ = launch_and_wait(tool, d, cmd, n, budget.limit(30.0), tool.name)
        except BenchError as e:
            last_err = e
            continue
        try:
            time.sleep(1.0)
            return fd_count(daemon.pid), n
        finally:
            daemon.stop(grace=mode["stop_grace"])
    raise BenchError(f"baseline daemon: {last_err}")


def bench_startup_idle(tool, mode, budget, want_startup, want_idle):
    d = fresh_dir(
        os.path.join(
            WORK_DIR,
            "many-" + tool.name + (f"-{tool.check_delay:g}" if isinstance(tool, Circus) else ""),
        )
    )
    cmd = tool.sleep_config(d, N_PROGRAMS)
    idle = None
    repeats = mode["startup_runs"] if want_startup else 1
    runs = []
    for i in range(repeats):
        if i:
            # a fresh daemon each time; a run that does not fit the
            # budget is skipped rather than failing the benchmark
            if budget.remaining() < 40.0 + (mode["idle_window"] if want_idle else 0):
                break
            d = fresh_dir(d)
            cmd = tool.sleep_config(d, N_PROGRAMS)
        daemon, secs, info = launch_and_wait(
            tool, d, cmd, N_PROGRAMS, budget.limit(60.0), tool.name
        )
        runs.append(secs)
        if i < repeats - 1:
            daemon.stop(grace=mode["stop_grace"])
            daemon = None
            continue
        break
    if daemon is None:  # the last planned repeat was skipped
        daemon, secs, info = launch_and_wait(
            tool, d, cmd, N_PROGRAMS, budget.limit(60.0), tool.name
        )
        runs.append(secs)
    try:
        startup = {
            "seconds": percentile(runs, 50),
            "min_s": min(runs),
            "max_s": max(runs),
            "n": len(runs),
            "runs_s": [round(x, 4) for x in runs],
        }
        startup.update(info)
        startup["last_call_s"] = secs - info["poll_sent_s"]
        if want_idle:
            window = mode["idle_window"]
            budget.limit(window + 10.0)
            time.sleep(2.0)  # let startup transitions settle
            daemon.check_alive()
            fds_500 = fd_count(daemon.pid)
            clk = os.sysconf("SC_CLK_TCK")
            helpers = helper_pids(daemon.pid)
            h0 = helper_ticks(helpers)
            t0, c0, s0 = time.monotonic(), cpu_ticks(daemon.pid), sched_ns(daemon.pid)
            end = t0 + window
            while time.monotonic() < end:
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            t1, c1, s1 = time.monotonic(), cpu_ticks(daemon.pid), sched_ns(daemon.pid)
            h1 = helper_ticks(helpers)
            daemon.check_alive()
            rss_kb = vm_rss_kb(daemon.pid)
            threads = thread_count(daemon.pid)
            kids = len(descendants([daemon.pid]))
            helper_rss = 0
            for pid in helpers:
                with contextlib.suppress(OSError, BenchError):
                    helper_rss += vm_rss_kb(pid)
            idle = {
                "rss_mb": rss_kb / 1024.0,
                "cpu_pct": 100.0 * (c1 - c0) / clk / (t1 - t0),
                "cpu_pct_schedstat": (
                    100.0 * (s1 - s0) / 1e9 / (t1 - t0)
                    if s0 is not None and s1 is not None
                    else None
                ),
                "window_s": t1 - t0,
                "fds_500": fds_500,
                "threads": threads,
                "descendants": kids,
                "helpers": len(helpers),
                "helper_rss_mb": helper_rss / 1024.0,
                "helper_cpu_pct": 100.0 * (h1 - h0) / clk / (t1 - t0),
            }
    finally:
        daemon.stop(grace=mode["stop_grace"])
    if idle is not None:
        try:
            base, base_n = empty_baseline_fds(tool, mode, budget)
            idle["fds_base"] = base
            idle["fds_base_programs"] = base_n
            idle["fds_per_child"] = (idle["fds_500"] - base) / float(N_PROGRAMS - base_n)
        except BenchError as e:
            idle["fds_per_child_error"] = str(e)
    return startup, idle


def bench_status(tool, mode, budget):
    d = fresh_dir(os.path.join(WORK_DIR, "status-" + tool.name))
    cmd = tool.sleep_config(d, N_STATUS_PROGRAMS)
    runs = mode["status_runs"]
    daemon, _, _ = launch_and_wait(tool, d, cmd, N_STATUS_PROGRAMS, budget.limit(30.0), tool.name)
    times = []
    try:
        cli = tool.status_cli(d)
        time.sleep(0.5)
        r = run_cmd(cli, 30)  # warm-up (page cache), not counted
        if r.returncode != 0:
            raise BenchError(f"status rc={r.returncode}: {one_line(r.stderr or r.stdout, 100)}")
        if "p001" not in r.stdout:
            raise BenchError(f"status output lacks program names: {one_line(r.stdout, 80)}")
        deadline = time.monotonic() + budget.limit(60.0)
        for _ in range(runs):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            r = run_cmd(cli, 30)
            t1 = time.perf_counter()
            if r.returncode != 0:
                raise BenchError(f"status rc={r.returncode}: {one_line(r.stderr or r.stdout, 100)}")
            times.append((t1 - t0) * 1000.0)
    finally:
        daemon.stop(grace=mode["stop_grace"])
    if not times:
        raise BenchError("no status runs completed")
    return {
        "n": len(times),
        "p50_ms": percentile(times, 50),
        "p90_ms": percentile(times, 90),
        "min_ms": min(times),
    }


def warm_up(tool):
    """One short daemon + status CLI run, untimed: fills the bytecode cache
    and the page cache so that the first measured run is not a cold one."""
    d = fresh_dir(os.path.join(WORK_DIR, "warm-" + tool.name))
    cmd = tool.sleep_config(d, 1)
    daemon, _, _ = launch_and_wait(tool, d, cmd, 1, 30.0, tool.name)
    try:
        run_cmd(tool.status_cli(d), 30)
    finally:
        daemon.stop(grace=1.0)


# ---------------------------------------------------------------------------
# setup
# ---------------------------------------------------------------------------


def ensure_peers():
    """Create benchmarks/.venv-peers with the pinned peers if needed."""
    want = {"supervisord": "4.3.0", "circusd": "0.19.0"}

    def ok():
        for exe, ver in want.items():
            path = os.path.join(PEERS_VENV, "bin", exe)
            if not os.access(path, os.X_OK):
                return False
            try:
                r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                return False
            if r.stdout.strip() != ver:
                return False
        return True

    if ok():
        return None
    log(f"installing peers into {PEERS_VENV}")
    try:
        if not os.path.exists(PEERS_PY):
            subprocess.run([sys.executable, "-m", "venv", PEERS_VENV], check=True, timeout=120)
        subprocess.run(
            [
                PEERS_PY,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *PEER_PACKAGES,
            ],
            check=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"peer install failed: {one_line(e, 100)}"
    return None if ok() else "peer install incomplete"


def build_child():
    os.makedirs(BIN_DIR, exist_ok=True)
    if not os.path.exists(CHILD_BIN) or os.path.getmtime(CHILD_BIN) < os.path.getmtime(CHILD_SRC):
        subprocess.run(["gcc", "-O2", "-Wall", "-o", CHILD_BIN, CHILD_SRC], check=True, timeout=120)
    src = shutil.which("sleep") or "/bin/sleep"
    src = "/bin/sleep" if os.path.exists("/bin/sleep") else src
    if not os.path.exists(SLEEP_BIN):
        shutil.copy2(src, SLEEP_BIN)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def machine_info():
    def read(path):
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return ""

    model = ""
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = ""
    for line in read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem = "%.1f GiB" % (int(line.split()[1]) / 1024.0 / 1024.0)
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
        "os": one_line(read("/etc/debian_version"))
        and "Debian " + read("/etc/debian_version").strip(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------


def fmt(v, unit, digits=1):
    if v is None:
        return "n/a"
    return ("%." + str(digits) + "f%s") % (v, unit)


def ratio(v, ref):
    if v is None or ref is None:
        return "n/a"
    if ref == 0:
        return "n/a (heartline 0)"
    return "%.2fx" % (v / ref)


def goal_cell(v, goal, unit):
    if v is None:
        return f"<= {goal:g}{unit}"
    return "<= {:g}{} ({})".format(goal, unit, "met" if v <= goal else "missed")


def kept_sections(path):
    """Sections other benchmark scripts (liveness.py) maintain between <!-- section: X -->
    and <!-- /section --> markers: carried over when this script rewrites the file."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    out = []
    for m in re.finditer(r"<!-- section: [\w-]+ -->.*?<!-- /section -->\n?", text, re.S):
        out.append(m.group(0))
    return "".join(out)


def render(results, info, versions, rows_for):
    L = []
    L.append("# heartline benchmark results")
    L.append("")
    L.append(
        "Generated by `python3 benchmarks/run.py{}` on {}.".format(
            results.get("_args", ""), info["date"]
        )
    )
    L.append("")
    L.append(
        "Machine: {} cores (nproc), {}, {}, kernel {}, {}; harness Python {}.".format(
            info["nproc"],
            info["cpu"] or "cpu unknown",
            info["memory"],
            info["kernel"],
            info["os"],
            info["python"],
        )
    )
    L.append("")
    L.append(
        "Versions: "
        + "; ".join(
            v if v.lower().startswith(k) else f"{k} {v}" for k, v in sorted(versions.items())
        )
        + "."
    )
    L.append("")
    L.append(
        "Ratios are `tool / heartline` for the same figure (lower is "
        "better everywhere). Percentiles use linear interpolation. "
        "Cells read `failed: ...` when a tool did not complete a "
        "benchmark."
    )
    L.append("")

    def cell(bench, key):
        return results.get(bench, {}).get("rows", {}).get(key)

    def table(title, bench, cols, goal_key, goal_col, goal_unit, main, intro, show_notes=True):
        b = results.get(bench)
        if not b:
            return
        L.append("## " + title)
        L.append("")
        L.append("Mode: {}, measured {}.".format(b["mode"], b["date"]))
        L.append("")
        L.extend(intro)
        L.append("")
        hl = cell(bench, "heartline")
        ref = hl.get(main) if isinstance(hl, dict) and "error" not in hl else None
        L.append("| tool | " + " | ".join(c[0] for c in cols) + " | goal | vs heartline |")
        L.append("|---" * (len(cols) + 3) + "|")
        when = "{}, {}".format(b["mode"], b["date"])
        row_notes = []
        for key, label in rows_for(bench):
            r = cell(bench, key)
            if not isinstance(r, dict):
                continue
            if r.get("_when") and r["_when"] != when:
                label += " (kept from an earlier run: {})".format(r["_when"])
            if r.get("note"):
                row_notes.append("{}: {}".format(label, r["note"]))
            if "error" in r:
                L.append(
                    "| {} | {} |".format(
                        label, " | ".join([r["error"].replace("|", "\\|")] + [""] * (len(cols) + 1))
                    )
                )
                continue
            vals = [fmt(r.get(c[1]), c[2], c[3]) for c in cols]
            L.append(
                "| {} | {} | {} | {} |".format(
                    label,
                    " | ".join(vals),
                    goal_cell(r.get(goal_col), GOALS[goal_key], goal_unit),
                    ratio(r.get(main), ref),
                )
            )
        notes = list(b.get("notes", [])) + row_notes if show_notes else []
        if notes:
            L.append("")
            for n in notes:
                L.append("- " + n)
        L.append("")

    table(
        "1. Crash-to-restart latency",
        "crash",
        [
            ("p50", "p50_ms", " ms", 2),
            ("p90", "p90_ms", " ms", 2),
            ("p99", "p99_ms", " ms", 2),
            ("samples", "n", "", 0),
        ],
        "crash_p50_ms",
        "p50_ms",
        " ms",
        "p50_ms",
        [
            "Child: `benchmarks/child.c` (writes `S <ns>`, sleeps 50 ms, "
            "writes `E <ns>`, `_exit(1)`). Sample = next `S` minus previous "
            "`E` (CLOCK_MONOTONIC); the first restart is dropped as warm-up. "
            "Goal applies to p50; the ratio compares p50.",
            "",
            'Settings: heartline `restart = "always"`, zero backoff, no '
            "crash-loop limit; supervisord `autorestart=true startsecs=0 "
            "startretries=1000000`; circus `respawn=true max_retry=-1 "
            "warmup_delay=0` with the `check_delay` shown in the row label "
            "(circus has no SIGCHLD handling: it reaps and respawns only "
            "every `check_delay`; its config-file default is 5 s).",
        ],
    )

    table(
        "2. 500 programs: startup",
        "startup",
        [
            ("all running after (median)", "seconds", " s", 3),
            ("min", "min_s", " s", 3),
            ("max", "max_s", " s", 3),
            ("runs", "n", "", 0),
            ("last status call took", "last_call_s", " s", 3),
        ],
        "startup_s",
        "seconds",
        " s",
        "seconds",
        [
            "Time from launching the daemon in the foreground until the "
            "tool's own status API reports all 500 programs running "
            "(`/bin/sleep 3600` each, run from a copy at "
            "`benchmarks/work/bin/sleepbench` so leftovers can be found by "
            "executable path). The figure is the moment the first status "
            "reply showing 500/500 was received. Status is polled back to "
            "back with 20 ms pauses: heartline via `heartline -c CONFIG "
            "status --json` (so each poll includes one CLI start-up), "
            "supervisord via XML-RPC `supervisor.getAllProcessInfo` over its "
            "unix socket (state `RUNNING`), circus via its zmq `status` "
            "command from a client started before circusd (all watchers "
            "`active`). `last status call took` is the duration of that final "
            "status call (for the last run), included in the figure. "
            "Each tool runs with default program settings; "
            "note that supervisord's default `startsecs=1` holds a program "
            "in STARTING for 1 s before reporting RUNNING."
        ],
    )

    idle_intro = [
        "With the 500 programs of benchmark 2 running, after a 2 s "
        "settle: daemon RSS (`VmRSS`), CPU over an idle window "
        "(utime+stime from `/proc/PID/stat`), and file "
        "descriptors per child = (fds with 500 programs - fds of "
        "a daemon with no programs) / 500. Only the daemon "
        "process is counted (supervisord and circusd are each "
        "one process; circusd has zmq I/O threads, included). "
        "`descendants` counts all live processes below the "
        "daemon (500 expected); `helper procs` are those that are "
        "not the 500 programs (e.g. a process the daemon forked "
        "for itself). Their RSS and CPU are shown separately and "
        "are not part of the daemon figures or the goals."
    ]
    table(
        "3a. 500 programs idle: daemon RSS",
        "idle",
        [
            ("RSS", "rss_mb", " MB", 1),
            ("threads", "threads", "", 0),
            ("descendants", "descendants", "", 0),
            ("helper procs", "helpers", "", 0),
            ("helper RSS", "helper_rss_mb", " MB", 1),
        ],
        "rss_mb",
        "rss_mb",
        " MB",
        "rss_mb",
        idle_intro,
    )
    # reuse the same bench data for CPU and fds
    if results.get("idle"):
        for sub, cols, gk, unit, main in (
            (
                "3b. 500 programs idle: daemon CPU",
                [
                    ("CPU", "cpu_pct", " %", 3),
                    ("CPU (schedstat)", "cpu_pct_schedstat", " %", 3),
                    ("helper CPU", "helper_cpu_pct", " %", 3),
                    ("window", "window_s", " s", 0),
                ],
                "cpu_pct",
                " %",
                "cpu_pct",
            ),
            (
                "3c. 500 programs idle: file descriptors per child",
                [
                    ("fds/child", "fds_per_child", "", 2),
                    ("fds at 500", "fds_500", "", 0),
                    ("fds empty", "fds_base", "", 0),
                ],
                "fds_per_child",
                "",
                "fds_per_child",
            ),
        ):
            table(
                sub,
                "idle",
                cols,
                gk,
                main,
                unit,
                main,
                [
                    "Same run as 3a."
                    + (
                        " `CPU (schedstat)` sums per-thread on-CPU ns from "
                        "`/proc/PID/task/*/schedstat`, finer than clock ticks."
                        if gk == "cpu_pct"
                        else ""
                    )
                ],
                show_notes=False,
            )

    table(
        "4. Status from a cold start",
        "status",
        [("p50", "p50_ms", " ms", 1), ("p90", "p90_ms", " ms", 1), ("runs", "n", "", 0)],
        "status_p50_ms",
        "p50_ms",
        " ms",
        "p50_ms",
        [
            "Wall time of one run of the tool's status CLI against a daemon "
            "running 10 programs (new process each run; one unmeasured "
            "warm-up run first): `heartline -c CONFIG status`, "
            "`supervisorctl -c CONFIG status`, `circusctl --endpoint "
            "ipc://... status`. The goal applies to p50."
        ],
    )

    L.append("## Notes")
    L.append("")
    for n in results.get("_notes", []):
        L.append("- " + n)
    L.append("")
    return "\n".join(L)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="fewer samples, 10 s idle window (< 2 min)"
    )
    ap.add_argument("--only", choices=BENCHES, help="run one benchmark")
    ap.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help="comma-separated subset of {}".format(",".join(TOOLS)),
    )
    ap.add_argument(
        "--setup-only", action="store_true", help="install the peers and build the child, then exit"
    )
    args = ap.parse_args()
    tools_wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tools_wanted:
        if t not in TOOLS:
            ap.error(f"unknown tool {t!r}")
    mode_name = "quick" if args.quick else "full"
    mode = MODES[mode_name]
    benches = [args.only] if args.only else list(BENCHES)

    os.makedirs(WORK_DIR, exist_ok=True)
    if not become_subreaper():
        log("warning: could not become a child sub-reaper")

    peer_err = None
    if "supervisord" in tools_wanted or "circus" in tools_wanted:
        peer_err = ensure_peers()
    build_child()
    if args.setup_only:
        log("peers: {}; child: {}".format(peer_err or "ok", os.path.relpath(CHILD_BIN, REPO_DIR)))
        return 1 if peer_err else 0

    budget = Budget(mode["budget"])
    load_start = loadavg()
    hl, sup = Heartline(), Supervisord()
    circ_fast = Circus(CIRCUS_FAST_CHECK_DELAY)
    circ_default = Circus(CIRCUS_DEFAULT_CHECK_DELAY)

    versions = {}
    for t in (hl, sup, circ_fast):
        if t.name not in tools_wanted:
            continue
        reason = t.available() or (peer_err if t is not hl else None)
        if reason is None:
            try:
                versions[t.name] = t.version()
            except Exception as e:
                versions[t.name] = f"unknown ({one_line(e, 40)})"
        else:
            versions[t.name] = reason

    for t in (hl, sup, circ_default):
        if t.name not in tools_wanted or t.available() or (t is not hl and peer_err):
            continue
        try:
            log(f"warm-up {t.name}")
            warm_up(t)
        except Exception as e:
            log(f"   warm-up of {t.name} failed: {one_line(e)}")
        finally:
            TRACKER.sweep()

    def unavailable(t):
        if t.name not in tools_wanted:
            return "skipped"
        r = t.available()
        if r is None and t is not hl:
            r = peer_err
        return r

    # previous results (so that --only / --tools keep the other figures)
    try:
        with open(RESULTS_JSON) as f:
            results = json.load(f)
    except (OSError, ValueError):
        results = {}
    results["_args"] = "".join(" " + a for a in sys.argv[1:])
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    def section(bench):
        old = results.get(bench) or {}
        rows = dict(old.get("rows", {}))
        sec = {"mode": mode_name, "date": now, "rows": rows, "notes": []}
        results[bench] = sec
        return sec

    when = f"{mode_name}, {now}"

    def row(value):
        value = dict(value)
        value["_when"] = when
        return value

    def error_row(text):
        return {"error": text, "_when": when}

    def run_guarded(sec, key, t, fn):
        """Returns ("skip"|"fail"|"ok", value); failures fill the cell."""
        if t.name not in tools_wanted:
            return "skip", None
        why = unavailable(t)
        if why:
            sec["rows"][key] = error_row(why if why == "not installed" else "failed: " + why)
            return "fail", None
        log(f"{sec_name(sec)} / {key} ...")
        try:
            return "ok", fn()
        except BenchError as e:
            sec["rows"][key] = error_row("failed: " + one_line(e))
        except Exception as e:
            sec["rows"][key] = error_row(f"failed: {type(e).__name__}: {one_line(e)}")
        finally:
            TRACKER.sweep()
        log("   -> {}".format(sec["rows"][key]["error"]))
        return "fail", None

    sec_names = {}

    def sec_name(sec):
        return sec_names.get(id(sec), "?")

    # 1. crash-to-restart
    if "crash" in benches:
        sec = section("crash")
        sec_names[id(sec)] = "crash"
        variants = [
            ("heartline", hl, mode["crash_samples"]),
            ("supervisord", sup, mode["crash_samples"]),
            ("circus", circ_fast, mode["crash_samples"]),
        ]
        if mode["crash_default_circus_samples"]:
            variants.append(("circus_default", circ_default, mode["crash_default_circus_samples"]))
        else:
            sec["notes"].append(
                "circus with its default check_delay (5 s) is measured in "
                "full runs only (~5 s per sample); a quick run keeps the "
                "last full-run row, if any."
            )
        for key, t, n in variants:
            status, r = run_guarded(sec, key, t, lambda t=t, n=n: bench_crash(t, mode, budget, n))
            if status == "ok":
                sec["rows"][key] = row(r)
                log(
                    f"   -> p50 {r['p50_ms']:.2f} ms p90 {r['p90_ms']:.2f} ms "
                    f"p99 {r['p99_ms']:.2f} ms (n={r['n']})"
                )

    # 2 + 3. startup and idle share one daemon per tool
    if "startup" in benches or "idle" in benches:
        want_startup = "startup" in benches
        want_idle = "idle" in benches
        s_sec = section("startup") if want_startup else {"rows": {}, "notes": []}
        i_sec = section("idle") if want_idle else {"rows": {}, "notes": []}
        sec_names[id(s_sec)] = "startup"
        sec_names[id(i_sec)] = "idle"
        variants = [("heartline", hl), ("supervisord", sup), ("circus_default", circ_default)]
        if mode["circus_fast_idle_variant"]:
            variants.append(("circus", circ_fast))
        else:
            i_sec["notes"].append(
                "circus with check_delay 0.1 s (the setting of benchmark 1) "
                "is measured here in full runs only; a quick run keeps the "
                "last full-run row, if any."
            )
        for key, t in variants:
            holder = s_sec if want_startup else i_sec
            status, r = run_guarded(
                holder,
                key,
                t,
                lambda t=t: bench_startup_idle(t, mode, budget, want_startup, want_idle),
            )
            if status == "fail" and want_startup and want_idle:
                i_sec["rows"][key] = s_sec["rows"][key]
            if status != "ok":
                continue
            startup, idle = r
            if want_startup:
                s_sec["rows"][key] = row(startup)
                log("   -> startup {:.3f} s".format(startup["seconds"]))
            if want_idle:
                if idle is None:
                    i_sec["rows"][key] = error_row("failed: no idle data")
                else:
                    if idle.get("fds_per_child_error"):
                        idle["note"] = "fds/child: " + idle["fds_per_child_error"]
                    elif idle.get("fds_base_programs") == 1:
                        idle["note"] = (
                            "baseline daemon needed 1 program; fds/child"
                            " = (fds at 500 - fds at 1) / 499."
                        )
                    i_sec["rows"][key] = row(idle)
                    log(
                        "   -> RSS {:.1f} MB, CPU {:.3f} % (schedstat {}), fds/child {}".format(
                            idle["rss_mb"],
                            idle["cpu_pct"],
                            "{:.3f} %".format(idle["cpu_pct_schedstat"])
                            if idle.get("cpu_pct_schedstat") is not None
                            else "n/a",
                            "{:.2f}".format(idle["fds_per_child"])
                            if "fds_per_child" in idle
                            else "n/a",
                        )
                    )
        if want_idle:
            i_sec["notes"].append("Idle window: {:.0f} s.".format(mode["idle_window"]))

    # 4. status from a cold start
    if "status" in benches:
        sec = section("status")
        sec_names[id(sec)] = "status"
        for key, t in (("heartline", hl), ("supervisord", sup), ("circus_default", circ_default)):
            status, r = run_guarded(sec, key, t, lambda t=t: bench_status(t, mode, budget))
            if status == "ok":
                sec["rows"][key] = row(r)
                log("   -> p50 {:.1f} ms p90 {:.1f} ms".format(r["p50_ms"], r["p90_ms"]))

    # final safety net and verification
    left = TRACKER.sweep()
    leftovers = [p for p in all_pids() if (proc_exe(p) or "").startswith(BIN_DIR + "/")]
    results["_notes"] = [
        "Only loopback/unix-socket control channels are used "
        "(supervisord unix socket, circus ipc:// endpoints, heartline "
        "control socket in its run_dir).",
        "Every daemon ran in its own session and was stopped with SIGTERM "
        "(then SIGKILL to its group after a grace period); processes it "
        "left behind were killed by pid. Processes still running from "
        f"`benchmarks/work/bin/` after the run: {len(leftovers)}.",
        "heartline binary: `{}`{}.".format(
            os.path.relpath(HEARTLINE_BIN, REPO_DIR),
            "" if hl.available() is None else " (not installed at run time)",
        ),
        "Python tools run with PYTHONDONTWRITEBYTECODE unset and "
        "PYTHONPYCACHEPREFIX=benchmarks/work/pycache, after one untimed "
        "warm-up daemon + status run per tool, so every tool runs from "
        "compiled bytecode as after a normal install.",
        "Reference figures from earlier measurements: supervisord ~1008 ms "
        "restart latency, ~2.5 s for 500 programs, 34 MB RSS, 0.3 % idle "
        "CPU, 5 fds/child; circus 53 ms restart latency.",
        "Wall time of this run: {:.0f} s (budget {:.0f} s). Load average "
        "(1/5/15 min) at start: {}; at end: {}. The machine is not "
        "isolated: other work on it shows up as noise.".format(
            budget.elapsed(), mode["budget"], load_start, loadavg()
        ),
    ]
    if left:
        log(f"warning: processes left: {left[:20]}")

    info = machine_info()
    results["_machine"] = info
    merged = dict(results.get("_versions") or {})
    merged.update(versions)
    results["_versions"] = versions = merged

    labels = {
        "heartline": hl.label,
        "supervisord": sup.label,
        "circus": circ_fast.label,
        "circus_default": circ_default.label,
    }

    def rows_for(bench):
        if bench == "crash":
            order = ["heartline", "supervisord", "circus", "circus_default"]
        else:
            order = ["heartline", "supervisord", "circus_default", "circus"]
        return [(k, labels[k]) for k in order]

    with open(RESULTS_JSON, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    kept = kept_sections(RESULTS_MD)
    with open(RESULTS_MD, "w") as f:
        f.write(render(results, info, versions, rows_for))
        if kept:
            f.write("\n" + kept)
    log(f"wrote {os.path.relpath(RESULTS_MD, REPO_DIR)} ({budget.elapsed():.0f} s)")
    return 0


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rc = main()
    finally:
        # whatever happened, leave no daemon or child of ours behind
        TRACKER.sweep()
    sys.exit(rc)
