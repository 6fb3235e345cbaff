"""The tools run.py measures, behind one adapter interface (``Tool``), and heartline's adapter.

Everything heartline-specific is in the block below: its config and its command lines. The
peers' adapters are in _peers.py.
"""

from __future__ import annotations

import json
import os
import time

from _common import BIN_DIR, HEARTLINE_BIN, one_line
from _harness import BenchError, run_cmd

CHILD_BIN = os.path.join(BIN_DIR, "crashchild")  # built from benchmarks/child.c
SLEEP_BIN = os.path.join(BIN_DIR, "sleepbench")  # a copy of /bin/sleep

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


def toml_str(s):
    # TOML basic strings accept JSON string escapes for these inputs.
    return json.dumps(s)


# ---------------------------------------------------------------------------
# the adapter interface
# ---------------------------------------------------------------------------


class Tool:
    name = "?"
    label = "?"
    # Worst case of one crash-to-restart sample, to size the crash benchmark's deadline.
    crash_sample_s = 1.3

    def available(self):
        return None  # or a reason string

    def version(self):
        return ""

    def slug(self):
        """Names this tool's (and this variant's) scratch folders."""
        return self.name

    # configs: each returns the daemon argv (and writes files into d)
    def crash_config(self, d, out_file):
        raise NotImplementedError

    def sleep_config(self, d, n):
        raise NotImplementedError

    def status_cli(self, d):
        raise NotImplementedError

    # status polling: prepare() before launch, go() once launched, wait() after launch
    def poll_prepare(self, d, n, timeout):
        return None

    def poll_go(self, state):
        pass

    def poll_wait(self, d, n, daemon, state, deadline):
        """Return (t_done, t_poll_start, polls): monotonic time at which a
        status reply showing n programs running was received."""
        raise NotImplementedError


class Heartline(Tool):
    name = "heartline"
    label = "heartline"
    crash_sample_s = 0.5

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
