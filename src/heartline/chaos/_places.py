"""Where a fault's commands run: this machine, inside a lab host (all its namespaces, or only
its network namespace), or on a host over ssh. A place turns a command into the argv (and
environment) that runs it there, and is kept in the journal as JSON so that `heartline chaos
undo` can run an undo there after the controller is gone."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from heartline.errors import ChaosErrored

if TYPE_CHECKING:
    from heartline.cluster import Lab

LOCAL = "local"


@dataclass(frozen=True)
class Place:
    #: "local", "lab" (every namespace of a lab host), "labnet" (only its network namespace,
    #: so the command lives on when the host's pid namespace is crashed) or "ssh".
    kind: str = LOCAL
    host: str = ""
    lab_dir: str = ""

    @property
    def label(self) -> str:
        return "this machine" if self.kind == LOCAL else self.host

    @property
    def python(self) -> str:
        """The Python to run there: this one on this machine and in lab hosts (same files)."""
        return "python3" if self.kind == "ssh" else sys.executable

    def heartline(self) -> list[str]:
        return [self.python, "-m", "heartline"] if self.kind != "ssh" else ["heartline"]

    def argv(self, command: list[str]) -> tuple[list[str], dict[str, str] | None]:
        if self.kind == LOCAL:
            return command, None
        if self.kind == "lab":
            return open_lab(self.lab_dir).exec_argv(self.host, command)
        if self.kind == "labnet":
            netns = open_lab(self.lab_dir).state.host(self.host).netns
            return ["ip", "netns", "exec", netns, *command], None
        return [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "--",
            self.host,
            shlex.join(command),
        ], None

    def run(self, command: list[str], *, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        argv, env = self.argv(command)
        try:
            return subprocess.run(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise ChaosErrored(f"{self.label}: command not found: {argv[0]}") from None
        except subprocess.TimeoutExpired:
            raise ChaosErrored(
                f"{self.label}: {shlex.join(command)[:80]} did not finish in {timeout:g}s"
            ) from None

    def root_pid(self, pid: int) -> int | None:
        """For a lab host: the pid this machine's root pid namespace knows ``pid`` (a pid
        inside the host) by, so that a signal goes straight to it rather than through a
        nsenter of its own (which takes milliseconds). None if it is not there."""
        if self.kind != "lab":
            return pid
        init = open_lab(self.lab_dir).state.host(self.host).init_pid
        try:
            ns = os.readlink(f"/proc/{init}/ns/pid")
        except OSError:
            return None
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                    continue
                with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as f:
                    for line in f:
                        if line.startswith("NSpid:"):
                            if int(line.split()[-1]) == pid:
                                return int(entry)
                            break
            except (OSError, ValueError):
                continue
        return None

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "host": self.host, "lab_dir": self.lab_dir}

    @classmethod
    def from_json(cls, d: Any) -> Place:
        if not isinstance(d, dict) or d.get("kind") not in (LOCAL, "lab", "labnet", "ssh"):
            raise ValueError("not a place")
        return cls(
            kind=str(d["kind"]), host=str(d.get("host", "")), lab_dir=str(d.get("lab_dir", ""))
        )


def lab_place(lab_dir: str, host: str, *, net_only: bool = False) -> Place:
    return Place(kind="labnet" if net_only else "lab", host=host, lab_dir=lab_dir)


def open_lab(lab_dir: str) -> Lab:
    """The lab in ``lab_dir`` as its state file says now (hosts' pids change as they crash
    and boot, so it is read afresh each time)."""
    from heartline.cluster import Lab
    from heartline.errors import HeartlineError

    try:
        return Lab.open(lab_dir)
    except HeartlineError as e:
        raise ChaosErrored(f"lab {lab_dir}: {e}") from None


def default_socket() -> str:
    """The control socket of this machine's daemon, as every other command finds it."""
    from heartline.config import default_config_path, socket_from_config

    return os.environ.get("HEARTLINE_SOCKET") or socket_from_config(default_config_path())


def agent_source() -> str:
    with open(os.path.join(os.path.dirname(__file__), "_agent.py"), encoding="utf-8") as f:
        return f.read()
