"""The control socket is owner-only and checks peer credentials."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES"); sys.exit(0)
try:
    s.sendall(b"GET /v1/status HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
except BrokenPipeError:
    pass  # the daemon may refuse (and close) before the request is even sent
print(s.recv(65536).decode().split("\\r\\n")[0])
"""

SYSTEM_PY = "/usr/bin/python3"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists(SYSTEM_PY),
    reason="needs root, setpriv and the system python3",
)


@pytest.fixture
def open_dir():
    """A directory other users can traverse (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="heartline-test-"))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_socket_and_run_dir_are_owner_only(make_daemon):
    """The run directory is 0700 and the socket 0600."""
    d = make_daemon('[programs.a]\ncommand = ["/bin/sleep", "3600"]\n')
    assert stat.S_IMODE(os.stat(d.root / "run").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(d.socket).st_mode) == 0o600


def _as_nobody(sock: str) -> str:
    res = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            SYSTEM_PY,
            "-I",
            "-c",
            CLIENT,
            sock,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return res.stdout.strip() + res.stderr.strip()


@needs_root
def test_other_user_is_refused_by_peer_credentials(open_dir, make_daemon):
    """Even with the file permissions opened up, a client of another uid gets 403."""
    d = make_daemon('[programs.a]\ncommand = ["/bin/sleep", "3600"]\n', run_dir=open_dir / "run")
    os.chmod(d.run_dir, 0o755)
    assert _as_nobody(d.socket) == "EACCES"  # the file mode alone stops it
    os.chmod(d.socket, 0o666)
    assert _as_nobody(d.socket) == "HTTP/1.1 403 Forbidden"  # and SO_PEERCRED does too
    assert d.program("a")["state"] == "running"


@needs_root
def test_program_runs_as_configured_user(open_dir, make_daemon):
    """user = "nobody": the program runs with nobody's uid, gid and USER."""
    out = open_dir / "id"
    os.chmod(open_dir, 0o777)
    code = "import os, sys; open(sys.argv[1], 'w').write('%d %d %s' % (os.getuid(), os.getgid(), os.environ['USER']))"
    d = make_daemon(f"""
        [programs.who]
        command = ["{SYSTEM_PY}", "-I", "-c", "{code}", "{out}"]
        user = "nobody"
        restart = "never"
    """)
    d.wait_state("who", "exited")
    import pwd

    nobody = pwd.getpwnam("nobody")
    assert out.read_text() == f"{nobody.pw_uid} {nobody.pw_gid} nobody"


@needs_root
def test_program_runs_with_configured_group(open_dir, make_daemon):
    """group = "nogroup" sets the program's gid (user unchanged)."""
    import grp

    out = open_dir / "gid"
    os.chmod(open_dir, 0o777)
    code = "import os, sys; open(sys.argv[1], 'w').write('%d %d' % (os.getuid(), os.getgid()))"
    d = make_daemon(f"""
        [programs.g]
        command = ["{SYSTEM_PY}", "-I", "-c", "{code}", "{out}"]
        group = "nogroup"
        restart = "never"
    """)
    d.wait_state("g", "exited")
    assert out.read_text() == f"0 {grp.getgrnam('nogroup').gr_gid}"


@needs_root
def test_user_identity_wins_over_the_daemon_environment(open_dir, make_daemon):
    """user = "nobody": nobody's HOME, USER and LOGNAME, not the daemon's; `env` wins over both."""
    import json
    import pwd

    out = open_dir / "env"
    os.chmod(open_dir, 0o777)
    code = (
        "import json, os, sys; e = os.environ; "
        "open(sys.argv[1], 'w').write(json.dumps([e.get(k) for k in ('HOME', 'USER', 'LOGNAME')]))"
    )
    d = make_daemon(
        f"""
        [programs.who]
        command = ["{SYSTEM_PY}", "-I", "-c", "{code}", "{out}"]
        user = "nobody"
        restart = "never"
        [programs.own]
        command = ["{SYSTEM_PY}", "-I", "-c", "{code}", "{out}.own"]
        user = "nobody"
        env = {{ HOME = "/srv/own" }}
        restart = "never"
        """,
        start=False,
    )
    d.env.update(HOME="/root", USER="root", LOGNAME="root")
    d.start()
    d.wait_state("who", "exited")
    d.wait_state("own", "exited")
    home = pwd.getpwnam("nobody").pw_dir
    assert json.loads(out.read_text()) == [home, "nobody", "nobody"]
    assert json.loads((open_dir / "env.own").read_text()) == ["/srv/own", "nobody", "nobody"]


@needs_root
def test_configured_group_replaces_the_users_primary_group(open_dir, make_daemon):
    """user and group set: the group is primary, the user's own primary group is not kept."""
    import grp
    import pwd

    out = open_dir / "groups"
    os.chmod(open_dir, 0o777)
    code = (
        "import os, sys; open(sys.argv[1], 'w').write(repr((os.getgid(), sorted(os.getgroups()))))"
    )
    d = make_daemon(f"""
        [programs.g]
        command = ["{SYSTEM_PY}", "-I", "-c", "{code}", "{out}"]
        user = "nobody"
        group = "daemon"
        restart = "never"
    """)
    d.wait_state("g", "exited")
    gid, groups = eval(out.read_text())
    daemon_gid = grp.getgrnam("daemon").gr_gid
    assert gid == daemon_gid
    assert pwd.getpwnam("nobody").pw_gid not in groups
    assert daemon_gid in groups
