"""Running a command on a cluster host over SSH, with the OpenSSH client.

Why the OpenSSH client and not asyncssh: it already honours everything an operator has set
up (``~/.ssh/config``, the agent, ``known_hosts``, jump hosts, certificates), it is on every
machine that has sshd, and it adds no dependency. heartline adds only:

- ``BatchMode=yes`` (never a password prompt in the middle of a placement) and
  ``StrictHostKeyChecking=yes``: an unknown or changed host key is an error that says how to
  fix it, never accepted silently;
- connection sharing (``ControlMaster=auto``, a socket in a private directory,
  ``ControlPersist=60``), so a second command to the same host skips the handshake. Options
  in ``[cluster] ssh_options`` come first on the command line, so they win (ssh keeps the
  first value it sees): ``["ControlMaster=no"]`` (or ``ControlPath=none``) turns sharing
  off;
- a remote guard, so that nothing is left running on the far host when the local side stops
  (Ctrl-C, a timeout, a lost lock, or ``heartline place`` SIGKILLed): the command runs in a
  session of its own there, with ``/dev/null`` as its stdin, while a watcher reads the
  channel's stdin. Locally that stdin is a pipe only this process holds; when this process
  ends, however it ends, the pipe closes, ssh passes the EOF on, and the watcher stops the
  command's whole session (TERM, then KILL after 5 s). The remote side needs only a POSIX
  ``sh`` and util-linux's ``setsid``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO

from heartline.errors import HostKeyRefused, SshFailed

#: Runs the command (its arguments follow as $1...) in a session of its own and stops that
#: session when the channel's stdin closes. Exit status: the command's (128+N for signal N).
#: (An asynchronous list's stdin is /dev/null in a shell without job control, hence the
#: channel's stdin kept as fd 3 for the watcher.)
_GUARD = (
    "printf '\\036heartline-started\\n' >&2; exec 3<&0; "
    'setsid "$@" </dev/null 3<&- & p=$!; '
    "( while read -r _ <&3; do :; done; kill -TERM -$p 2>/dev/null || exit 0; "
    "i=0; while kill -0 -$p 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; "
    "kill -KILL -$p 2>/dev/null ) >/dev/null 2>&1 & w=$!; "
    "wait $p; rc=$?; kill $w 2>/dev/null; exit $rc"
)

_KEY_ERRORS = (
    "Host key verification failed",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
    "host key is known for",
)
_SSH_ERRORS = (
    "ssh: connect to host",
    "ssh: Could not resolve hostname",
    "Permission denied (",
    "Connection closed by",
    "Connection timed out",
    "Connection refused",
    "kex_exchange_identification",
    "Bad configuration option",
    "Can't open user config file",
    "No route to host",
    "ControlPath",
    "ControlSocket",
)


def control_dir(*, create: bool = True) -> str:
    """A private directory for shared connections' sockets (unix socket paths are short);
    with ``create`` false, only its path."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    path = os.path.join(base, f"heartline-ssh-{os.getuid()}")
    if len(path) + 41 >= 108:  # "/" + 40 hex digits of %C must fit a unix socket's path
        path = f"/tmp/heartline-ssh-{os.getuid()}"
    if not create:
        return path
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        st = os.lstat(path)
        if st.st_uid != os.getuid() or st.st_mode & 0o077 or not os.path.isdir(path):
            raise SshFailed(
                f"{path} is not a private directory of this user: remove it, or set "
                "XDG_RUNTIME_DIR to one"
            ) from None
    return path


class Ssh:
    def __init__(
        self, *, config: str | None = None, options: Sequence[str] = (), share: bool = True
    ) -> None:
        self.config = config
        self.options = tuple(options)
        # ControlMaster=no alone would still use a master someone else opened: sharing off
        # means no ControlPath either.
        said = {o.replace(" ", "=", 1).lower() for o in self.options}
        self.share = share and not said & {"controlmaster=no", "controlpath=none"}

    def base(self, destination: str) -> list[str]:
        argv = ["ssh"]
        if self.config:
            argv += ["-F", self.config]
        for opt in self.options:
            argv += ["-o", opt]
        argv += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
        if self.share:
            argv += [
                "-o", "ControlMaster=auto",
                "-o", f"ControlPath={control_dir()}/%C",
                "-o", "ControlPersist=60",
            ]  # fmt: skip
        return [*argv, "-T", "-e", "none", "--", destination]

    def command_argv(self, destination: str, command: Sequence[str]) -> list[str]:
        remote = shlex.join(["sh", "-c", _GUARD, "heartline-guard", *command])
        return [*self.base(destination), remote]

    def start(self, destination: str, command: Sequence[str]) -> Remote:
        argv = self.command_argv(destination, command)
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True
            )
        except OSError as e:
            raise SshFailed(f"cannot run ssh: {e.strerror} (install openssh-client)") from None
        return Remote(proc, destination)

    def run(self, destination: str, command: Sequence[str]) -> int:
        """Run ``command`` there, its output on ours; its exit status."""
        return self.start(destination, command).wait()

    def hostname(self, destination: str) -> str:
        """The address ssh would connect to for ``destination`` (an alias of the ssh config
        resolved with ``ssh -G``, which opens no connection); ``destination`` if that fails."""
        try:
            out = subprocess.run(
                [*self.base(destination)[:-2], "-G", destination], stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=10, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return destination
        for line in out.stdout.splitlines():
            key, _, value = line.partition(" ")
            if key == "hostname" and value:
                return value.strip()
        return destination

    def close_shared(self, destination: str) -> None:
        """End the shared connection to ``destination``, if one is open."""
        if self.share:
            subprocess.run(
                [*self.base(destination)[:-2], "-O", "exit", destination],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, timeout=10, check=False,
            )  # fmt: skip


#: What the guard writes to stderr just before the command starts: every line before it is
#: ssh's own.
_STARTED = b"\036heartline-started\n"


class Remote:
    """A command running on a host: its ssh process, its stderr relayed and watched.

    Until the guard says the command started, stderr is ssh's own: held back, so that a
    failure to connect becomes one line of heartline's (and its exit code) rather than ssh's
    lines and then ours. Once the command runs, its stderr is passed on as it comes.
    """

    def __init__(self, proc: subprocess.Popen[bytes], destination: str) -> None:
        self.proc = proc
        self.destination = destination
        self.ssh_error: str | None = None
        self.key_error: str | None = None
        self.started = False
        self._held: list[bytes] = []
        self._relay = threading.Thread(target=self._relay_stderr, daemon=True)
        self._relay.start()

    def _relay_stderr(self) -> None:
        assert self.proc.stderr is not None
        out: IO[bytes] = sys.stderr.buffer
        for line in self.proc.stderr:
            if not self.started:
                if line == _STARTED:
                    self.started = True
                    _write(out, b"".join(self._held))  # ssh's warnings, if any
                    self._held.clear()
                    continue
                text = line.decode("utf-8", "replace").strip()
                if any(m in text for m in _KEY_ERRORS):
                    self.key_error = self.key_error or text
                elif any(m in text for m in _SSH_ERRORS) and self.ssh_error is None:
                    self.ssh_error = text
                self._held.append(line)
                continue
            _write(out, line)

    def stop(self) -> None:
        """Close the channel's stdin: the far side stops the command (TERM, then KILL)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def wait(self, timeout: float | None = None) -> int:
        rc = self.proc.wait(timeout)
        self._relay.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.stop()
        if rc == 255 and not self.started:
            if self.key_error:
                raise HostKeyRefused(
                    f"{self.destination}: ssh refused its host key ({self.key_error}); check "
                    f"the host, then add its key to known_hosts (ssh-keyscan {self.destination})"
                )
            held = [b.decode("utf-8", "replace").strip() for b in self._held]
            why = self.ssh_error or next((h for h in reversed(held) if h), "ssh exited 255")
            raise SshFailed(f"{self.destination}: {why}")
        if not self.started:
            _write(sys.stderr.buffer, b"".join(self._held))
        return rc


def _write(out: IO[bytes], data: bytes) -> None:
    if not data:
        return
    try:
        out.write(data)
        out.flush()
    except (OSError, ValueError):
        pass
