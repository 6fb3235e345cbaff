"""The first process of a lab host: pid 1 of the host's own pid namespace.

Started as ``ip netns exec NETNS unshare --pid --fork --mount-proc --uts --mount python -I -S
_labinit.py INIT_JSON READY_FD`` (run as a script, so that it loads nothing of heartline: it
must be up in milliseconds). In its new namespaces it

- names the host (``sethostname``: the UTS namespace is its own);
- mounts a tmpfs of its own on ``/run`` (sshd's ``/run/sshd``, and ``/run/heartline`` pointing
  at the host daemon's run directory, so a plain ``heartline status`` there finds its own
  daemon), binding the lab's directory back in when it lives under ``/run``;
- gives root the login shell ``/bin/sh`` there (a copy of /etc/passwd bound over it in the
  host's mount namespace), so a session never runs the machine's root ~/.bashrc;
- turns IPv6 off in the host's network namespace (the lab is IPv4 on one subnet, nothing else);
- starts ``sshd -D`` and the host's heartline daemon, waits for both to say they are ready
  (sshd: systemd's ``READY=1`` on a datagram socket; the daemon: its ready pipe) and writes
  ``ready`` (or ``error WHY``) on ``READY_FD`` for ``heartline lab``;
- then reaps whatever ends in the namespace, as an init does, until it is told to stop.

A SIGKILL to this process from outside is the host's crash: the kernel kills every other
process of the pid namespace with it. SIGTERM stops the host's processes (TERM, then KILL
after 5 s) and ends it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any

_MS_NOSUID = 2
_MS_NODEV = 4
_MS_BIND = 4096
_MS_REC = 16384
_SSHD_READY = "heartline-lab-sshd"


class _InitError(Exception):
    """The host could not be set up; the message goes to ``heartline lab`` as it is. (Not one
    of heartline.errors: this script is run by path and loads nothing of heartline.)"""


def notify_socket(name: str) -> tuple[socket.socket, str]:
    """A datagram socket for systemd's notify protocol on the abstract address ``name`` (of
    this network namespace), and the ``NOTIFY_SOCKET`` value that names it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.bind("\0" + name)
    return sock, "@" + name


def said_ready(sock: socket.socket) -> bool:
    """Read one datagram: whether it holds ``READY=1``."""
    try:
        data = sock.recv(4096)
    except OSError:
        return False
    return b"READY=1" in data.split(b"\n")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise _InitError(f"cannot mount {target}: {os.strerror(err)}")


def private_run(lab_dir: str, daemon_run_dir: str) -> None:
    """A tmpfs of the host's own on /run, with ``lab_dir`` bound back in if it is under /run."""
    fd = os.open(lab_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _mount("tmpfs", "/run", "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755")
        if lab_dir.startswith("/run/"):
            os.makedirs(lab_dir, mode=0o700, exist_ok=True)
            # /proc/self/fd/N still names the directory under the /run now covered.
            _mount(f"/proc/self/fd/{fd}", lab_dir, None, _MS_BIND | _MS_REC, None)
    finally:
        os.close(fd)
    os.mkdir("/run/sshd", 0o755)
    os.symlink(daemon_run_dir, "/run/heartline")


def root_with_sh(passwd: str) -> str:
    """The text of an /etc/passwd with root's login shell ``/bin/sh``."""
    out = []
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[2] == "0":
            fields[6] = "/bin/sh"
        out.append(":".join(fields))
    return "\n".join(out) + "\n"


def plain_root_shell() -> None:
    """Logins to the host get ``/bin/sh``: sshd runs a command through the user's login
    shell, and the machine's root may have a bash whose ~/.bashrc does slow or locking work
    (a version manager's rehash) on every session. The host sees its own copy of
    /etc/passwd (on its private /run, bound over the file in its mount namespace only)."""
    try:
        with open("/etc/passwd") as f:
            text = f.read()
    except OSError:
        return
    with open("/run/passwd", "w") as f:
        f.write(root_with_sh(text))
    os.chmod("/run/passwd", 0o644)
    _mount("/run/passwd", "/etc/passwd", None, _MS_BIND, None)


def no_ipv6() -> None:
    for name in ("all", "default", "lo", "eth0"):
        path = f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6"
        with contextlib.suppress(OSError), open(path, "w") as f:
            f.write("1")


def last_line(path: str) -> str:
    """The last line of a log, to say why something ended."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 2048))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _spawn(argv: list[str], env: dict[str, str], log: str, **kw: Any) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        try:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                start_new_session=True, **kw,
            )  # fmt: skip
        except OSError as e:
            raise _InitError(f"cannot start {argv[0]}: {e.strerror}") from None


def start(conf: dict[str, Any], deadline: float) -> None:
    """Start sshd and the daemon; return once both are ready."""
    env = dict(conf["env"])
    notify, address = notify_socket(_SSHD_READY)
    sshd = _spawn(conf["sshd"], {**env, "NOTIFY_SOCKET": address}, conf["sshd_log"])
    r, w = os.pipe()
    try:
        daemon = _spawn(
            conf["daemon"], {**env, "HEARTLINE_READY_FD": str(w)}, conf["daemon_log"],
            pass_fds=(w,), cwd=conf["daemon_cwd"],
        )  # fmt: skip
    finally:
        os.close(w)
    waits = {notify.fileno(): "sshd", r: "daemon"}
    ended = {os.pidfd_open(sshd.pid): ("sshd", conf["sshd_log"]),
             os.pidfd_open(daemon.pid): ("the daemon", conf["daemon_log"])}  # fmt: skip
    try:
        while waits:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([*waits, *ended], [], [], max(0.0, left))
            if not ready:
                raise _InitError(f"{' and '.join(sorted(waits.values()))} not ready in time")
            for fd in ready:
                if fd == notify.fileno() and said_ready(notify):
                    waits.pop(fd, None)
                elif fd == r:
                    said = os.read(r, 4096)
                    if said.startswith(b"ready"):
                        waits.pop(fd, None)
                    elif said.startswith(b"error "):
                        raise _InitError(f"the daemon did not start: {said[6:].decode().strip()}")
                elif fd in ended:
                    what, log = ended[fd]
                    raise _InitError(f"{what} ended at start-up: {last_line(log) or 'see ' + log}")
    finally:
        notify.close()
        os.close(r)
        for fd in ended:
            os.close(fd)


def serve() -> int:
    """Reap every process that ends in the namespace until SIGTERM or SIGINT."""
    stop = {signal.SIGTERM, signal.SIGINT}
    while True:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        got = signal.sigwaitinfo({signal.SIGCHLD, *stop})
        if got.si_signo in stop:
            break
    # Pid 1 may signal every other process of its namespace at once.
    with contextlib.suppress(OSError):
        os.kill(-1, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                signal.sigtimedwait({signal.SIGCHLD}, max(0.0, deadline - time.monotonic()))
        except ChildProcessError:
            return 0
    return 0  # the kernel kills what is left when pid 1 ends


def main(argv: list[str]) -> int:
    conf_path, ready_fd = argv[1], int(argv[2])
    os.set_inheritable(ready_fd, False)
    try:
        with open(conf_path) as f:
            conf = json.load(f)
        deadline = time.monotonic() + float(conf["timeout"])
        socket.sethostname(conf["name"])
        private_run(conf["lab_dir"], conf["daemon_run_dir"])
        plain_root_shell()
        no_ipv6()
        # Signals wait for serve(); the children are started before they are blocked (a
        # child inherits the signal mask).
        start(conf, deadline)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT})
    except (_InitError, OSError, ValueError, KeyError) as e:
        with contextlib.suppress(OSError):
            os.write(ready_fd, f"error {e}\n".encode(errors="replace")[:4000])
        return 1
    with contextlib.suppress(OSError):
        os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    return serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
