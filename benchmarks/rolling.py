"""Rolling operations on lab hosts: `heartline rolling` beside `ansible-playbook` with `serial: 1`.

    .venv/bin/python benchmarks/rolling.py [--quick] [--no-write]

Needs root (lab hosts are network namespaces); without it, it says why in one line and leaves
RESULTS.md as it was. Four lab hosts (`heartline.testing.lab_hosts(4)`), each running a small
HTTP server (`python3 -m http.server`, bound to the host's own address on 198.18.0.0/15) as the
health gate's target. A roll over the four hosts runs the no-op command `true` on each in turn,
then checks the host's URL once (`--healthy 1`) before the next:

- heartline: `heartline rolling --group lab --check http://{host}:PORT/ --healthy 1 -- true`,
  with its shared ssh connections open (its default), and with a fresh connection each time
  (`ssh_options = ["ControlPath=none"]`);
- ansible-core (installed into benchmarks/.venv-peers on first use): a playbook with
  `serial: 1`, `gather_facts: false`, a `command: true` task and a `uri` check delegated to
  localhost, over an inventory of the same hosts with the lab's ssh_config
  (`ansible_ssh_common_args='-F ssh_config'`): with ansible's own defaults (ControlPersist=60s,
  no pipelining), with pipelining on, and with a fresh connection each time.

The parts are measured alone: the command over ssh (`ssh -F ssh_config HOST true`, through the
shared connection heartline keeps and with a fresh one) and one HTTP GET of a host's URL. A
tool's overhead per host is (its wall time for the roll - 4 x (command + check)) / 4, with the
command's cost taken over a shared connection for the rows that keep one and over a fresh one
for the rows that do not.

Writes its own section of benchmarks/RESULTS.md (between section markers, which run.py keeps)
and benchmarks/work/rolling.json. Every server runs in its own session and is stopped by its
process group at the end, ansible's persistent ssh connections are closed, and the lab goes
down, even on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import HEARTLINE_BIN, PEERS_PY, PEERS_VENV, WORK_DIR, install_peers, one_line
from _common import percentile as pct
from _sections import measure_and_publish, section_text
from cluster import CLI_ENV, median, started

SECTION = "rolling"
RESULTS_JSON = os.path.join(WORK_DIR, "rolling.json")
HOSTS = 4
PORT = 8080
GOAL_MS = 50.0
#: The newest ansible-core that runs on the project's Python (3.11).
ANSIBLE = "ansible-core==2.19.14"
ANSIBLE_PLAYBOOK = os.path.join(PEERS_VENV, "bin", "ansible-playbook")
#: How long one roll may take before the run gives up on it.
RUN_LIMIT = 120.0


def log(msg: str) -> None:
    print(f"[rolling] {msg}", file=sys.stderr, flush=True)


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall seconds of ``argv`` (which must succeed), and its stdout."""
    t0 = time.monotonic()
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=RUN_LIMIT, env=env or CLI_ENV, check=False)  # fmt: skip
    took = time.monotonic() - t0
    if res.returncode != 0:
        tail = (res.stderr.strip() or res.stdout.strip()).splitlines()[-3:]
        raise RuntimeError(f"{os.path.basename(argv[0])} exited {res.returncode}: "
                           f"{one_line(' | '.join(tail), 400)}")  # fmt: skip
    return took, res.stdout


# --- the gate's targets ----------------------------------------------------------------------


def wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answers at {url}")
        time.sleep(0.1)


@contextlib.contextmanager
def http_servers(lab: Any, root: str) -> Iterator[dict[str, str]]:
    """An HTTP server inside every host, bound to its address; yields host -> URL."""
    docs = os.path.join(root, "www")
    os.makedirs(docs, exist_ok=True)
    with open(os.path.join(docs, "index.html"), "w") as f:
        f.write("ok\n")
    with contextlib.ExitStack() as stack:
        urls = {}
        for host in lab.hosts:
            addr = lab.address(host)
            argv, _env = lab.exec_argv(host, ["python3", "-m", "http.server", str(PORT),
                                              "--bind", addr, "--directory", docs])  # fmt: skip
            stack.enter_context(started(argv, os.path.join(root, f"http-{host}.log")))
            urls[host] = f"http://{addr}:{PORT}/"
        for url in urls.values():
            wait_http(url)
        yield urls


# --- the parts, alone -----------------------------------------------------------------------


def shared_ssh_options() -> list[str]:
    """The options with which heartline's ssh shares one connection per host (cluster/_ssh)."""
    from heartline.cluster._ssh import control_dir

    return ["-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir()}/%C",
            "-o", "ControlPersist=60"]  # fmt: skip


def timed_guarded(argv: list[str]) -> float:
    """Wall seconds of heartline's ssh argv for a command: its stdin a pipe held open until
    ssh exits, as heartline holds it (the remote guard stops the command at EOF)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        rc = proc.wait(RUN_LIMIT)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if rc != 0:
        raise RuntimeError(f"heartline's ssh for `true` exited {rc}")
    return time.monotonic() - t0


def bench_parts(lab: Any, urls: dict[str, str], samples: int) -> dict[str, float]:
    """Medians, in seconds, of the parts alone, each sample cycling over the hosts:
    ``ssh_shared`` `ssh host true` through heartline's shared connection, ``ssh_fresh`` with a
    fresh one, ``http`` one GET of a host's URL from this process (as heartline's gate does
    it); and two of heartline's own steps, for the breakdown: ``guarded`` the command as
    heartline sends it (through its guard, which leaves nothing running on the host when the
    roll stops) and ``resolve`` the `ssh -G` that finds a host's address for the gate's URL."""
    from heartline.cluster._ssh import Ssh

    hl_ssh = Ssh(config=lab.ssh_config)
    ssh = ["ssh", "-F", lab.ssh_config]
    got: dict[str, list[float]] = {
        k: [] for k in ("ssh_shared", "ssh_fresh", "http", "guarded", "resolve")
    }
    for i in range(samples):
        host = lab.hosts[i % len(lab.hosts)]
        got["ssh_shared"].append(timed([*ssh, *shared_ssh_options(), host, "true"])[0])
        got["ssh_fresh"].append(timed([*ssh, "-o", "ControlPath=none", host, "true"])[0])
        got["guarded"].append(timed_guarded(hl_ssh.command_argv(host, ["true"])))
        got["resolve"].append(timed([*ssh, "-G", host])[0])
        t0 = time.monotonic()
        with urllib.request.urlopen(urls[host], timeout=5) as resp:
            resp.read()
        got["http"].append(time.monotonic() - t0)
    out = {k: median(v) for k, v in got.items()}
    out["ssh_fresh_p10"] = pct(got["ssh_fresh"], 10)
    out["ssh_fresh_p90"] = pct(got["ssh_fresh"], 90)
    return out


# --- heartline --------------------------------------------------------------------------------


def fresh_config(lab: Any, root: str) -> str:
    """The lab's controller config, with sharing of ssh connections turned off."""
    path = os.path.join(root, "fresh.toml")
    with open(lab.config) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("[cluster]\n", '[cluster]\nssh_options = ["ControlPath=none"]\n', 1))
    return path


def heartline_roll(config: str) -> tuple[float, list[dict[str, Any]]]:
    argv = [HEARTLINE_BIN, "-c", config, "rolling", "--group", "lab", "--json",
            "--check", f"http://{{host}}:{PORT}/", "--healthy", "1", "--", "true"]  # fmt: skip
    took, out = timed(argv)
    return took, [json.loads(line) for line in out.splitlines() if line.strip()]


def phases(total: float, events: list[dict[str, Any]]) -> dict[str, float]:
    """Where one roll's time went, from its events (their ``elapsed`` counts from the roll's
    start inside the process): before the roll began and after it finished (the process's
    start, imports, config, and its exit), taking the lock and starting, the inside of a host
    (command + gate) and between two hosts (the progress kept)."""
    at: dict[tuple[str, str | None], float] = {}
    for e in events:
        at.setdefault((e["event"], e.get("host")), e["elapsed"])
    hosts = [e["host"] for e in events if e["event"] == "host started"]
    inside = [at[("host done", h)] - at[("host started", h)] for h in hosts]
    between = [at[("host started", b)] - at[("host done", a)] for a, b in itertools.pairwise(hosts)]
    return {
        "outside": total - at[("finished", None)],
        "lock": at[("host started", hosts[0])],
        "inside": sum(inside) / len(inside),
        "between": sum(between) / len(between) if between else 0.0,
        "after_last": at[("finished", None)] - at[("host done", hosts[-1])],
    }


# --- ansible ----------------------------------------------------------------------------------


def ansible_version() -> str:
    out = subprocess.run([PEERS_PY, "-c", "import ansible.release as r; print(r.__version__)"],
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return out.stdout.strip()


def python_on_hosts(lab: Any) -> bool:
    """Whether every host has a python3 for ansible's modules (else the task is `raw`)."""
    return all(
        subprocess.run(["ssh", "-F", lab.ssh_config, h, "command -v python3"],
                       capture_output=True, timeout=30, check=False).returncode == 0
        for h in lab.hosts
    )  # fmt: skip


def ansible_files(lab: Any, root: str, module: str) -> dict[str, str]:
    """ansible.cfg, the inventory and the playbook under ``root``; the environment that uses
    them (every file ansible writes under ``root`` too)."""
    for d in ("cp", "home", "local", "remote"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    cfg = os.path.join(root, "ansible.cfg")
    with open(cfg, "w") as f:
        f.write(textwrap.dedent(f"""\
            [defaults]
            inventory = {root}/inventory.ini
            home = {root}/home
            local_tmp = {root}/local
            remote_tmp = {root}/remote
            interpreter_python = /usr/bin/python3
            retry_files_enabled = False
            nocolor = True

            [ssh_connection]
            control_path_dir = {root}/cp
            """))  # fmt: skip
    with open(os.path.join(root, "inventory.ini"), "w") as f:
        f.write("[lab]\n")
        for h in lab.hosts:
            f.write(f"{h} addr={lab.address(h)}\n")
        f.write(f"\n[lab:vars]\nansible_ssh_common_args='-F {lab.ssh_config}'\n")
    with open(os.path.join(root, "roll.yml"), "w") as f:
        f.write(textwrap.dedent(f"""\
            - name: roll
              hosts: lab
              serial: 1
              gather_facts: false
              max_fail_percentage: 0
              tasks:
                - name: the command
                  ansible.builtin.{module}: "true"
                - name: the health gate
                  ansible.builtin.uri:
                    url: "http://{{{{ addr }}}}:{PORT}/"
                  delegate_to: localhost
                  register: gate
                  until: gate.status == 200
                  retries: 60
                  delay: 1
            """))  # fmt: skip
    env = {k: v for k, v in CLI_ENV.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_CONFIG"] = cfg
    return env


#: ansible's variants: the environment each adds to ansible's own defaults.
ANSIBLE_VARIANTS = {
    "default": {},
    "pipelining": {"ANSIBLE_PIPELINING": "True"},
    "fresh": {"ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o ControlPath=none"},
}


def ansible_roll(root: str, env: dict[str, str], extra: dict[str, str]) -> float:
    return timed([ANSIBLE_PLAYBOOK, os.path.join(root, "roll.yml")], {**env, **extra})[0]


def close_ansible_masters(root: str) -> None:
    """End the persistent ssh connections ansible left (ControlPersist), by their sockets."""
    cp = os.path.join(root, "cp")
    for name in os.listdir(cp) if os.path.isdir(cp) else []:
        subprocess.run(["ssh", "-o", f"ControlPath={os.path.join(cp, name)}", "-O", "exit",
                        "lab"], capture_output=True, timeout=10, check=False)  # fmt: skip


# --- the run ----------------------------------------------------------------------------------


def summary(totals: list[float], per_host_floor: float) -> dict[str, Any]:
    """Totals and overheads per host (ms): p50 and max over the runs."""
    over = [(t - HOSTS * per_host_floor) / HOSTS for t in totals]
    return {
        "runs": len(totals),
        "total_p50_ms": round(1000 * pct(totals, 50), 1),
        "total_max_ms": round(1000 * max(totals), 1),
        "overhead_p50_ms": round(1000 * pct(over, 50), 1),
        "overhead_max_ms": round(1000 * max(over), 1),
    }


def bench(runs: int, part_samples: int) -> dict[str, Any]:
    from heartline.testing import lab_hosts, lab_unavailable

    why = lab_unavailable()
    if why is not None:
        return {"skipped": why}
    ansible_err = None
    try:
        install_peers([ANSIBLE], probe="import ansible.release as r; "
                      f"assert r.__version__ == {ANSIBLE.split('==')[1]!r}")  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        ansible_err = f"ansible-core install failed: {one_line(e, 100)}"
    root = tempfile.mkdtemp(prefix="hl-roll-", dir="/tmp")  # short: ssh control sockets
    res: dict[str, Any] = {"hosts": HOSTS, "runs": runs}
    try:
        with lab_hosts(HOSTS) as lab, http_servers(lab, root) as urls:
            log(f"lab up: {', '.join(lab.hosts)}; gate servers on port {PORT}")
            res.update(bench_heartline(lab, urls, root, runs, part_samples))
            if ansible_err is None:
                try:
                    res["ansible"] = bench_ansible(lab, root, runs, res["parts"])
                finally:
                    close_ansible_masters(root)
            else:
                res["ansible"] = {"error": ansible_err}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return res


def bench_heartline(
    lab: Any, urls: dict[str, str], root: str, runs: int, part_samples: int
) -> dict[str, Any]:
    # Cold: no shared connection open yet (and the byte code written).
    cold, _ = heartline_roll(lab.config)
    parts = bench_parts(lab, urls, part_samples)
    log("parts (ms): " + ", ".join(f"{k} {1000 * v:.1f}" for k, v in parts.items()))
    shared, fresh, split = [], [], []
    for _ in range(runs):
        took, events = heartline_roll(lab.config)
        shared.append(took)
        split.append(phases(took, events))
    fresh_cfg = fresh_config(lab, root)
    for _ in range(runs):
        fresh.append(heartline_roll(fresh_cfg)[0])
    floor_shared = parts["ssh_shared"] + parts["http"]
    floor_fresh = parts["ssh_fresh"] + parts["http"]
    out = {
        "parts": {k: round(1000 * v, 2) for k, v in parts.items()},
        "heartline": {
            "shared": summary(shared, floor_shared),
            "fresh": summary(fresh, floor_fresh),
            "cold_ms": round(1000 * cold, 1),
            "phases_ms": {k: round(1000 * median([s[k] for s in split]), 1) for k in split[0]},
        },
    }
    log(f"heartline: {json.dumps(out['heartline'])}")
    return out


def bench_ansible(lab: Any, root: str, runs: int, parts: dict[str, float]) -> dict[str, Any]:
    module = "command" if python_on_hosts(lab) else "raw"
    env = ansible_files(lab, root, module)
    floor_shared = (parts["ssh_shared"] + parts["http"]) / 1000
    floor_fresh = (parts["ssh_fresh"] + parts["http"]) / 1000
    cold = ansible_roll(root, env, {})  # opens ansible's persistent connections
    out: dict[str, Any] = {"version": ansible_version(), "module": module,
                           "cold_ms": round(1000 * cold, 1)}  # fmt: skip
    for name, extra in ANSIBLE_VARIANTS.items():
        totals = [ansible_roll(root, env, extra) for _ in range(runs)]
        out[name] = summary(totals, floor_fresh if name == "fresh" else floor_shared)
        log(f"ansible {name}: {json.dumps(out[name])}")
    return out


# --- RESULTS.md -------------------------------------------------------------------------------


def render(results: dict[str, Any]) -> str:
    lines = ["## 11. Rolling operations on lab hosts", ""]
    if "skipped" in results:
        return section_text(SECTION, [*lines, f"Not run: {results['skipped']}.", ""])
    parts, hl, an = results["parts"], results["heartline"], results["ansible"]
    n = results["runs"]
    lines += [
        f"{HOSTS} lab hosts on this machine ({results['when']}), each running a "
        f"`python3 -m http.server` on its own address as the health gate's target. One roll: "
        f"the no-op command `true` on each host in turn, then one GET of "
        f"`http://HOST:{PORT}/` that must pass before the next host starts. Wall time of the "
        f"whole roll from this machine, {n} runs per row after an untimed first run (the "
        "cold figures below).",
        "",
        "The parts alone (medians): the command over ssh through a shared connection "
        f"{parts['ssh_shared']:.1f} ms, over a fresh connection {parts['ssh_fresh']:.1f} ms; "
        f"one GET of a host's URL {parts['http']:.1f} ms. **Overhead per host** = (wall time "
        f"- {HOSTS} x (command + GET)) / {HOSTS}: with the shared-connection figure for the "
        "rows that keep connections open, with the fresh one for the others. It includes each "
        f"tool's start-up, spread over the {HOSTS} hosts.",
        "",
        "| tool | roll, p50 | roll, max | overhead per host, p50 | overhead per host, max |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]

    def row(label: str, s: dict[str, Any]) -> str:
        return (f"| {label} | {s['total_p50_ms']:.0f} ms | {s['total_max_ms']:.0f} ms | "
                f"{s['overhead_p50_ms']:.1f} ms | {s['overhead_max_ms']:.1f} ms |")  # fmt: skip

    lines.append(row("**heartline rolling**, shared ssh connections (its default)", hl["shared"]))
    lines.append(row("heartline rolling, a fresh connection each time", hl["fresh"]))
    if "error" in an:
        lines.append(f"| ansible-playbook | {an['error']} | | | |")
    else:
        lines += [
            row("**ansible-playbook** `serial: 1`, its defaults (ControlPersist=60s)",
                an["default"]),
            row("ansible-playbook, ControlPersist and `pipelining = True`", an["pipelining"]),
            row("ansible-playbook, a fresh connection each time", an["fresh"]),
        ]  # fmt: skip
    h_over = hl["shared"]["overhead_p50_ms"]
    verdict = "met" if hl["shared"]["overhead_p50_ms"] <= GOAL_MS else "missed"
    lines += [
        "",
        f"Goal <= {GOAL_MS:g} ms overhead per host (heartline, shared connections, p50): "
        f"**{verdict}** ({h_over:.1f} ms; max over the runs {hl['shared']['overhead_max_ms']:.1f}"
        " ms).",
    ]
    if "error" not in an:
        a_over = an["default"]["overhead_p50_ms"]
        lines += [
            "",
            f"ansible-playbook with its defaults: {a_over:.0f} ms overhead per host, "
            f"**{a_over / h_over:.1f} x** heartline's; a whole roll takes "
            f"{an['default']['total_p50_ms'] / hl['shared']['total_p50_ms']:.1f} x as long. "
            f"With pipelining {an['pipelining']['overhead_p50_ms']:.0f} ms "
            f"({an['pipelining']['overhead_p50_ms'] / h_over:.1f} x). With a fresh connection "
            f"each time on both sides, a roll takes {an['fresh']['total_p50_ms']:.0f} ms "
            f"against heartline's {hl['fresh']['total_p50_ms']:.0f} ms "
            f"({an['fresh']['total_p50_ms'] / hl['fresh']['total_p50_ms']:.1f} x).",
        ]
    ph = hl["phases_ms"]
    guard = parts["guarded"] - parts["ssh_shared"]
    lines += [
        "",
        "First runs, no connection open yet: heartline "
        f"{hl['cold_ms']:.0f} ms"
        + ("" if "error" in an else f", ansible-playbook {an['cold_ms']:.0f} ms")
        + ". "
        f"A fresh ssh connection here varies widely (p10 {parts['ssh_fresh_p10']:.0f} ms, p90 "
        f"{parts['ssh_fresh_p90']:.0f} ms), which swamps the overhead of the fresh-connection "
        "rows: read them as totals.",
        "",
        "Where heartline's time goes (medians of its shared-connection runs, from its "
        "`--json` events):",
        "",
        "| part of one roll | ms |",
        "| --- | ---: |",
        f"| the process's start, imports and exit (outside the roll) | {ph['outside']:.0f} |",
        f"| taking the lock, starting the roll | {ph['lock']:.0f} |",
        f"| one host: command and gate | {ph['inside']:.1f} |",
        f"| &nbsp; the parts alone (ssh `true` shared + one GET) | "
        f"{parts['ssh_shared'] + parts['http']:.1f} |",
        f"| &nbsp; of the rest: the remote guard around the command (`true` through it, "
        f"minus a plain `ssh host true`) | {guard:.1f} |",
        f"| &nbsp; of the rest: `ssh -G host`, run to find the host's address for the URL | "
        f"{parts['resolve']:.1f} |",
        f"| between two hosts (the roll's progress kept in the backend) | {ph['between']:.1f} |",
        f"| after the last host (the progress removed) | {ph['after_last']:.1f} |",
        "",
        f"Spread over {HOSTS} hosts, the fixed part (start, lock, exit) alone is "
        f"{(ph['outside'] + ph['lock']) / HOSTS:.0f} ms a host. Load average (1/5/15 min) at "
        f"the start: {results['load'][0]}; at the end: {results['load'][1]}. The machine is "
        "not isolated: other work on it shows up as noise.",
        "",
    ]
    if "error" not in an:
        lines += [
            f"ansible-core {an['version']} (in benchmarks/.venv-peers): an inventory of the "
            f"same hosts with `ansible_ssh_common_args='-F ssh_config'` and "
            "`interpreter_python = /usr/bin/python3` (no interpreter discovery); the play has "
            f"`serial: 1`, `gather_facts: false`, `max_fail_percentage: 0`, an "
            f"`ansible.builtin.{an['module']}: true` task and an `ansible.builtin.uri` task "
            "delegated to localhost (`until` status 200, 60 retries 1 s apart, which passes at "
            "once here). Its `command` module goes over ssh as a Python module (copied, run, "
            "removed: several ssh round trips a task without pipelining, one with it), and "
            "the `uri` check starts a local Python for each host.",
            "",
        ]
    return section_text(SECTION, lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 runs per row instead of 5")
    ap.add_argument("--no-write", action="store_true", help="print the section instead")
    args = ap.parse_args()
    runs = 2 if args.quick else 5
    measure_and_publish(SECTION, lambda: bench(runs, 8 if args.quick else 20), render,
                        RESULTS_JSON, print_only=args.no_write, log=log)  # fmt: skip
    return 0


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.exit(main())
