"""What the lab's tests share: the CLI, its one-line errors, and what a lab left behind."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

HEARTLINE = [sys.executable, "-m", "heartline"]


def heartline(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (a cold process), its output captured."""
    return subprocess.run(
        [*HEARTLINE, *args], capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    """The error the CLI printed: one line starting with `heartline: `, no traceback."""
    err = res.stderr
    assert err.startswith("heartline: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def leftovers(lab_id: str) -> list[str]:
    """Whatever of lab ``lab_id`` the kernel still has: its network namespaces (`ip netns
    list`), links (`ip link`) and live processes (HEARTLINE_LAB in their environment)."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    found += [f"netns {line.split()[0]}" for line in netns.stdout.splitlines()
              if line.startswith(f"hl{lab_id}")]  # fmt: skip
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    found += [f"link {line.split(':')[1].strip()}" for line in links.stdout.splitlines()
              if line.split(":")[1].strip().startswith(f"hl{lab_id}")]  # fmt: skip
    needle = f"HEARTLINE_LAB={lab_id}:".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if any(item.startswith(needle) for item in env) and alive(int(entry)):
            found.append(f"process {entry}")
    return found


def assert_gone(lab_id: str, lab_dir: Path) -> None:
    assert leftovers(lab_id) == []
    assert not lab_dir.exists() or list(lab_dir.iterdir()) == []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def in_netns(name: str) -> list[int]:
    """Every process in network namespace ``name``."""
    st = Path(f"/run/netns/{name}").stat()
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            ns = Path(f"/proc/{entry}/ns/net").stat()
            if (ns.st_dev, ns.st_ino) == (st.st_dev, st.st_ino) and alive(int(entry)):
                found.append(int(entry))
    return found
