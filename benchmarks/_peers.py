"""The peers run.py measures heartline against, supervisord and circus: their adapters (configs,
status CLIs, how to ask them whether all programs run) and their installation into
benchmarks/.venv-peers. Standard library only: the peers' own clients run under the peers'
interpreter."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import time
import xmlrpc.client

from _common import PEERS_PY, PEERS_VENV, WORK_DIR, install_peers, one_line
from _harness import TRACKER, BenchError, log, run_cmd, tool_env
from _tools import CHILD_BIN, SLEEP_BIN, Tool

PEER_PACKAGES = ["supervisor==4.3.0", "circus==0.19.0"]

# circus' check_delay: how often circusd reaps and respawns (it has no
# SIGCHLD handler). The config-file default is 5 s.
CIRCUS_FAST_CHECK_DELAY = 0.1
CIRCUS_DEFAULT_CHECK_DELAY = 5.0


def ensure_peers():
    """Create benchmarks/.venv-peers with the pinned peers if needed; returns None, or why
    the peers cannot be measured."""
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
        install_peers(PEER_PACKAGES)
    except (OSError, subprocess.SubprocessError) as e:
        return f"peer install failed: {one_line(e, 100)}"
    return None if ok() else "peer install incomplete"


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


class Supervisord(Tool):
    name = "supervisord"
    label = "supervisord"
    crash_sample_s = 1.5  # a sample takes up to ~1.1 s

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


class Circus(Tool):
    name = "circus"

    def __init__(self, check_delay):
        self.check_delay = check_delay
        default = ", default" if check_delay == CIRCUS_DEFAULT_CHECK_DELAY else ""
        self.label = f"circus (check_delay {check_delay:g} s{default})"
        # a sample takes up to check_delay + 0.1 s: circusd reaps only every check_delay
        self.crash_sample_s = check_delay + 0.3

    def slug(self):
        return f"{self.name}-{self.check_delay:g}"

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
