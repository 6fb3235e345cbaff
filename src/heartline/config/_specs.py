"""Typed, immutable specs produced by the loader. Defaults live here, in one place."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypedDict


@dataclass(frozen=True)
class BackoffSpec:
    """Delay before restart number n of a run of quick failures.

    The first restart after a stable run is immediate; the n-th consecutive one (n >= 2) waits
    ``min(max, initial * factor ** (n - 2))``, spread by +-``jitter`` (a fraction). A run that
    stayed up ``reset_after`` seconds counts as stable and resets the count.
    """

    initial: float = 0.1
    max: float = 30.0
    factor: float = 2.0
    jitter: float = 0.1
    reset_after: float = 10.0


@dataclass(frozen=True)
class CrashLoopSpec:
    """``max_starts`` starts within ``window`` seconds move the program to ``fatal``.

    From ``fatal`` it is retried after ``cooldown`` seconds; ``cooldown=None`` means never again
    (until an operator starts it). ``max_starts=0`` disables the limit.
    """

    max_starts: int = 10
    window: float = 60.0
    cooldown: float | None = 300.0


@dataclass(frozen=True)
class LogSpec:
    """Each stream's file is rotated at ``max_size`` bytes, keeping ``backups`` old files."""

    max_size: int = 10 * 1024 * 1024
    backups: int = 5


@dataclass(frozen=True)
class CheckSpec:
    """An active health check: ``url`` (tcp://host:port, http://..., https://...) or ``exec``.

    Run every ``interval`` seconds after a start ``grace``; one attempt fails at ``timeout``;
    ``failures`` failed attempts in a row send the program down the stop path (reason
    ``check``). For HTTP, the status must lie in ``status`` and the body contain ``body``.
    """

    url: str | None = None
    exec: tuple[str, ...] | None = None
    interval: float = 10.0
    timeout: float = 5.0
    grace: float = 0.0
    failures: int = 3
    status: tuple[int, int] = (200, 399)
    body: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class ProgramSpec:
    """One program instance, as the supervisor runs it."""

    name: str
    command: tuple[str, ...]
    group: str = ""
    shell: bool = False
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    cwd: str | None = None
    user: str | None = None
    group_name: str | None = None
    umask: int | None = None
    autostart: bool = True
    stop_signal: int = int(signal.SIGTERM)
    stop_timeout: float = 10.0
    after: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    restart: str = "on-failure"
    success_exit_codes: frozenset[int] = frozenset({0})
    prevent_restart_exit_codes: frozenset[int] = frozenset()
    backoff: BackoffSpec = BackoffSpec()
    crash_loop: CrashLoopSpec = CrashLoopSpec()
    ready_after: float = 0.0
    log: LogSpec = LogSpec()
    redirect_stderr: bool = False
    #: Seconds without a WATCHDOG=1 heartbeat before the program counts as hung (0: off).
    watchdog: float = 0.0
    #: When the program counts as ready: "started" (after ready_after), "notify" (READY=1),
    #: or "check" (the health check first passes).
    ready: str = "started"
    #: How long "notify" or "check" readiness may take before the program is restarted.
    start_timeout: float = 90.0
    #: Signal asking a hung program for a report before it is stopped (None: none).
    report_signal: int | None = int(signal.SIGUSR2)
    #: How long the report may take to land in the log.
    report_wait: float = 0.05
    check: CheckSpec | None = None
    #: Cluster mode: run on exactly one host of those whose config has it, under its lock.
    singleton: bool = False
    #: The singleton's lease: how long its lock outlives a holder that went silent.
    lease: float = 5.0
    #: What hands the singleton to another host besides its host's failure ("fatal").
    failover_on: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        """The argv to exec: the command itself, or ``/bin/sh -c`` when ``shell`` is set."""
        if self.shell:
            # One string (the loader refuses a longer list with shell = true).
            return ["/bin/sh", "-c", self.command[0]]
        return list(self.command)


@dataclass(frozen=True)
class DaemonSpec:
    """Where the daemon keeps its socket, state and logs."""

    run_dir: str
    log_dir: str
    #: After a crash of the daemon, how long its programs wait for a new daemon to adopt them
    #: before they are stopped (so that none runs unsupervised).
    adopt_timeout: float = 60.0

    @property
    def socket_path(self) -> str:
        return f"{self.run_dir}/heartline.sock"


@dataclass(frozen=True)
class Config:
    """A whole configuration: the daemon settings and every program instance by name."""

    path: str
    daemon: DaemonSpec
    programs: Mapping[str, ProgramSpec]
    groups: Mapping[str, tuple[str, ...]]
    #: ``[cluster]``, or None on a host that is not part of one.
    cluster: ClusterSpec | None = None


@dataclass(frozen=True)
class HostSpec:
    """What the cluster section says about one host (all optional: a host that runs its
    daemon with the cluster's backend joins without being listed)."""

    name: str
    #: Where SSH reaches it (a name your ssh config knows, or an address); default: its name.
    address: str = ""
    labels: tuple[str, ...] = ()
    #: Declared capacity; a request that needs more is never placed there.
    cpus: float | None = None
    mem: int | None = None

    @property
    def ssh_destination(self) -> str:
        return self.address or self.name


#: The lockd a cluster uses unless it names another backend.
DEFAULT_BACKEND = "heartline://127.0.0.1:7717"


class Credentials(TypedDict):
    """What a client shows the backend, as the lock API's keyword arguments: a lockd token,
    the CA to check the server against, an etcd client certificate and its key."""

    token_file: str | None
    ca_file: str | None
    cert_file: str | None
    key_file: str | None


@dataclass(frozen=True)
class ClusterSpec:
    """``[cluster]``: the coordination backend and what is known of the hosts. Every host
    runs its daemon with the same section; the hosts that report are the cluster."""

    backend: str = DEFAULT_BACKEND
    token_file: str | None = None
    ca_file: str | None = None
    #: The client certificate and key an etcd with --client-cert-auth asks for (etcds://).
    cert_file: str | None = None
    key_file: str | None = None
    #: This host's name in the cluster (default: its hostname).
    name: str = ""
    #: How often a daemon publishes its load report (and at once on a big change).
    report_interval: float = 2.0
    #: An ``ssh -F`` file (default: the user's own ssh configuration).
    ssh_config: str | None = None
    #: Extra ``-o`` options for ssh, e.g. ``["ConnectTimeout=5"]``.
    ssh_options: tuple[str, ...] = ()
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    hosts: Mapping[str, HostSpec] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def credentials(self) -> Credentials:
        """``token_file``, ``ca_file``, ``cert_file``, ``key_file``: for ``**`` into
        ``open_backend``, ``open_entries`` or ``Lock``."""
        return Credentials(token_file=self.token_file, ca_file=self.ca_file,
                           cert_file=self.cert_file, key_file=self.key_file)  # fmt: skip

    def host(self, name: str) -> HostSpec:
        """What the section says of ``name`` (an empty spec for a host it does not list)."""
        return self.hosts.get(name) or HostSpec(name=name)

    def groups_of(self, name: str) -> tuple[str, ...]:
        return tuple(g for g, members in self.groups.items() if name in members)
