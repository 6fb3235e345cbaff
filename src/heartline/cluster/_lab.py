"""Lab hosts: a cluster on one machine, for tests and demos (``heartline lab``).

Each host is a network namespace with its own address on a private /24 of 198.18.0.0/15,
behind a bridge in the root namespace, and a pid, mount and UTS namespace of its own whose
first process (``_labinit``) runs the host's sshd and heartline daemon. A keeper process in
the root namespace on the bridge's gateway address is the lab's cluster backend: a lockd with
a token, or an etcd with TLS and client certificates (its own CA, made for the lab). What the
kernel sees is made in ``_labnet``, the files in ``_labfiles``.

Undo is the design's centre: the state file names every namespace, link and file before it
is made, and every process the lab starts carries ``HEARTLINE_LAB=<id>:<dir>`` in its
environment (and the hosts' processes live in the lab's network namespaces), so ``down``
finds all of it even when ``up`` or the keeper was SIGKILLed half-way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Self, TypedDict

from heartline._util import ETCD_BINARY, children_of, start_time
from heartline.cluster import _labnet as net
from heartline.cluster._labfiles import (
    BACKENDS,
    ETCD_PEER_PORT,
    ETCD_PORT,
    KEEPER_PORT,
    LAB_MAX_HOSTS,
    STATE,
    TOP_FILES,
    HostRecord,
    LabState,
    controller_config_text,
    default_lab_dir,
    host_config_text,
    known_hosts_text,
    lab_tls_files,
    load_state,
    programs_of,
    ssh_config_text,
    sshd_config_text,
)
from heartline.cluster._labinit import last_line, notify_socket, said_ready
from heartline.errors import LabError, LabNotFound, UsageError

#: What ``crash`` and ``boot`` call the keeper (the lab's lockd or etcd); no host is named so.
BACKEND = "backend"
_INIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_labinit.py")
_SSHD = "/usr/sbin/sshd"
#: Longest name a host's daemon socket may have (a unix socket path is at most 107 bytes).
_SOCKET_TAIL = len("/hosts/lab64/run/heartline.sock")
#: The environment variables of the caller that a lab process must not inherit.
_NOT_PASSED = ("NOTIFY_SOCKET", "HEARTLINE_READY_FD", "HEARTLINE_CONFIG", "HEARTLINE_SOCKET",
               "WATCHDOG_USEC", "WATCHDOG_PID")  # fmt: skip


class HostStatus(TypedDict):
    name: str
    address: str
    #: up | cut (up, its link down) | crashed | starting
    state: str
    link: str
    netns: str
    init_pid: int | None
    sshd_pid: int | None
    daemon_pid: int | None


class LabStatus(TypedDict):
    id: str
    dir: str
    phase: str
    network: str
    gateway: str
    backend: str
    #: lockd | etcd
    backend_kind: str
    config: str
    ssh_config: str
    keeper_pid: int | None
    keeper: str
    hosts: list[HostStatus]


def check_count(n: int) -> int:
    if not 1 <= n <= LAB_MAX_HOSTS:
        raise UsageError(f"lab up: N must be from 1 to {LAB_MAX_HOSTS} hosts, got {n}")
    return n


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise UsageError(f"lab up: the backend is one of {', '.join(BACKENDS)}, not {backend!r}")
    return backend


def lab_unavailable(backend: str = "lockd") -> str | None:
    """Why lab hosts (with ``backend`` as the keeper) cannot be made here (not root, a tool
    missing), or None when they can."""
    if os.geteuid() != 0:
        return "lab hosts need root (they make network namespaces, links and mounts)"
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"),
                          ("nsenter", "util-linux"), ("ssh", "openssh-client"),
                          ("ssh-keygen", "openssh-client")):  # fmt: skip
        if shutil.which(tool) is None:
            return f"lab hosts need {tool}: install {package}"
    if not os.access(_SSHD, os.X_OK):
        return f"lab hosts need {_SSHD}: install openssh-server"
    if backend == "etcd":
        if not os.access(ETCD_BINARY, os.X_OK):
            return f"a lab on etcd needs {ETCD_BINARY}: install etcd-server"
        if shutil.which("openssl") is None:
            return "a lab on etcd needs openssl (for its certificates): install openssl"
    return None


def _lock_dir(lab_dir: str, wait: float) -> int:
    """flock the lab's directory: one lab command at a time works on a lab. The descriptor is
    close-on-exec, so the lock ends with this process however it ends."""
    try:
        fd = os.open(lab_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise LabNotFound(f"no lab in {lab_dir}: {e.strerror}") from None
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LabError(
                    f"another `heartline lab` command is working on {lab_dir}; wait for it "
                    "(or end it) and try again"
                ) from None
            time.sleep(0.01)


def _env(state: LabState, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _NOT_PASSED}
    return {**env, "HEARTLINE_LAB": state.tag, **extra}


def _new_id() -> str:
    """A lab id no lab on this machine has (its bridge and namespaces are named after it)."""
    import secrets

    while True:
        lab_id = secrets.token_hex(3)
        taken = net.link_exists(f"hl{lab_id}") or any(
            n.startswith(f"hl{lab_id}-") for n in net.netns_names()
        )
        if not taken:
            return lab_id


def _children(pid: int | None) -> list[int]:
    return sorted(children_of(pid) or ()) if pid else []


class Lab:
    """A lab: made with :meth:`up`, found again with :meth:`open`, undone with :meth:`down`."""

    def __init__(self, state: LabState) -> None:
        self.state = state
        #: The processes this object started (kept so that they are reaped here, not
        #: garbage-collected while they run; they outlive it when it is a CLI's).
        self._procs: list[subprocess.Popen[bytes]] = []

    # --- finding one -----------------------------------------------------------------------
    @classmethod
    def open(cls, lab_dir: str | None = None) -> Self:
        return cls(load_state(os.path.realpath(lab_dir or default_lab_dir())))

    @property
    def dir(self) -> str:
        return self.state.dir

    @property
    def hosts(self) -> list[str]:
        return [h.name for h in self.state.hosts]

    @property
    def config(self) -> str:
        """The controller's config (its ``[cluster]`` names the lab's backend and hosts)."""
        return self.state.path("heartline.toml")

    @property
    def ssh_config(self) -> str:
        return self.state.path("ssh_config")

    def address(self, name: str) -> str:
        return self.state.host(name).address

    def host_config(self, name: str) -> str:
        """The config of the host's daemon."""
        return self.state.host_path(self.state.host(name).name, "heartline.toml")

    def _reread(self) -> None:
        """The state file is the truth (another process, such as the CLI, may have crashed
        or booted a host since this object last looked)."""
        self.state = load_state(self.dir)

    def _alive(self, h: HostRecord) -> bool:
        return net.same(h.init_pid, h.init_start)

    def _up_host(self, name: str, step: str) -> HostRecord:
        self._reread()
        h = self.state.host(name)
        if not self._alive(h):
            raise LabError(f"{step}: {name} is not up (crashed): bring it back with "
                           f"`heartline lab boot {name} --dir {self.dir}`")  # fmt: skip
        return h

    # --- up ----------------------------------------------------------------------------------
    @classmethod
    def up(
        cls,
        n: int,
        lab_dir: str | None = None,
        *,
        programs: str | None = None,
        timeout: float = 30.0,
        progress: Callable[[str], None] | None = None,
        backend: str = "lockd",
    ) -> Self:
        """Make ``n`` hosts; ``programs`` is a config whose ``[programs]`` (and ``[defaults]``)
        every host's daemon runs; ``backend``: the keeper, ``lockd`` or ``etcd``. On any
        failure everything made so far is undone."""
        check_count(n)
        check_backend(backend)
        why = lab_unavailable(backend)
        if why:
            raise LabError(f"lab up: {why}")
        extra = programs_of(programs) if programs else {}
        real = os.path.realpath(lab_dir or default_lab_dir())
        if len(real) + _SOCKET_TAIL > 107:
            raise LabError(
                f"lab up: {real} is too long for the hosts' control sockets (at most "
                f"{107 - _SOCKET_TAIL} characters): choose a shorter --dir"
            )
        made = not os.path.isdir(real)
        try:
            os.makedirs(real, mode=0o700, exist_ok=True)
        except OSError as e:
            raise LabError(f"lab up: cannot make {real}: {e.strerror}") from None
        lock = _lock_dir(real, wait=0)
        try:
            made = cls._clear_remains(real) or made
            lab = cls(LabState(id=_new_id(), dir=real, made_dir=made, slot=0,
                               backend_kind=backend))  # fmt: skip
            try:
                lab._build(n, extra, timeout, progress or (lambda _: None))
            except BaseException:
                with contextlib.suppress(LabError):
                    lab._teardown()
                raise
            return lab
        finally:
            os.close(lock)

    @classmethod
    def _clear_remains(cls, real: str) -> bool:
        """Refuse a directory with a live lab, or with files of anything else; clear a dead
        lab's remains (after a reboot). Whether the remains say the lab made the directory."""
        try:
            old = load_state(real)
        except LabNotFound:
            if os.listdir(real):
                raise LabError(
                    f"lab up: {real} is not empty and holds no lab: choose an empty or new "
                    "directory with --dir"
                ) from None
            return False
        lab = cls(old)
        if lab._any_alive():
            raise LabError(
                f"lab up: a lab ({old.id}) is already up in {real}: take it down first with "
                f"`heartline lab down --dir {real}`, or choose another --dir"
            )
        lab._teardown(keep_dir=True)
        return old.made_dir

    def _any_alive(self) -> bool:
        s = self.state
        names = net.netns_names()
        return (
            net.link_exists(s.bridge)
            or net.same(s.keeper_pid, s.keeper_start)
            or any(h.netns in names or self._alive(h) for h in s.hosts)
        )

    def _build(self, n: int, extra: dict[str, Any], timeout: float,
               progress: Callable[[str], None]) -> None:  # fmt: skip
        s = self.state
        deadline = time.monotonic() + timeout
        with net.net_lock():
            s.slot = net.free_slot()
            s.plan_hosts(n)
            s.save()
            net.make_bridge(s)
        progress(f"bridge {s.bridge} on {s.network}")
        keygens = self._keygen()
        if s.backend_kind == "etcd":
            self._make_certificates()
        else:
            self._write_token()
        keeper_ready = self._start_keeper()
        try:
            for h in s.hosts:
                net.make_netns(h)
                net.make_link(s, h)
            progress(f"{n} network namespaces and links")
            self._write_files(keygens, extra, timeout)
            self._wait_keeper(keeper_ready, deadline)
        finally:
            if keeper_ready is not None:
                keeper_ready.close()
        progress(f"keeper ({s.backend_kind}) on {s.backend}")
        self._start_hosts(s.hosts, deadline, step="up")
        s.phase = "up"
        s.save()

    def _keygen(self) -> dict[str, subprocess.Popen[bytes]]:
        """ssh-keygen for the client key and each host key, all at once."""
        s = self.state
        os.makedirs(s.path("hosts"), mode=0o700, exist_ok=True)
        want = {"": s.path("id_ed25519")}
        for h in s.hosts:
            os.makedirs(s.host_path(h.name), mode=0o700, exist_ok=True)
            want[h.name] = s.host_path(h.name, "ssh_host_ed25519_key")
        out = {}
        for who, path in want.items():
            comment = f"{who or 'client'}@heartline-lab-{s.id}"
            out[who] = subprocess.Popen(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
        return out

    def _write_token(self) -> None:
        import secrets

        path = self.state.path("token")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{secrets.token_hex(24)} admin\n")

    def _make_certificates(self) -> None:
        """The etcd keeper's CA, its server certificate (for the gateway address and its peer
        address) and the client certificate every host and the controller show it."""
        from heartline._util import make_tls_files

        s = self.state
        os.makedirs(s.path("tls"), mode=0o700, exist_ok=True)
        try:
            make_tls_files(s.path("tls"), ips=[s.gateway, s.etcd_peer],
                           client=f"heartline-lab-{s.id}")  # fmt: skip
        except OSError as e:
            raise LabError(f"up: the etcd keeper's certificates: {e}") from None

    def _start_keeper(self) -> Any:
        """The lab's keeper, detached (a session of its own), on the gateway address: its
        lockd, or its etcd. Returns the socket a lockd says ``READY=1`` on (None for etcd,
        which is asked for its health instead)."""
        s = self.state
        sock = None
        if s.backend_kind == "etcd":
            from heartline._util import etcd_argv

            # On its data directory, as a real cluster's member: a keeper crashed and booted
            # again has every key and lease it had (etcd gives each lease its full TTL again).
            argv = etcd_argv(
                data_dir=s.path("etcd"), client_url=f"https://{s.gateway}:{ETCD_PORT}",
                peer_url=f"https://{s.etcd_peer}:{ETCD_PEER_PORT}", tls=lab_tls_files(s),
                cluster=f"heartline-lab-{s.id}",
            )  # fmt: skip
            env = {k: v for k, v in _env(s).items() if not k.startswith("ETCD")}
        else:
            sock, address = notify_socket(f"heartline-lab-{s.id}-keeper")
            listen = f"{s.gateway}:{KEEPER_PORT}"
            # With a journal, as a real cluster's lockd: a keeper crashed and booted again
            # hands each lock back to its holder and to nobody else.
            argv = [sys.executable, "-m", "heartline", "lockd", "--listen", listen,
                    "--data", s.path("lockd"), "--token-file", s.path("token")]  # fmt: skip
            env = _env(s, NOTIFY_SOCKET=address)
        with open(s.path("keeper.log"), "ab") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True,
            )  # fmt: skip
        self._procs.append(proc)
        s.keeper_pid, s.keeper_start = proc.pid, start_time(proc.pid)
        s.save()
        return sock

    def _wait_keeper(self, sock: Any, deadline: float, step: str = "up") -> None:
        """Until the keeper is ready: a lockd says so on ``sock``; an etcd is asked for its
        health (over TLS, with the lab's client certificate) every 50 ms."""
        from heartline._util import etcd_serves

        s = self.state
        assert s.keeper_pid is not None
        context = lab_tls_files(s).client_context() if sock is None else None
        pidfd = os.pidfd_open(s.keeper_pid)
        try:
            while True:
                if context is not None and etcd_serves(s.gateway, ETCD_PORT, context):
                    return
                left = deadline - time.monotonic()
                waits = [pidfd] if sock is None else [sock, pidfd]
                pause = max(0.0, left if sock is not None else min(left, 0.05))
                ready, _, _ = select.select(waits, [], [], pause)
                if pidfd in ready:
                    why = last_line(s.path("keeper.log")) or f"see {s.path('keeper.log')}"
                    raise LabError(f"{step}: the keeper ({s.backend_kind}) ended at start-up: "
                                   f"{why}")  # fmt: skip
                if sock is not None and sock in ready and said_ready(sock):
                    return
                if time.monotonic() >= deadline:
                    raise LabError(f"{step}: the keeper ({s.backend_kind}) was not ready in "
                                   f"time; see {s.path('keeper.log')}")  # fmt: skip
        finally:
            os.close(pidfd)

    def _write_files(
        self, keygens: dict[str, subprocess.Popen[bytes]], extra: dict[str, Any], timeout: float
    ) -> None:
        import json

        from heartline._util import atomic_write

        s = self.state
        for who, proc in keygens.items():
            _out, err = proc.communicate(timeout=30)
            if proc.returncode != 0:
                raise LabError(f"up: ssh-keygen for {who or 'the client key'}: "
                               f"{err.decode(errors='replace').strip()}")  # fmt: skip

        def write(path: str, text: str, mode: int = 0o644) -> None:
            atomic_write(path, text.encode(), mode=mode, fsync=False)

        with open(s.path("id_ed25519.pub")) as f:
            write(s.path("authorized_keys"), f.read(), 0o600)
        host_keys = {}
        for h in s.hosts:
            with open(s.host_path(h.name, "ssh_host_ed25519_key.pub")) as f:
                host_keys[h.name] = f.read()
        write(s.path("known_hosts"), known_hosts_text(s, host_keys))
        write(s.path("ssh_config"), ssh_config_text(s))
        write(s.path("heartline.toml"), controller_config_text(s))
        for h in s.hosts:
            config = s.host_path(h.name, "heartline.toml")
            write(s.host_path(h.name, "sshd_config"), sshd_config_text(s, h))
            write(config, host_config_text(s, h, extra))
            init = {
                "name": h.name,
                "lab_dir": s.dir,
                "daemon_run_dir": s.host_path(h.name, "run"),
                "timeout": timeout,
                "env": _env(s),
                "sshd": [_SSHD, "-D", "-e", "-f", s.host_path(h.name, "sshd_config")],
                "sshd_log": s.host_path(h.name, "sshd.log"),
                "daemon": [sys.executable, "-m", "heartline", "up", "-c", config],
                "daemon_log": s.host_path(h.name, "daemon.log"),
                # As `heartline up` run where FILE is: its programs' relative paths hold.
                "daemon_cwd": extra.get("dir") or s.host_path(h.name),
            }
            write(s.host_path(h.name, "init.json"), json.dumps(init, indent=1), 0o600)

    # --- a host's init ------------------------------------------------------------------------
    def _start_hosts(self, hosts: list[HostRecord], deadline: float, *, step: str) -> None:
        """Start each host's init (in its network namespace, with new pid, mount and UTS
        namespaces) and wait until every one says its sshd and daemon are ready."""
        s = self.state
        pipes: dict[int, HostRecord] = {}
        try:
            for h in hosts:
                r, w = os.pipe()
                pipes[r] = h
                argv = ["ip", "netns", "exec", h.netns,
                        "unshare", "--pid", "--fork", "--mount-proc", "--uts", "--mount",
                        "--propagation", "private",
                        sys.executable, "-I", "-S", _INIT, s.host_path(h.name, "init.json"),
                        str(w)]  # fmt: skip
                try:
                    with open(s.host_path(h.name, "init.log"), "ab") as log:
                        proc = subprocess.Popen(
                            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            env=_env(s), pass_fds=(w,), start_new_session=True,
                        )  # fmt: skip
                finally:
                    os.close(w)
                self._procs.append(proc)
                h.wrapper_pid, h.wrapper_start = proc.pid, start_time(proc.pid)
                h.init_pid = h.init_start = None
                s.save()
            said: dict[int, bytes] = {r: b"" for r in pipes}
            while said:
                left = deadline - time.monotonic()
                ready, _, _ = select.select(list(said), [], [], max(0.0, left))
                if not ready:
                    slow = ", ".join(pipes[r].name for r in said)
                    raise LabError(f"{step}: {slow} not ready in time (see their logs in "
                                   f"{s.path('hosts')})")  # fmt: skip
                for r in ready:
                    chunk = os.read(r, 4096)
                    said[r] += chunk
                    if chunk and b"\n" not in said[r]:
                        continue
                    self._host_said(pipes[r], said.pop(r), step)
        finally:
            for r in pipes:
                os.close(r)
            s.save()

    def _host_said(self, h: HostRecord, text: bytes, step: str) -> None:
        line = text.decode(errors="replace").strip()
        if line == "ready":
            assert h.wrapper_pid is not None
            init = _children(h.wrapper_pid)
            if init:
                h.init_pid, h.init_start = init[0], start_time(init[0])
            if self._alive(h):
                return
            line = "its init ended once ready"
        if line.startswith("error "):
            where = self.state.host_path(h.name)
            raise LabError(f"{step}: {h.name}: {line[6:]} (logs in {where})")
        why = line or last_line(self.state.host_path(h.name, "init.log")) or "no word from it"
        raise LabError(f"{step}: {h.name}: its init ended before it was ready: {why}")

    # --- what a lab host goes through ----------------------------------------------------------
    def crash(self, name: str) -> None:
        """The host crashes: its pid namespace's init SIGKILLed, so the kernel kills every
        process of the host at once (sshd, daemon, programs, sessions). ``backend``: the
        keeper (the lab's lockd or etcd) is SIGKILLed."""
        if name == BACKEND:
            self._crash_keeper()
            return
        h = self._up_host(name, "crash")
        assert h.init_pid is not None
        inside = self._host_pids(h)
        net.kill([h.init_pid])
        wrapper = [h.wrapper_pid] if h.wrapper_pid else []
        left = net.wait_gone([h.init_pid, *inside, *wrapper], 10.0)
        self._procs = [p for p in self._procs if p.poll() is None]
        if left:
            raise LabError(f"crash: {name}'s processes {left} did not end within 10s")

    def boot(self, name: str, *, timeout: float = 30.0) -> None:
        """A crashed host comes back: a new init (new pid, mount and UTS namespaces in the
        same network namespace), its sshd (same host key) and daemon started again.
        ``backend``: the keeper starts again, on its address and its journal (lockd) or data
        directory (etcd)."""
        if name == BACKEND:
            self._boot_keeper(timeout)
            return
        self._reread()
        h = self.state.host(name)
        if self._alive(h):
            raise LabError(f"boot: {name} is up; crash it first (`heartline lab crash {name}`)")
        if h.netns not in net.netns_names():
            raise LabError(
                f"boot: {name}'s network namespace {h.netns} is gone: take the lab down "
                f"(`heartline lab down --dir {self.dir}`) and up again"
            )
        lock = _lock_dir(self.dir, wait=timeout)
        try:
            # Another boot may have saved the state file while this one waited for the lock:
            # start from what it wrote, or its host would be written back as crashed.
            self._reread()
            h = self.state.host(name)
            if self._alive(h):
                raise LabError(f"boot: {name} is up; crash it first (`heartline lab crash {name}`)")
            try:
                self._start_hosts([h], time.monotonic() + timeout, step="boot")
            except BaseException:
                # A host that did not come up stays down (crashed), not half-booted.
                half = [*_children(h.wrapper_pid), h.wrapper_pid] if h.wrapper_pid else []
                net.kill(half)
                net.wait_gone(half, 10.0)
                raise
        finally:
            os.close(lock)

    def _crash_keeper(self) -> None:
        self._reread()
        s = self.state
        if not net.same(s.keeper_pid, s.keeper_start):
            raise LabError(f"crash: the backend is down already; boot it with `heartline lab "
                           f"boot {BACKEND} --dir {self.dir}`")  # fmt: skip
        assert s.keeper_pid is not None
        net.kill([s.keeper_pid])
        left = net.wait_gone([s.keeper_pid], 10.0)
        self._procs = [p for p in self._procs if p.poll() is None]
        if left:
            raise LabError(f"crash: the backend (pid {s.keeper_pid}) did not end within 10s")

    def _boot_keeper(self, timeout: float) -> None:
        self._reread()
        s = self.state
        if net.same(s.keeper_pid, s.keeper_start):
            raise LabError(f"boot: the backend is up; crash it first (`heartline lab crash "
                           f"{BACKEND}`)")  # fmt: skip
        lock = _lock_dir(self.dir, wait=timeout)
        try:
            ready = self._start_keeper()
            try:
                self._wait_keeper(ready, time.monotonic() + timeout, step="boot")
            finally:
                if ready is not None:
                    ready.close()
        finally:
            os.close(lock)

    def cut(self, name: str) -> bool:
        """Pull the host's cable: its link goes down. False if it was cut already."""
        return self._set_link(name, up=False)

    def heal(self, name: str) -> bool:
        """Plug it back in. False if it was not cut."""
        return self._set_link(name, up=True)

    def _set_link(self, name: str, *, up: bool) -> bool:
        self._reread()
        h = self.state.host(name)
        step = f"{'heal' if up else 'cut'} {name}"
        was = net.link_up(h.link)
        if was is None:
            raise LabError(f"{step}: its link {h.link} is gone: take the lab down and up again")
        if was == up:
            return False
        net.set_link(h, up, step=step)
        return True

    def exec_argv(self, name: str, command: list[str]) -> tuple[list[str], dict[str, str]]:
        """The argv and environment that run ``command`` inside host ``name`` (all of its
        namespaces, via nsenter), with ``HEARTLINE_CONFIG`` naming its daemon's config."""
        h = self._up_host(name, "exec")
        argv = ["nsenter", f"--target={h.init_pid}", "--net", "--uts", "--pid", "--mount",
                f"--wd={os.getcwd()}", "--", *command]  # fmt: skip
        env = {**os.environ, "HEARTLINE_CONFIG": self.host_config(name)}
        return argv, env

    # --- looking at it -------------------------------------------------------------------------
    def _host_pids(self, h: HostRecord) -> list[int]:
        """Every process of the host's pid namespace (the init's descendants)."""
        out: list[int] = []
        todo = [h.init_pid] if h.init_pid else []
        while todo and len(out) < 100_000:
            kids = _children(todo.pop())
            out += kids
            todo += kids
        return out

    def status(self) -> LabStatus:
        self._reread()
        s = self.state
        hosts: list[HostStatus] = []
        for h in s.hosts:
            alive = self._alive(h)
            link = net.link_up(h.link)
            sshd = daemon = None
            if alive:
                assert h.init_pid is not None
                for pid in _children(h.init_pid):
                    argv = net.cmdline(pid)
                    if argv and "sshd" in argv[0]:
                        sshd = pid
                    elif "heartline" in argv and "up" in argv:
                        daemon = pid
            if alive:
                state = "up" if link else "cut"
            else:
                state = "starting" if s.phase == "starting" and h.init_pid is None else "crashed"
            hosts.append(HostStatus(
                name=h.name, address=h.address, state=state,
                link="gone" if link is None else "up" if link else "down",
                netns=h.netns, init_pid=h.init_pid if alive else None,
                sshd_pid=sshd, daemon_pid=daemon,
            ))  # fmt: skip
        keeper = net.same(s.keeper_pid, s.keeper_start)
        return LabStatus(
            id=s.id, dir=s.dir, phase=s.phase, network=s.network, gateway=s.gateway,
            backend=s.backend, backend_kind=s.backend_kind, config=self.config,
            ssh_config=self.ssh_config,
            keeper_pid=s.keeper_pid if keeper else None, keeper="up" if keeper else "down",
            hosts=hosts,
        )  # fmt: skip

    # --- down ---------------------------------------------------------------------------------
    def down(self, *, timeout: float = 10.0) -> None:
        """Remove every namespace, link, process and file of the lab."""
        lock = _lock_dir(self.dir, wait=timeout)
        try:
            self._reread()
            self._teardown()
        finally:
            os.close(lock)

    def _teardown(self, *, keep_dir: bool = False) -> None:
        s = self.state
        if os.path.exists(s.path(STATE)):
            s.phase = "stopping"
            s.save()
        self._close_shared_ssh()
        recorded = [(s.keeper_pid, s.keeper_start)]
        for h in s.hosts:
            recorded += [(h.init_pid, h.init_start), (h.wrapper_pid, h.wrapper_start)]
        ended = [pid for pid, start in recorded if pid is not None and net.same(pid, start)]
        net.kill(ended)
        # Whatever was started but not recorded (up killed right after a spawn), and whatever
        # runs in the hosts' network namespaces (`lab exec`, their pid namespaces' processes).
        netns = [h.netns for h in s.hosts]
        for _ in range(3):
            found = (net.ns_pids(netns) | net.tagged_pids(s.tag)) - set(ended)
            if not found:
                break
            net.kill(found)
            ended += found
        left = net.wait_gone(ended, 10.0)
        self._procs = [p for p in self._procs if p.poll() is None]
        failed = net.remove_network(s)
        names = os.listdir(s.dir) if os.path.isdir(s.dir) else []
        torn = [n for n in names if n.startswith(f"{STATE}.tmp.")]  # left by a killed save
        for name in (*TOP_FILES, *torn):
            path = s.path(name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        if left or failed:
            why = "; ".join(failed) or f"processes {left} did not end"
            s.save()
            raise LabError(f"down: {why} (the lab's record stays in {s.path(STATE)})")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(s.path(STATE))
        if s.made_dir and not keep_dir:
            with contextlib.suppress(OSError):
                os.rmdir(s.dir)

    def _close_shared_ssh(self) -> None:
        """End the shared ssh connections heartline opened to the lab's hosts (best effort:
        those of this user's control directory, see ``cluster/_ssh``)."""
        from heartline.cluster._ssh import Ssh, control_dir

        path = control_dir(create=False)
        if not os.path.exists(self.ssh_config) or not os.path.isdir(path):
            return
        ssh = Ssh(config=self.ssh_config)
        for h in self.state.hosts:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                ssh.close_shared(h.name)
