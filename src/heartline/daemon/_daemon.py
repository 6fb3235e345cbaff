"""The daemon: composition root wiring the supervisor, the API server, systemd and signals."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import resource
import signal
import stat
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from heartline._util import become_subreaper, start_time
from heartline.config import Config, load_config
from heartline.daemon._api import Api
from heartline.daemon._holder import Holder, end_previous_holder, held_pids, previous_holder
from heartline.daemon._http import serve_connection, start_unix_server
from heartline.daemon._sdnotify import SystemdNotifier
from heartline.errors import ConfigError, DaemonAlreadyRunning, DaemonStartError
from heartline.supervise import Saved, State, Supervisor, load_state

if TYPE_CHECKING:
    from heartline.cluster import Reporter, SeatKeeper

log = logging.getLogger("heartline.daemon")


def prepare_run_dir(run_dir: str) -> None:
    """Create the run directory owner-only, or refuse one that others could tamper with."""
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    st = os.stat(run_dir)
    if st.st_uid != os.geteuid():
        raise ConfigError(
            f"run directory {run_dir} belongs to uid {st.st_uid}, not to this user; "
            "choose another [daemon] run_dir"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(run_dir, 0o700)


def raise_fd_limit(programs: int) -> None:
    """Raise the soft RLIMIT_NOFILE so that every program fits (3 fds each here, 3 more in
    the holder), up to the hard limit. The common default soft limit of 1024 would otherwise
    stop the daemon at a few hundred programs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(
        max(soft, 8 * programs + 1024, 65536), hard if hard != resource.RLIM_INFINITY else 1 << 20
    )
    if want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (OSError, ValueError) as e:
            log.warning("cannot raise the open file limit to %d: %s", want, e)
    if soft < 3 * programs + 64:
        log.warning(
            "the open file limit (%d) is too low for %d programs: raise it (ulimit -n, "
            "LimitNOFILE=) or some programs will fail to start",
            soft,
            programs,
        )


def acquire_lock(run_dir: str) -> int:
    fd = os.open(os.path.join(run_dir, "daemon.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DaemonAlreadyRunning(
            f"a heartline daemon already runs with {run_dir} (stop it with `heartline down`)"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.config_path = config.path
        self.run_dir = config.daemon.run_dir
        self.adopt_timeout = config.daemon.adopt_timeout
        self._stop: asyncio.Event | None = None
        self.supervisor: Supervisor
        self.notifier = SystemdNotifier()
        self._watchdog: asyncio.TimerHandle | None = None
        self.reporter: Reporter | None = None
        self.seats: SeatKeeper | None = None
        self._holder: Holder | None = None

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def run(self, *, ready: Any = None) -> None:
        """Run until asked to stop; then stop every program and leave nothing behind."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        with _start_errors("the run directory", self.run_dir):
            prepare_run_dir(self.run_dir)
            lock_fd = acquire_lock(self.run_dir)
        raise_fd_limit(len(self.config.programs))
        state_path = os.path.join(self.run_dir, "state.json")
        saved = load_state(state_path)
        old_holder = previous_holder(self.run_dir)
        try:
            with _start_errors("the run directory", self.run_dir):
                holder = Holder.start(self.run_dir, adopt_timeout=self.adopt_timeout, grace=10.0)
        except BaseException:
            os.close(lock_fd)
            raise
        sock_path = self.config.daemon.socket_path
        server: asyncio.AbstractServer | None = None
        clean = False
        # Until a program was adopted or started, a failure leaves nothing to guard: the new
        # holder is told goodbye instead of being left to wait for a successor.
        guarding = False
        try:
            with _start_errors("the log directory", self.config.daemon.log_dir):
                self.supervisor = Supervisor(
                    self.config.programs,
                    loop=loop,
                    log_dir=self.config.daemon.log_dir,
                    state_path=state_path,
                    holder=holder,
                    notify_prefix=saved.notify,
                    subreaper=become_subreaper(),
                )
            loop.add_signal_handler(signal.SIGCHLD, self.supervisor.on_sigchld)
            self._holder = holder
            self._start_seats()
            guarding = True
            adopted = self._adopt(saved, old_holder)
            api = Api(self)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock_path)
            old_umask = os.umask(0o177)
            try:
                server = await start_unix_server(
                    lambda r, w: serve_connection(r, w, api, _allowed),
                    path=sock_path,
                    limit=16 * 1024,
                )
            finally:
                os.umask(old_umask)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            loop.add_signal_handler(
                signal.SIGHUP, lambda: self.supervisor.background(self._reload())
            )
            end_previous_holder(old_holder)
            pending = [n for n in self.supervisor.programs if n not in adopted]
            if pending:
                await self.supervisor.start(pending, autostart_only=True)
            self.supervisor.listeners.append(self._on_change)
            self._start_reporter()
            self.notifier.notify("READY=1", self._status_text())
            if self.notifier.watchdog_interval:
                self._watchdog_ping(loop)
            log.info("heartline daemon %d ready on %s", os.getpid(), sock_path)
            if ready is not None:
                ready()
            await self._stop.wait()
            if self.reporter is not None:
                # Leave the cluster first: no placement should pick a host that is stopping.
                await loop.run_in_executor(None, self.reporter.stop)
            log.info("stopping every program")
            self.notifier.notify("STOPPING=1", "STATUS=stopping programs")
            server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock_path)
            await self.supervisor.shutdown()
            if self.seats is not None:
                await self.seats.close()
            clean = True
            log.info("heartline daemon %d stopped; every program is stopped", os.getpid())
        finally:
            if self.reporter is not None:
                self.reporter.stop()
            if self._watchdog is not None:
                self._watchdog.cancel()
            if server is not None:
                server.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(sock_path)
            if clean or not guarding:
                holder.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.run_dir, "holder.json"))
            else:
                # Leaving on an error with programs still running: the holder keeps their
                # output flowing and stops them if no daemon adopts them in time.
                holder.abandon()
            self.notifier.close()
            os.close(lock_fd)

    def _adopt(self, saved: Saved, old_holder: dict[str, int] | None) -> set[str]:
        """Take over the processes a previous daemon left; stop those not taken over.

        Returns the names of the programs that are not to be started now: adopted ones, and
        ones the previous daemon had stopped for good (an operator's stop, a one-shot job that
        exited). A process that is not adopted (its program is gone, its record unusable, or
        it is missing from the state file) is stopped, and a new copy of its program starts
        only once it is gone.
        """
        sup = self.supervisor
        # The old holder has a pidfd of every process the old daemon started, including one
        # spawned in the instant before the crash that never reached the state file.
        held = held_pids(old_holder)
        settled: set[str] = set()
        taken: set[int] = set()
        changed: list[str] = []
        again: list[str] = []
        for name, rec in saved.records.items():
            prog = sup.programs.get(name)
            if rec.pid is None:
                if prog is not None and prog.restore(rec):
                    settled.add(name)
                continue
            if prog is None or prog.spec.singleton:
                # A singleton is never adopted: its lock went with the old daemon (whose fd
                # holder stopped it, or is stopping it); it runs again once granted again.
                sup.add_leftover(rec.pid, rec.start_time, name)
                for pid, ticks in rec.others:
                    sup.add_leftover(pid, ticks, name)
                taken.update([rec.pid, *(pid for pid, _ in rec.others)])
                continue
            if prog.adopt(rec.pid, rec):
                settled.add(name)
                taken.update([rec.pid, *prog.others])
                if rec.intent == "stop":
                    sup.background(prog.stop())
                elif rec.intent == "restart":
                    again.append(name)
                elif rec.spec != prog.digest:
                    changed.append(name)
            else:
                for pid, ticks in rec.others:  # the main process is gone: the rest must go too
                    sup.add_leftover(pid, ticks, name)
                    taken.add(pid)
        for pid, ticks in saved.strays:
            if pid not in taken:
                sup.add_leftover(pid, ticks, None)
                taken.add(pid)
        for pid in held - taken:
            sup.add_leftover(pid, start_time(pid), None)
        if again:
            log.info("finishing the restart of %s that the previous daemon began", ", ".join(again))
        if changed:
            log.info("config changed while the daemon was down; restarting %s", ", ".join(changed))
        if again or changed:
            sup.background(sup.restart([*again, *changed]))
        return settled

    async def _reload(self) -> None:
        try:
            config = load_config(self.config_path)
        except ConfigError as e:
            log.error("reload refused: %s", e)
            return
        diff = await self.apply_config(config)
        log.info("reloaded: %s", diff)

    async def apply_config(self, config: Config) -> dict[str, list[str]]:
        """Take a new config (SIGHUP or the API's reload): the programs' changes, and joining,
        rejoining or leaving the cluster when ``[cluster]`` changed."""
        diff = await self.supervisor.reload(config)
        changed = config.cluster != self.config.cluster
        self.config = config
        if changed:
            # A new [cluster] (or none): leave with the old session, join with the new one.
            old, self.reporter = self.reporter, None
            if old is not None:
                await asyncio.get_running_loop().run_in_executor(None, old.stop)
            self._start_reporter()
            if self.reporter is None:
                log.info("no [cluster] any more: this host stopped reporting")
            seats, self.seats = self.seats, None
            if seats is not None:
                await seats.close()
            self._start_seats()
        return diff

    def _status_text(self) -> str:
        return f"STATUS={self._running()} of {len(self.supervisor.programs)} programs running"

    def _on_change(self, _prog: object) -> None:
        if self.notifier.enabled:
            self.notifier.notify(self._status_text())
        if self.reporter is not None:
            self.reporter.set_programs(self._running())

    def _running(self) -> int:
        return sum(1 for p in self.supervisor.programs.values() if p.state is State.RUNNING)

    def _start_reporter(self) -> None:
        """In a cluster, publish this host's load report (from a thread of its own)."""
        if self.config.cluster is None:
            return
        from heartline.cluster import Reporter

        self.reporter = Reporter(self.config.cluster)
        self.reporter.set_programs(self._running())
        self.reporter.start()
        log.info(
            "reporting this host's load as %s to %s every %gs",
            self.reporter.name, self.config.cluster.backend, self.reporter.interval,
        )  # fmt: skip

    def _start_seats(self) -> None:
        """In a cluster, the seats of the singleton programs (they contend for their locks
        as they come to stand by)."""
        cluster = self.config.cluster
        if cluster is None:
            return
        import socket

        from heartline.cluster import SeatKeeper, session_ttl

        self.seats = SeatKeeper(
            cluster, self.supervisor, host=cluster.name or socket.gethostname(),
            fences=self._holder, session_ttl=session_ttl(cluster.report_interval),
        )  # fmt: skip
        self.seats.resume()

    def _watchdog_ping(self, loop: asyncio.AbstractEventLoop) -> None:
        self.notifier.notify("WATCHDOG=1")
        assert self.notifier.watchdog_interval
        self._watchdog = loop.call_later(self.notifier.watchdog_interval, self._watchdog_ping, loop)


@contextlib.contextmanager
def _start_errors(what: str, path: str) -> Iterator[None]:
    """Turn an OSError while the daemon sets itself up into one line naming the path."""
    try:
        yield
    except OSError as e:
        where = e.filename if isinstance(e.filename, str) else path
        raise DaemonStartError(
            f"cannot use {what} {path}: {where}: {e.strerror or e} (free space or fix the "
            "permissions, or choose another directory in [daemon])"
        ) from None


def _allowed(uid: int) -> bool:
    return uid == os.geteuid() or uid == 0


def run_daemon(config_path: str, *, ready: Any = None) -> None:
    config = load_config(config_path)
    asyncio.run(Daemon(config).run(ready=ready))


def setup_logging() -> None:
    """Log to stderr; under systemd's journal, without our own timestamps; when stderr is a
    file (`up --detach`), capped in size and rotated (see _selflog)."""
    from heartline.daemon._selflog import configure

    configure(sys.stderr)
