"""A lab's files: its state file (``lab.json``), names and addresses, and the text of every
file it writes (ssh and sshd configs, known_hosts, the daemons' and the controller's configs).

The state file is the lab's memory: written (atomically) before each namespace, link or
process is made, so ``heartline lab down`` can undo a lab whose ``up`` or keeper was killed
half-way. Everything in it is checked when read: the names of links and namespaces must be
the ones the lab's id gives, so that a hand-edited file can never make ``down`` delete a link
or a namespace the lab did not make.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from heartline._util import TlsFiles, toml_key, toml_value
from heartline.errors import LabError, LabNotFound

STATE = "lab.json"
#: Every name a lab makes at the top of its directory (``hosts`` holds one directory a host).
TOP_FILES = (
    "heartline.toml", "token", "id_ed25519", "id_ed25519.pub", "authorized_keys",
    "ssh_config", "known_hosts", "keeper.log", "hosts", "lockd", "etcd", "tls",
)  # fmt: skip
#: Hosts a lab may have (addresses .11 to .74 of its /24).
LAB_MAX_HOSTS = 64
#: The lab network: RFC 2544's benchmarking range, never routed on the Internet. A lab takes
#: one /24 of it (a "slot", 0 to 511).
LAB_NET = "198.18.0.0/15"
SLOTS = 512
#: What a lab's keeper can be: the lab's lockd (with a token), or an etcd (TLS, with client
#: certificates, as production etcd clusters run).
BACKENDS = ("lockd", "etcd")
KEEPER_PORT = 7717
#: The etcd keeper's client port on the gateway, and its peer port (on a loopback address
#: of the lab's own, 127.X.Y.1 for the lab's 198.X.Y.0/24: no other lab's etcd is there).
ETCD_PORT = 2379
ETCD_PEER_PORT = 2380
_ID = re.compile(r"^[0-9a-f]{6}$")
_FORMAT = 1


def default_lab_dir() -> str:
    """``$HEARTLINE_LAB_DIR``; else ``/run/heartline-lab`` for root, or
    ``$XDG_RUNTIME_DIR/heartline-lab`` (``/tmp/heartline-lab-UID``) for another user."""
    env = os.environ.get("HEARTLINE_LAB_DIR")
    if env:
        return env
    if os.geteuid() == 0:
        return "/run/heartline-lab"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return f"{xdg}/heartline-lab" if xdg else f"/tmp/heartline-lab-{os.geteuid()}"


def host_name(index: int) -> str:
    return f"lab{index}"


def slot_prefix(slot: int) -> str:
    """The first three octets of the ``slot``-th /24 of the lab network."""
    return f"198.{18 + slot // 256}.{slot % 256}"


@dataclass
class HostRecord:
    name: str
    index: int
    address: str
    netns: str
    #: The link's end in the root namespace (the host's end is its ``eth0``).
    link: str
    #: pid 1 of the host's pid namespace, as the root namespace sees it, and its start time.
    init_pid: int | None = None
    init_start: int | None = None
    #: ``unshare``, which waits for it in the root pid namespace.
    wrapper_pid: int | None = None
    wrapper_start: int | None = None


@dataclass
class LabState:
    id: str
    dir: str
    made_dir: bool
    slot: int
    #: "starting" (``up`` under way or killed), "up", "stopping" (``down`` under way or killed)
    phase: str = "starting"
    hosts: list[HostRecord] = field(default_factory=list)
    keeper_pid: int | None = None
    keeper_start: int | None = None
    #: What the keeper is (one of BACKENDS).
    backend_kind: str = "lockd"

    # --- names and addresses, all from the id and the slot ---------------------------------
    @property
    def bridge(self) -> str:
        return f"hl{self.id}"

    @property
    def tag(self) -> str:
        """The value of ``HEARTLINE_LAB`` in every process the lab starts."""
        return f"{self.id}:{self.dir}"

    @property
    def network(self) -> str:
        return f"{slot_prefix(self.slot)}.0/24"

    @property
    def gateway(self) -> str:
        return f"{slot_prefix(self.slot)}.1"

    @property
    def backend(self) -> str:
        """The keeper's URL, as the hosts' and the controller's ``[cluster]`` name it."""
        if self.backend_kind == "etcd":
            return f"etcds://{self.gateway}:{ETCD_PORT}"
        return f"heartline://{self.gateway}:{KEEPER_PORT}"

    @property
    def etcd_peer(self) -> str:
        """The etcd keeper's peer address: loopback, the lab's own."""
        return "127." + slot_prefix(self.slot).split(".", 1)[1] + ".1"

    def plan_hosts(self, n: int) -> None:
        self.hosts = [
            HostRecord(
                name=host_name(i),
                index=i,
                address=f"{slot_prefix(self.slot)}.{10 + i}",
                netns=f"hl{self.id}-{host_name(i)}",
                link=f"hl{self.id}-{i}",
            )
            for i in range(1, n + 1)
        ]

    def host(self, name: str) -> HostRecord:
        for h in self.hosts:
            if h.name == name:
                return h
        names = ", ".join(h.name for h in self.hosts) or "none"
        raise LabNotFound(f"no host {name!r} in the lab in {self.dir} (its hosts: {names})")

    # --- paths ------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def host_path(self, name: str, *parts: str) -> str:
        return os.path.join(self.dir, "hosts", name, *parts)

    # --- the file ---------------------------------------------------------------------------
    def save(self) -> None:
        from heartline._util import atomic_write

        data = {"v": _FORMAT, **asdict(self)}
        atomic_write(self.path(STATE), (json.dumps(data, indent=1) + "\n").encode(), fsync=False)


def load_state(lab_dir: str) -> LabState:
    """The lab recorded in ``lab_dir``; LabNotFound when there is none, LabError when the file
    is not a lab's state (it is then left alone, and so is everything it names)."""
    path = os.path.join(lab_dir, STATE)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError):
        raise LabNotFound(
            f"no lab in {lab_dir} (no {STATE} there): start one with "
            f"`heartline lab up N --dir {lab_dir}`, or name its directory with --dir"
        ) from None
    except OSError as e:
        raise LabError(f"cannot read {path}: {e.strerror}") from None
    try:
        return _parse(json.loads(raw), os.path.realpath(lab_dir))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise LabError(
            f"{path} is not a lab's state file ({e}): nothing was touched; remove what the "
            "lab made by hand (ip netns list, ip link) and then the file"
        ) from None


def _parse(data: dict[str, Any], real_dir: str) -> LabState:
    if data.get("v") != _FORMAT:
        raise ValueError(f"format {data.get('v')!r}, expected {_FORMAT}")

    def num(v: object, *, none: bool = True) -> int | None:
        if v is None and none:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{v!r} is not a number")
        return v

    lab_id = data["id"]
    if not isinstance(lab_id, str) or not _ID.fullmatch(lab_id):
        raise ValueError(f"bad id {lab_id!r}")
    if data["dir"] != real_dir:
        raise ValueError(f"it names {data['dir']!r}, not this directory")
    slot = num(data["slot"], none=False)
    assert slot is not None
    if slot >= SLOTS or data["phase"] not in ("starting", "up", "stopping"):
        raise ValueError("bad slot or phase")
    kind = data.get("backend_kind", "lockd")  # a lab made before etcd keepers: lockd
    if kind not in BACKENDS:
        raise ValueError(f"bad backend {kind!r}")
    state = LabState(
        id=lab_id, dir=real_dir, made_dir=bool(data["made_dir"]), slot=slot, phase=data["phase"],
        keeper_pid=num(data["keeper_pid"]), keeper_start=num(data["keeper_start"]),
        backend_kind=kind,
    )  # fmt: skip
    hosts = data["hosts"]
    if not isinstance(hosts, list) or len(hosts) > LAB_MAX_HOSTS:
        raise ValueError("bad host list")
    state.plan_hosts(len(hosts))
    for want, got in zip(state.hosts, hosts, strict=True):
        for key in ("name", "index", "address", "netns", "link"):
            if got[key] != getattr(want, key):
                raise ValueError(f"host {want.name}: {key} {got[key]!r} is not the lab's")
        for key in ("init_pid", "init_start", "wrapper_pid", "wrapper_start"):
            setattr(want, key, num(got[key]))
    return state


# --- file texts -------------------------------------------------------------------------------
def ssh_config_text(state: LabState) -> str:
    out = [f"# heartline lab {state.id}: `ssh -F {state.path('ssh_config')} lab1`\n"]
    for h in state.hosts:
        out.append(
            f"Host {h.name}\n"
            f"    HostName {h.address}\n"
            "    User root\n"
            f"    IdentityFile {state.path('id_ed25519')}\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {state.path('known_hosts')}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
            "    ConnectTimeout 5\n"
            "    LogLevel ERROR\n"
        )
    return "".join(out)


def known_hosts_text(state: LabState, host_keys: dict[str, str]) -> str:
    """``host_keys``: host name -> its public key line (``ssh-ed25519 AAAA... comment``)."""
    lines = []
    for h in state.hosts:
        kind, blob = host_keys[h.name].split()[:2]
        lines.append(f"{h.name},{h.address} {kind} {blob}\n")
    return "".join(lines)


def sshd_config_text(state: LabState, h: HostRecord) -> str:
    return (
        f"# sshd of lab host {h.name} (heartline lab {state.id})\n"
        "ListenAddress 0.0.0.0\n"
        "Port 22\n"
        f"HostKey {state.host_path(h.name, 'ssh_host_ed25519_key')}\n"
        "PidFile none\n"
        f"AuthorizedKeysFile {state.path('authorized_keys')}\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "PrintMotd no\n"
        "MaxStartups 100:30:200\n"
        f"SetEnv HEARTLINE_CONFIG={state.host_path(h.name, 'heartline.toml')}\n"
    )


def cluster_text(state: LabState, *, name: str | None = None) -> str:
    """The ``[cluster]`` section every lab host's daemon and the controller share."""
    names = [h.name for h in state.hosts]
    out = ["[cluster]\n", f"backend = {toml_value(state.backend)}\n"]
    if state.backend_kind == "etcd":
        tls = lab_tls_files(state)
        out += [f"ca_file = {toml_value(tls.ca)}\n",
                f"cert_file = {toml_value(tls.client_cert)}\n",
                f"key_file = {toml_value(tls.client_key)}\n"]  # fmt: skip
    else:
        out.append(f"token_file = {toml_value(state.path('token'))}\n")
    out.append(f"ssh_config = {toml_value(state.path('ssh_config'))}\n")
    if name:
        out.append(f"name = {toml_value(name)}\n")
    out.append(f"\n[cluster.groups]\nlab = {toml_value(names)}\n")
    for h in state.hosts:
        out.append(f"\n[cluster.hosts.{h.name}]\naddress = {toml_value(h.name)}\n")
    return "".join(out)


def lab_tls_files(state: LabState) -> TlsFiles:
    """Where the etcd keeper's CA, server and client certificates and keys are."""
    return TlsFiles.in_dir(state.path("tls"))


def controller_config_text(state: LabState) -> str:
    return (
        f"# The controller's config for heartline lab {state.id} (hosts {state.hosts[0].name}"
        f"..{state.hosts[-1].name} on {state.network}):\n"
        f"#   heartline -c {state.path('heartline.toml')} hosts\n\n" + cluster_text(state)
    )


def host_config_text(state: LabState, h: HostRecord, extra: dict[str, Any]) -> str:
    """The daemon config of host ``h``: its own run and log directories, the lab's
    ``[cluster]`` with its name, and ``extra``'s ``[defaults]`` and ``[programs.*]``."""
    out = [
        f"# The daemon of lab host {h.name} (heartline lab {state.id})\n",
        "[daemon]\n",
        f"run_dir = {toml_value(state.host_path(h.name, 'run'))}\n",
        f"log_dir = {toml_value(state.host_path(h.name, 'log'))}\n\n",
        cluster_text(state, name=h.name),
    ]
    if extra.get("defaults"):
        out.append("\n[defaults]\n")
        out += [f"{toml_key(k)} = {toml_value(v)}\n" for k, v in extra["defaults"].items()]
    for prog, table in extra.get("programs", {}).items():
        out.append(f"\n[programs.{toml_key(prog)}]\n")
        out += [f"{toml_key(k)} = {toml_value(v)}\n" for k, v in table.items()]
    return "".join(out)


def programs_of(path: str) -> dict[str, Any]:
    """``[defaults]`` and ``[programs]`` of the config ``path`` (checked by the loader first:
    a bad file is its one-line ConfigError), with relative ``cwd`` made absolute, and the
    file's directory (``dir``: the hosts' daemons run there)."""
    import tomllib

    from heartline.config import load_config, parse_config

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        data = tomllib.loads(text)
    except (OSError, ValueError):
        load_config(path)  # raises the loader's own one-line error
        raise
    if "cluster" in data:
        load_config(path)
    else:
        # Checked as the hosts' daemons will read it: with the lab's [cluster] (which a
        # singleton needs), which the file itself may leave out.
        parse_config(text + "\n[cluster]\n", path=path)
    base = os.path.dirname(os.path.abspath(path))
    out: dict[str, Any] = {"defaults": dict(data.get("defaults", {})), "programs": {}, "dir": base}
    for name, table in data.get("programs", {}).items():
        out["programs"][name] = dict(table)
    for table in (out["defaults"], *out["programs"].values()):
        if isinstance(table.get("cwd"), str):
            table["cwd"] = os.path.normpath(os.path.join(base, os.path.expanduser(table["cwd"])))
    return out
