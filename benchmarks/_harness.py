"""run.py's process housekeeping: every daemon it starts runs in its own session and is
stopped by process group, and every process one leaves behind is found and killed by pid (the
harness is a child sub-reaper, so orphans land with it). Also its run-time budget and the error
a tool's results cell shows."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time

from _common import BIN_DIR, WORK_DIR, one_line
from _procfs import all_pids, descendants, proc_exe, proc_stat

# Bytecode cache for every Python tool under test, so that all of them run
# from compiled bytecode (as after a normal install) without writing
# __pycache__ folders into anybody's source tree.
PYCACHE_DIR = os.path.join(WORK_DIR, "pycache")


class BenchError(Exception):
    """A tool failed a benchmark; the message goes into the results cell."""


def log(msg):
    print("[bench {}] {}".format(time.strftime("%H:%M:%S"), msg), flush=True)


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
                self.owned[pid] = st.starttime

    def _ours(self):
        me = os.getpid()
        ours = []
        for pid in all_pids():
            if pid == me:
                continue
            st = proc_stat(pid)
            if st is None or st.state in ("Z", "X"):
                continue
            exe = proc_exe(pid) or ""
            if (
                exe.startswith(BIN_DIR + "/")
                or st.session in self.sessions
                or st.pgrp in self.sessions
                or self.owned.get(pid) == st.starttime
            ):
                ours.append(pid)
        return ours

    def reap_orphans(self):
        me = os.getpid()
        for pid in all_pids():
            if pid in self.live_popen:
                continue
            st = proc_stat(pid)
            if st and st.ppid == me and st.state == "Z":
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
            if st is None or st.starttime != self.owned[pid]:
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
