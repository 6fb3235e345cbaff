"""The backdoor in this process: safe directories and socket paths, stale sockets, and a session
driven over a plain socket."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import wait_until as wait_for

from heartline.service import _backdoor_paths, _backdoor_session, backdoor
from heartline.service.backdoor import BackdoorInUse, UnsafePath

IS_ROOT = os.getuid() == 0


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A private temporary directory with a short path (unix socket paths are limited to 107
    bytes, and tmp_path can be longer)."""
    directory = Path(tempfile.mkdtemp(prefix="hl-bd-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Session:
    """A client on a plain socket that reads up to each prompt."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.banner = self.read_to_prompt()

    def read_to_prompt(self) -> str:
        data = b""
        while not (data.endswith(b">>> ") or data.endswith(b"... ")):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"session ended; got {data!r}")
            data += chunk
        return data[:-4].decode()

    def ask(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        return self.read_to_prompt()

    def close(self) -> None:
        self.sock.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_private_dir_is_created_0700_with_its_missing_parents(short_dir: Path) -> None:
    """ensure_private_dir creates every missing level with mode 0700, whatever the umask."""
    target = short_dir / "heartline" / "backdoor"
    old = os.umask(0)
    try:
        _backdoor_paths.ensure_private_dir(str(target))
    finally:
        os.umask(old)
    assert mode(short_dir / "heartline") == 0o700
    assert mode(target) == 0o700
    _backdoor_paths.ensure_private_dir(str(target))  # existing and safe: accepted again


@pytest.mark.parametrize("bits", [0o750, 0o705, 0o711, 0o777])
def test_an_existing_directory_open_to_others_is_refused(short_dir: Path, bits: int) -> None:
    """A backdoor directory with any group or other bit is refused and left as it is."""
    target = short_dir / "backdoor"
    target.mkdir()
    target.chmod(bits)
    with pytest.raises(UnsafePath, match="open to group or other"):
        _backdoor_paths.ensure_private_dir(str(target))
    assert mode(target) == bits


@pytest.mark.skipif(not IS_ROOT, reason="chown to another uid needs root")
def test_a_directory_owned_by_someone_else_is_refused(short_dir: Path) -> None:
    """A 0700 backdoor directory that belongs to another uid is refused."""
    target = short_dir / "backdoor"
    target.mkdir(mode=0o700)
    os.chown(target, 65534, 65534)
    with pytest.raises(UnsafePath, match="belongs to uid 65534"):
        _backdoor_paths.ensure_private_dir(str(target))


def test_a_symlink_in_place_of_the_directory_is_refused(short_dir: Path) -> None:
    """A symlink where the directory should be is refused, even if it points to a safe one."""
    real = short_dir / "real"
    real.mkdir(mode=0o700)
    (short_dir / "backdoor").symlink_to(real)
    with pytest.raises(UnsafePath, match="not a directory"):
        _backdoor_paths.ensure_private_dir(str(short_dir / "backdoor"))


def test_a_socket_dir_writable_by_others_is_refused(short_dir: Path) -> None:
    """install(path) refuses a directory that group or other may write without the sticky bit
    (someone could swap the socket)."""
    short_dir.chmod(0o777)
    with pytest.raises(UnsafePath, match="writable by group or other"):
        backdoor.install(short_dir / "bd.sock")
    assert list(short_dir.iterdir()) == []


def test_default_path_lives_under_the_runtime_dir(
    monkeypatch: pytest.MonkeyPatch, short_dir: Path
) -> None:
    """With XDG_RUNTIME_DIR set, the default is <runtime>/heartline/backdoor/<prog>-<pid>.sock;
    without it, /run (root) or /tmp/heartline-<uid>."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_dir))
    path = backdoor.default_path()
    assert os.path.dirname(path) == str(short_dir / "heartline" / "backdoor")
    assert path.endswith(f"-{os.getpid()}.sock")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    expected = "/run/heartline/backdoor" if IS_ROOT else f"/tmp/heartline-{os.getuid()}/backdoor"
    assert _backdoor_paths.default_dir() == expected


def test_install_without_path_makes_the_private_dir(
    monkeypatch: pytest.MonkeyPatch, short_dir: Path
) -> None:
    """install() with no path creates the runtime directories 0700 and listens there."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_dir))
    with backdoor.install() as bd:
        assert bd.path == backdoor.default_path()
        assert mode(Path(bd.path).parent) == 0o700
        assert stat.S_ISSOCK(os.lstat(bd.path).st_mode)
    assert not os.path.lexists(bd.path)


def test_socket_is_0600_and_removed_on_close(short_dir: Path) -> None:
    """The socket file is 0600 even with a permissive umask; close() removes it, and a second
    close() does nothing."""
    path = short_dir / "bd.sock"
    old = os.umask(0)
    try:
        bd = backdoor.install(path)
    finally:
        os.umask(old)
    try:
        assert mode(path) == 0o600
        assert [p.name for p in short_dir.iterdir()] == ["bd.sock"]  # no temporary left
    finally:
        bd.close()
    assert not path.exists()
    assert bd.closed
    bd.close()


def test_a_stale_socket_is_removed_at_start(short_dir: Path) -> None:
    """A socket file nobody listens on (left by a dead process) is replaced by a live one."""
    path = short_dir / "bd.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    with backdoor.install(path):
        session = Session(path)
        try:
            assert session.ask("6 * 7") == "42\n"
        finally:
            session.close()


def test_a_path_that_is_not_a_socket_is_refused(short_dir: Path) -> None:
    """A regular file at the path is refused with a clear error and left untouched."""
    path = short_dir / "bd.sock"
    path.write_text("precious")
    with pytest.raises(UnsafePath, match="not a socket"):
        backdoor.install(path)
    assert path.read_text() == "precious"


def test_a_socket_someone_answers_on_is_refused(short_dir: Path) -> None:
    """When another listener answers on the path, install() refuses and leaves it alone."""
    path = short_dir / "bd.sock"
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))
    other.listen(1)
    try:
        with pytest.raises(BackdoorInUse, match="in use"):
            backdoor.install(path)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        other.close()


def test_the_same_path_twice_in_one_process_is_refused(short_dir: Path) -> None:
    """A second install() on a path this process already serves is refused."""
    path = short_dir / "bd.sock"
    with backdoor.install(path), pytest.raises(BackdoorInUse):
        backdoor.install(path)


@pytest.mark.parametrize(
    ("source", "incomplete"),
    [
        ("x = 1", False),
        ("if x:", True),
        ("if x:\n    y = 1", True),
        ("if x:\n    y = 1\n", False),
        ("f(1,", True),
        ("await something()", False),
        ("# only a comment", False),
        ("", False),
    ],
)
def test_completeness_of_commands(source: str, incomplete: bool) -> None:
    """A block needs a blank line to end, open brackets need more, top-level await compiles."""
    assert _backdoor_session._incomplete(source) is incomplete


def test_invalid_source_is_a_syntax_error() -> None:
    """Source that can never compile raises SyntaxError instead of waiting for more."""
    with pytest.raises(SyntaxError):
        _backdoor_session._incomplete("1 +* 2")


def test_a_session_evaluates_and_keeps_its_output_to_itself(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Expressions, statements, blocks and errors come back over the socket; this process's
    stdout and stderr get nothing."""
    with backdoor.install(short_dir / "bd.sock") as bd:
        session = Session(Path(bd.path))
        try:
            assert "heartline backdoor: pid" in session.banner
            assert session.ask("x = 20") == ""
            assert session.ask("x + 22") == "42\n"
            assert session.ask("_") == "42\n"
            assert session.ask("print('hello', x, sep='-')") == "hello-20\n"
            assert session.ask("for i in range(2):") == ""
            assert session.ask("    print(i)") == ""
            assert session.ask("") == "0\n1\n"
            error = session.ask("1/0")
            assert error.startswith("Traceback (most recent call last):\n")
            assert 'File "<backdoor>", line 1' in error
            assert "backdoor.py" not in error
            assert error.endswith("ZeroDivisionError: division by zero\n")
            assert "SyntaxError" in session.ask("1 +* 2")
            assert "no event loop" in session.ask("tasks()")
            report = session.ask("report()")
            # heartline.service.reports may or may not be there: either its report or a notice.
            assert report.startswith(("heartline: report", "report(): not available"))
        finally:
            session.close()
    out, err = capsys.readouterr()
    assert out == err == ""


def test_objects_counts_and_lists_live_instances(short_dir: Path) -> None:
    """objects() lists the common types; objects(type or name) returns the live instances."""
    with backdoor.install(short_dir / "bd.sock") as bd:
        session = Session(Path(bd.path))
        try:
            session.ask("class Marker: pass")
            session.ask("")  # a one-line block ends with a blank line, as in the REPL
            session.ask("keep = [Marker(), Marker(), Marker()]")
            assert session.ask("len(objects(Marker))") == "3\n"
            assert session.ask("len(objects('Marker'))") == "3\n"
            assert "objects tracked by gc" in session.ask("objects()")
        finally:
            session.close()


def test_exit_ends_only_the_session(short_dir: Path) -> None:
    """exit() and SystemExit end the session, not the process; stdin stays open."""
    with backdoor.install(short_dir / "bd.sock") as bd:
        for command in ("exit()", "raise SystemExit(3)"):
            session = Session(Path(bd.path))
            try:
                session.sock.sendall(command.encode() + b"\n")
                rest = b""
                while chunk := session.sock.recv(65536):
                    rest += chunk
                assert b">>> " not in rest
            finally:
                session.close()


def test_the_audit_log_names_peer_and_command(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """heartline.backdoor logs at INFO the session opening (peer uid and pid), each command (cut
    to 200 characters) and the closing."""
    caplog.set_level(logging.INFO, logger="heartline.backdoor")
    with backdoor.install(short_dir / "bd.sock") as bd:
        session = Session(Path(bd.path))
        try:
            session.ask("1 + 1")
            session.ask("'" + "y" * 500 + "'")
        finally:
            session.close()
        wait_for(
            lambda: any(r.getMessage() == "backdoor session 1 closed" for r in caplog.records),
            what="the closing line",
        )
    messages = [r.getMessage() for r in caplog.records if r.name == "heartline.backdoor"]
    assert f"backdoor session 1 opened: peer uid {os.getuid()} pid {os.getpid()}" in messages
    commands = [m for m in messages if "command:" in m]
    assert commands[0].endswith("command: '1 + 1'")
    assert len(commands[1]) < 300
    assert commands[1].endswith('..."')
    assert "backdoor session 1 closed" in messages
