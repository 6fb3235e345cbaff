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
from typing import Any

from heartline.config import Config, load_config
from heartline.daemon._api import Api
from heartline.daemon._holder import Holder, end_previous_holder, held_pids, previous_holder
from heartline.daemon._http import serve_connection
from heartline.daemon._sdnotify import SystemdNotifier
from heartline.errors import ConfigError, DaemonAlreadyRunning
from heartline.supervise import State, Supervisor
from heartline.supervise._process import signal_group, start_time

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

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def run(self, *, ready: Any = None) -> None:
        """Run until asked to stop; then stop every program and leave nothing behind."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        prepare_run_dir(self.run_dir)
        lock_fd = acquire_lock(self.run_dir)
        raise_fd_limit(len(self.config.programs))
        old_holder = previous_holder(self.run_dir)
        holder = Holder.start(self.run_dir, adopt_timeout=self.adopt_timeout, grace=10.0)
        sock_path = self.config.daemon.socket_path
        server: asyncio.AbstractServer | None = None
        clean = False
        try:
            self.supervisor = Supervisor(
                self.config.programs,
                loop=loop,
                log_dir=self.config.daemon.log_dir,
                state_path=os.path.join(self.run_dir, "state.json"),
                holder=holder,
                run_dir=self.run_dir,
            )
            adopted = self._adopt(old_holder)
            api = Api(self)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock_path)
            old_umask = os.umask(0o177)
            try:
                server = await asyncio.start_unix_server(
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
            pending = [n for n in self.supervisor.programs if n not in (adopted or ())]
            if pending:
                await self.supervisor.start(pending, autostart_only=True)
            self.supervisor.listeners.append(self._on_change)
            self.notifier.notify("READY=1", self._status_text())
            if self.notifier.watchdog_interval:
                self._watchdog_ping(loop)
            log.info("heartline daemon %d ready on %s", os.getpid(), sock_path)
            if ready is not None:
                ready()
            await self._stop.wait()
            log.info("stopping every program")
            self.notifier.notify("STOPPING=1", "STATUS=stopping programs")
            server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock_path)
            await self.supervisor.shutdown()
            clean = True
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            if server is not None:
                server.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(sock_path)
            if clean:
                holder.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.run_dir, "holder.json"))
            else:
                # Leaving on an error with programs still running: the holder keeps their
                # output flowing and stops them if no daemon adopts them in time.
                holder.abandon()
            self.notifier.close()
            os.close(lock_fd)

    def _adopt(self, old_holder: dict[str, int] | None) -> set[str] | None:
        """Take over the processes a previous daemon left; stop those no longer configured.

        Returns the adopted names, or None when no previous daemon left anything.
        """
        sup = self.supervisor
        records = sup.load_state()
        # The old holder has a pidfd of every process the old daemon started, including one
        # spawned in the instant before the crash that never reached the state file.
        held = held_pids(old_holder)
        if not records and not held:
            return None
        adopted: set[str] = set()
        adopted_pids: set[int] = set()
        changed: list[str] = []
        for name, rec in records.items():
            if not isinstance(rec, dict) or not isinstance(rec.get("pid"), int):
                continue
            prog = sup.programs.get(name)
            if prog is None:
                sup.background(
                    _stop_leftover(rec["pid"], rec.get("start_time"), "no longer configured")
                )
                adopted_pids.add(rec["pid"])
                continue
            if prog.adopt(rec["pid"], rec):
                adopted.add(name)
                adopted_pids.add(rec["pid"])
                if rec.get("spec") != prog.digest:
                    changed.append(name)
        for pid in held - adopted_pids:
            sup.background(_stop_leftover(pid, start_time(pid), "not in the state file"))
        if changed:
            log.info("config changed while the daemon was down; restarting %s", ", ".join(changed))
            sup.background(sup.restart(changed))
        return adopted

    async def _reload(self) -> None:
        try:
            config = load_config(self.config_path)
        except ConfigError as e:
            log.error("reload refused: %s", e)
            return
        diff = await self.supervisor.reload(config)
        log.info("reloaded: %s", diff)

    def _status_text(self) -> str:
        progs = self.supervisor.programs.values()
        running = sum(1 for p in progs if p.state is State.RUNNING)
        return f"STATUS={running} of {len(progs)} programs running"

    def _on_change(self, _prog: object) -> None:
        if self.notifier.enabled:
            self.notifier.notify(self._status_text())

    def _watchdog_ping(self, loop: asyncio.AbstractEventLoop) -> None:
        self.notifier.notify("WATCHDOG=1")
        assert self.notifier.watchdog_interval
        self._watchdog = loop.call_later(self.notifier.watchdog_interval, self._watchdog_ping, loop)


def _allowed(uid: int) -> bool:
    return uid == os.geteuid() or uid == 0


async def _stop_leftover(
    pid: int, expected_start: int | None, why: str, grace: float = 10.0
) -> None:
    """Stop the process group of a program a previous daemon left and this one does not adopt."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(pidfd, lambda: None if gone.done() else gone.set_result(None))
    try:
        if expected_start is None or start_time(pid) != expected_start:
            return
        log.info("stopping pid %d left by the previous daemon: %s", pid, why)
        signal_group(pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await gone
        except TimeoutError:
            signal_group(pid, signal.SIGKILL)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def run_daemon(config_path: str, *, ready: Any = None) -> None:
    config = load_config(config_path)
    asyncio.run(Daemon(config).run(ready=ready))


def setup_logging() -> None:
    """Log to stderr; under systemd's journal, without our own timestamps."""
    fmt = "%(levelname)s %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s heartline[%(process)d] " + fmt
    logging.basicConfig(level=logging.INFO, format=fmt, stream=sys.stderr)
