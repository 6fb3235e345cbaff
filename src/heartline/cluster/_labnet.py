"""A lab's network and processes, as the kernel sees them: the bridge, each host's network
namespace and link (``ip``), and finding and ending every process the lab started.

The lab network never leads out: the bridge carries the lab's /24 and the gateway address
(where the keeper's lockd listens) and nothing else; forwarding is off on the bridge itself
(``net.ipv4.conf.BRIDGE.forwarding = 0``: the kernel forwards nothing that comes in there,
whatever ``ip_forward`` says, which is left alone), a host gets its address and its subnet's
route only (no default route), and there is no NAT. IPv6 is off on every lab link.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator

from heartline._util import read_stat
from heartline.cluster._labfiles import LAB_NET, SLOTS, HostRecord, LabState
from heartline.errors import LabError

#: Bound while a lab picks its subnet and claims it on its bridge (an abstract socket: it
#: goes away with the process that holds it, even after SIGKILL).
_NET_LOCK = "\0heartline-lab-net"


def ip(*args: str, step: str, missing_ok: bool = False) -> str:
    """Run ``ip ARGS``; LabError naming ``step`` and ip's own words when it fails."""
    try:
        res = subprocess.run(
            ["ip", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=30, check=False,
        )  # fmt: skip
    except OSError as e:
        raise LabError(f"{step}: cannot run ip: {e.strerror} (install iproute2)") from None
    if res.returncode != 0:
        err = res.stderr.strip()
        said = err.splitlines()[-1] if err else f"exit {res.returncode}"
        gone = ("Cannot find device", "No such device", "No such file", "does not exist",
                'Invalid "netns"')  # fmt: skip
        if missing_ok and any(m in said for m in gone):
            return ""
        raise LabError(f"{step}: ip {' '.join(args)}: {said}")
    return res.stdout


def _sysctl(path: str, value: str) -> None:
    with contextlib.suppress(FileNotFoundError), open(path, "w") as f:
        f.write(value)


@contextlib.contextmanager
def net_lock(timeout: float = 30.0) -> Iterator[None]:
    """One lab at a time picks a subnet (two ``lab up`` at once must not pick the same)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                sock.bind(_NET_LOCK)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise LabError(
                        "up: another `heartline lab up` is choosing its network for more than "
                        f"{timeout:g}s; try again"
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        sock.close()


def used_slots() -> set[int]:
    """The lab /24s that addresses of this namespace already fall in (other labs' gateways,
    or anything else on 198.18.0.0/15)."""
    import ipaddress

    lab_net = ipaddress.ip_network(LAB_NET)
    used: set[int] = set()
    shown = ip("-4", "-o", "addr", "show", step="up: reading the addresses in use")
    for line in shown.splitlines():
        words = line.split()
        if "inet" in words:
            iface = ipaddress.ip_interface(words[words.index("inet") + 1])
            if iface.network.overlaps(lab_net):
                first = max(int(iface.network.network_address), int(lab_net.network_address))
                last = min(int(iface.network.broadcast_address), int(lab_net.broadcast_address))
                base = int(lab_net.network_address)
                used.update(range((first - base) >> 8, ((last - base) >> 8) + 1))
    return used


def free_slot() -> int:
    free = sorted(set(range(SLOTS)) - used_slots())
    if not free:
        raise LabError("up: every /24 of 198.18.0.0/15 is in use here: take a lab down first")
    return random.choice(free)  # noqa: S311 - spreads labs, no secret


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def link_up(name: str) -> bool | None:
    """Whether the link is administratively up (None when it is gone)."""
    try:
        with open(f"/sys/class/net/{name}/flags") as f:
            return bool(int(f.read(), 16) & 1)
    except (OSError, ValueError):
        return None


def make_bridge(state: LabState) -> None:
    br = state.bridge
    ip("link", "add", "name", br, "type", "bridge", "forward_delay", "0", step="up: the bridge")
    _sysctl(f"/proc/sys/net/ipv4/conf/{br}/forwarding", "0")
    _sysctl(f"/proc/sys/net/ipv6/conf/{br}/disable_ipv6", "1")
    ip("addr", "add", f"{state.gateway}/24", "dev", br, step="up: the bridge's address")
    ip("link", "set", br, "up", step="up: the bridge")


def make_netns(h: HostRecord) -> None:
    ip("netns", "add", h.netns, step=f"up: {h.name}'s network namespace")


def make_link(state: LabState, h: HostRecord) -> None:
    """A veth pair: ``h.link`` on the bridge here, ``eth0`` with the host's address there."""
    step = f"up: {h.name}'s link"
    ip("link", "add", h.link, "type", "veth", "peer", "name", "eth0", "netns", h.netns, step=step)
    _sysctl(f"/proc/sys/net/ipv6/conf/{h.link}/disable_ipv6", "1")
    ip("link", "set", h.link, "master", state.bridge, "up", step=step)
    ip("-n", h.netns, "addr", "add", f"{h.address}/24", "dev", "eth0", step=step)
    ip("-n", h.netns, "link", "set", "eth0", "up", step=step)
    ip("-n", h.netns, "link", "set", "lo", "up", step=step)


def set_link(h: HostRecord, up: bool, *, step: str) -> None:
    ip("link", "set", h.link, "up" if up else "down", step=step)


def remove_network(state: LabState) -> list[str]:
    """Delete the hosts' namespaces and links and the bridge; what could not be deleted."""
    failed = []
    for h in state.hosts:
        for args in (("netns", "del", h.netns), ("link", "del", h.link)):
            try:
                ip(*args, step=f"down: {h.name}", missing_ok=True)
            except LabError as e:
                failed.append(str(e))
    try:
        ip("link", "del", state.bridge, step="down: the bridge", missing_ok=True)
    except LabError as e:
        failed.append(str(e))
    return failed


def netns_names() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except OSError:
        return set()


# --- processes -------------------------------------------------------------------------------
def same(pid: int | None, start: int | None) -> bool:
    """Whether ``pid`` is still the live process that started at ``start`` (not a zombie, not
    a recycled pid)."""
    if pid is None or start is None:
        return False
    info = read_stat(pid)
    return info is not None and info.state != "Z" and info.start_time == start


def ns_pids(netns: Iterable[str]) -> set[int]:
    """Processes of the root pid namespace's view that live in one of the ``netns``."""
    wanted = set()
    for name in netns:
        with contextlib.suppress(OSError):
            st = os.stat(f"/run/netns/{name}")
            wanted.add((st.st_dev, st.st_ino))
    if not wanted:
        return set()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in wanted:
                found.add(int(entry))
    return found


def tagged_pids(tag: str) -> set[int]:
    """Processes whose environment holds ``HEARTLINE_LAB=tag`` (everything the lab started)."""
    needle = f"HEARTLINE_LAB={tag}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    env = f.read()
            except OSError:
                continue
            if needle in env.split(b"\0"):
                found.add(int(entry))
    return found


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def kill(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until every one of ``pids`` has ended (each one's pidfd turns readable; a child
    of ours is reaped); those still running after ``timeout``."""
    fds: dict[int, int] = {}
    for pid in set(pids):
        try:
            fds[os.pidfd_open(pid)] = pid
        except OSError:
            continue  # gone already
    deadline = time.monotonic() + timeout
    try:
        while fds:
            ready, _, _ = select.select(list(fds), [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            for fd in ready:
                pid = fds.pop(fd)
                os.close(fd)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
    finally:
        for fd in fds:
            os.close(fd)
    return sorted(fds.values())
