"""A valid configuration loads into typed specs with every option honoured."""

from __future__ import annotations

import dataclasses
import os
import signal
import textwrap
from pathlib import Path

import pytest

from heartline.config import (
    BackoffSpec,
    Config,
    CrashLoopSpec,
    LogSpec,
    ProgramSpec,
    load_config,
    parse_config,
)

FULL = textwrap.dedent(
    """\
    # every key the loader knows
    [daemon]
    run_dir = "run"
    log_dir = "../logs"
    adopt_timeout = "90s"

    [defaults]
    stop_timeout = "5s"
    umask = "027"
    log = { max_size = "64KiB", backups = 2 }

    [programs.db]
    command = ["/usr/bin/db", "--port", "5432"]
    restart = "always"
    crash_loop = { max_starts = 3, window = "30s", cooldown = "never" }

    [programs.web]
    command = ["/usr/bin/web", "--flag"]
    shell = false
    env = { LANG = "C.UTF-8", WORKERS = 4, RATIO = 0.5 }
    cwd = "srv"
    user = "www"
    group = "www-data"
    umask = "022"
    numprocs = 3
    autostart = false
    stop_signal = "INT"
    stop_timeout = "1m"
    after = ["db"]
    requires = "db"
    restart = "on-failure"
    success_exit_codes = [0, 3]
    prevent_restart_exit_codes = [78]
    ready_after = "250ms"
    redirect_stderr = true

    [programs.web.backoff]
    initial = "200ms"
    max = "1m"
    factor = 3
    jitter = 0.25
    reset_after = "2m"

    [programs.web.crash_loop]
    max_starts = 0
    window = 10
    cooldown = "5m"

    [programs.web.log]
    max_size = "1MB"
    backups = 0

    [programs.sh]
    shell = true
    command = "echo hello | cat"
    stop_signal = 1
    """
)


@pytest.fixture
def full(tmp_path: Path) -> Config:
    path = tmp_path / "etc" / "heartline.toml"
    return parse_config(FULL, path=str(path))


def test_every_program_key_is_honoured(full: Config, tmp_path: Path) -> None:
    """Each program key in the file ends up, typed, in the ProgramSpec of every instance."""
    web = full.programs["web:1"]
    assert web.command == ("/usr/bin/web", "--flag")
    assert web.argv() == ["/usr/bin/web", "--flag"]
    assert web.shell is False
    assert dict(web.env) == {"LANG": "C.UTF-8", "WORKERS": "4", "RATIO": "0.5"}
    assert web.cwd == str(tmp_path / "etc" / "srv")
    assert web.user == "www"
    assert web.group_name == "www-data"
    assert web.group == "web"
    assert web.umask == 0o022
    assert web.autostart is False
    assert web.stop_signal == signal.SIGINT
    assert web.stop_timeout == 60.0
    assert web.after == ("db",)
    assert web.requires == ("db",)
    assert web.restart == "on-failure"
    assert web.success_exit_codes == frozenset({0, 3})
    assert web.prevent_restart_exit_codes == frozenset({78})
    assert web.ready_after == 0.25
    assert web.redirect_stderr is True
    assert web.backoff == BackoffSpec(
        initial=0.2, max=60.0, factor=3.0, jitter=0.25, reset_after=120.0
    )
    assert web.crash_loop == CrashLoopSpec(max_starts=0, window=10.0, cooldown=300.0)
    assert web.log == LogSpec(max_size=1_000_000, backups=0)


def test_defaults_apply_unless_a_program_overrides_them(full: Config) -> None:
    """[defaults] fills keys a program leaves out; a program's own value wins."""
    db = full.programs["db"]
    assert db.stop_timeout == 5.0
    assert db.umask == 0o027
    assert db.log == LogSpec(max_size=64 * 1024, backups=2)
    assert full.programs["web:0"].stop_timeout == 60.0
    assert full.programs["web:0"].umask == 0o022


def test_cooldown_never_means_none(full: Config) -> None:
    """crash_loop.cooldown = "never" is stored as None (stay fatal until an operator acts)."""
    assert full.programs["db"].crash_loop == CrashLoopSpec(max_starts=3, window=30.0, cooldown=None)
    assert full.programs["db"].restart == "always"


def test_shell_command_string_runs_through_sh(full: Config) -> None:
    """shell = true accepts a string command and runs it with /bin/sh -c."""
    sh = full.programs["sh"]
    assert sh.command == ("echo hello | cat",)
    assert sh.argv() == ["/bin/sh", "-c", "echo hello | cat"]
    assert sh.stop_signal == signal.SIGHUP


def test_unset_keys_take_the_spec_defaults(full: Config) -> None:
    """Keys nobody set carry the dataclass defaults, defined in one place."""
    sh = full.programs["sh"]
    base = ProgramSpec(name="x", command=("x",))
    assert sh.backoff == base.backoff
    assert sh.crash_loop == base.crash_loop
    assert sh.autostart is base.autostart
    assert sh.success_exit_codes == base.success_exit_codes
    assert sh.cwd is None
    assert sh.user is None


def test_numprocs_expands_to_numbered_instances_in_a_group(full: Config) -> None:
    """numprocs = 3 makes web:0..web:2, all in group "web"; numprocs = 1 keeps the bare name."""
    assert full.groups["web"] == ("web:0", "web:1", "web:2")
    assert full.groups["db"] == ("db",)
    assert full.groups["sh"] == ("sh",)
    assert set(full.programs) == {"db", "sh", "web:0", "web:1", "web:2"}
    for name in full.groups["web"]:
        assert full.programs[name].name == name
        assert full.programs[name].group == "web"
    a, b = full.programs["web:0"], full.programs["web:2"]
    assert dataclasses.replace(a, name="web:2") == b


def test_daemon_paths_resolve_against_the_config_directory(full: Config, tmp_path: Path) -> None:
    """run_dir and log_dir are relative to the config file's directory; adopt_timeout parses."""
    assert full.daemon.run_dir == str(tmp_path / "etc" / "run")
    assert full.daemon.log_dir == str(tmp_path / "logs")
    assert full.daemon.socket_path == str(tmp_path / "etc" / "run" / "heartline.sock")
    assert full.daemon.adopt_timeout == 90.0
    assert full.path == str(tmp_path / "etc" / "heartline.toml")


def test_absolute_and_home_paths_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An absolute run_dir is kept; "~" expands to the home directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = parse_config(
        '[daemon]\nrun_dir = "/srv/run"\nlog_dir = "~/logs"\n', path=str(tmp_path / "h.toml")
    )
    assert cfg.daemon.run_dir == "/srv/run"
    assert cfg.daemon.log_dir == str(tmp_path / "home" / "logs")


def test_an_empty_file_is_a_config_without_programs(tmp_path: Path) -> None:
    """An empty document is valid: no programs, default daemon directories."""
    cfg = parse_config("", path=str(tmp_path / "h.toml"))
    assert dict(cfg.programs) == {}
    assert dict(cfg.groups) == {}
    assert cfg.daemon.run_dir
    assert cfg.daemon.log_dir
    assert cfg.daemon.adopt_timeout == 60.0


def test_config_mappings_are_read_only(full: Config) -> None:
    """programs, groups and env cannot be changed after loading."""
    with pytest.raises(TypeError):
        full.programs["x"] = full.programs["db"]  # type: ignore[index]
    with pytest.raises(TypeError):
        full.groups["x"] = ()  # type: ignore[index]
    with pytest.raises(TypeError):
        full.programs["web:0"].env["X"] = "1"  # type: ignore[index]


@pytest.mark.parametrize(
    ("value", "signo"),
    [
        ('"TERM"', signal.SIGTERM),
        ('"sigkill"', signal.SIGKILL),
        ('"Usr1"', signal.SIGUSR1),
        ("2", 2),
    ],
)
def test_stop_signal_accepts_names_and_numbers(value: str, signo: int) -> None:
    """stop_signal takes a name with or without SIG, in any case, or a number."""
    cfg = parse_config(f'[programs.a]\ncommand = ["x"]\nstop_signal = {value}\n')
    assert cfg.programs["a"].stop_signal == signo


@pytest.mark.parametrize(("value", "mask"), [('"0"', 0), ('"777"', 0o777), ("18", 18)])
def test_umask_accepts_octal_strings_and_integers(value: str, mask: int) -> None:
    """umask is an octal string, or an integer taken as is."""
    cfg = parse_config(f'[programs.a]\ncommand = ["x"]\numask = {value}\n')
    assert cfg.programs["a"].umask == mask


def test_dependencies_may_name_a_numprocs_group() -> None:
    """after/requires name groups; a group of numbered instances counts as one name."""
    cfg = parse_config(
        '[programs.db]\ncommand = ["db"]\nnumprocs = 2\n'
        '[programs.web]\ncommand = ["web"]\nafter = ["db"]\nrequires = ["db"]\n'
    )
    assert cfg.programs["web"].after == ("db",)
    assert cfg.groups["db"] == ("db:0", "db:1")


def test_numprocs_upper_bound_is_accepted() -> None:
    """numprocs = 1000 (the maximum) expands to 1000 instances."""
    cfg = parse_config('[programs.w]\ncommand = ["w"]\nnumprocs = 1000\n')
    assert len(cfg.groups["w"]) == 1000
    assert cfg.groups["w"][-1] == "w:999"


def test_long_command_and_huge_argument_are_kept_unchanged() -> None:
    """A program path over 128 bytes and a 100 000-byte argument survive byte for byte.

    (Erlang's heart truncated its command to 128 bytes; nothing here may.)
    """
    prog = "/opt/" + "p" * 200 + "/bin/app"
    arg = "x" * 100_000
    cfg = parse_config(f'[programs.a]\ncommand = ["{prog}", "{arg}"]\n')
    assert len(prog.encode()) > 128
    assert cfg.programs["a"].command == (prog, arg)
    assert cfg.programs["a"].argv() == [prog, arg]


def test_long_shell_command_is_kept_unchanged() -> None:
    """A shell command longer than 128 bytes is passed to /bin/sh -c whole."""
    cmd = "echo " + "y" * 5000
    cfg = parse_config(f'[programs.a]\nshell = true\ncommand = "{cmd}"\n')
    assert cfg.programs["a"].argv() == ["/bin/sh", "-c", cmd]


def test_unicode_arguments_and_env_survive() -> None:
    """Non-ASCII arguments and environment values are kept as written."""
    cfg = parse_config(
        '[programs.a]\ncommand = ["/bin/echo", "héllo wörld ☃"]\nenv = { GREETING = "grüß" }\n'
    )
    assert cfg.programs["a"].command[1] == "héllo wörld ☃"
    assert cfg.programs["a"].env["GREETING"] == "grüß"


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    """load_config reads and validates the file; relative paths resolve next to it."""
    path = tmp_path / "heartline.toml"
    path.write_text('[daemon]\nrun_dir = "r"\n[programs.a]\ncommand = ["x"]\n')
    cfg = load_config(str(path))
    assert cfg.path == str(path)
    assert cfg.daemon.run_dir == str(tmp_path / "r")
    assert list(cfg.programs) == ["a"]


def test_load_config_relative_path_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config path given relative to the cwd is recorded absolute."""
    (tmp_path / "h.toml").write_text('[daemon]\nrun_dir = "r"\n')
    monkeypatch.chdir(tmp_path)
    cfg = load_config("h.toml")
    assert cfg.path == os.path.join(str(tmp_path), "h.toml")
    assert cfg.daemon.run_dir == str(tmp_path / "r")
