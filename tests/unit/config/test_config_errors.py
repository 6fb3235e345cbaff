"""Every configuration mistake is a ConfigError saying "FILE:LINE: KEY: message".

Each case below marks the line the error must point at with ``# <-`` (or names it), so the
expected line number is read from the document itself rather than counted by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from heartline.config import load_config, parse_config
from heartline.errors import ConfigError, HeartlineError

FILE = "/etc/heartline/heartline.toml"


def marked_line(text: str) -> int:
    """The 1-based number of the only line that carries the ``# <-`` marker."""
    hits = [i for i, line in enumerate(text.split("\n"), start=1) if "# <-" in line]
    assert len(hits) == 1, text
    return hits[0]


def config_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, path=FILE)
    return info.value


PROGRAM = '[programs.web]\ncommand = ["/bin/web"]\n'

# (id, document, key, message regex); the expected line is the one marked "# <-".
CASES = [
    (
        "unknown-key-did-you-mean",
        PROGRAM + 'stop_timout = "5s" # <-\n',
        "programs.web.stop_timout",
        r"unknown key; did you mean 'stop_timeout'\?",
    ),
    (
        "unknown-key-lists-known-keys",
        PROGRAM + "xyzzy = 1 # <-\n",
        "programs.web.xyzzy",
        r"unknown key; known keys: command, shell, .*redirect_stderr",
    ),
    (
        "unknown-top-level-key",
        '[programs.web]\ncommand = ["x"]\n[daemon]\nrun_dir = "r"\n[deamon] # <-\n',
        "deamon",
        r"did you mean 'daemon'\?",
    ),
    (
        "unknown-daemon-key",
        '[daemon]\nrun_dirr = "x" # <-\n',
        "daemon.run_dirr",
        r"did you mean 'run_dir'\?",
    ),
    (
        "command-not-allowed-in-defaults",
        '[defaults]\nstop_signal = "TERM"\ncommand = ["x"] # <-\n',
        "defaults.command",
        r"unknown key",
    ),
    (
        "unknown-key-in-sub-table",
        PROGRAM + "[programs.web.backoff]\ninitial = 1\nmaxx = 5 # <-\n",
        "programs.web.backoff.maxx",
        r"unknown key; did you mean 'max'\?",
    ),
    (
        "unknown-key-in-inline-table",
        PROGRAM + "crash_loop = { max_starts = 2, windw = 3 } # <-\n",
        "programs.web.crash_loop.windw",
        r"did you mean 'window'\?",
    ),
    (
        "bool-expected",
        PROGRAM + 'autostart = "yes" # <-\n',
        "programs.web.autostart",
        r"expected true or false, got a string",
    ),
    (
        "numprocs-type",
        PROGRAM + 'numprocs = "3" # <-\n',
        "programs.web.numprocs",
        r"expected an integer from 1 to 1000",
    ),
    (
        "numprocs-range",
        PROGRAM + "numprocs = 1001 # <-\n",
        "programs.web.numprocs",
        r"expected an integer from 1 to 1000",
    ),
    (
        "numprocs-zero",
        PROGRAM + "numprocs = 0 # <-\n",
        "programs.web.numprocs",
        r"from 1 to 1000",
    ),
    (
        "env-not-a-table",
        PROGRAM + 'env = "A=1" # <-\n',
        "programs.web.env",
        r"expected a table of strings .* got a string",
    ),
    (
        "env-value-type",
        PROGRAM + "env = { A = true } # <-\n",
        "programs.web.env",
        r"value of A must be a string, got a boolean",
    ),
    (
        "env-bad-name",
        PROGRAM + 'env = { "A=B" = "1" } # <-\n',
        "programs.web.env",
        r"bad variable name 'A=B'",
    ),
    (
        "exit-code-range",
        PROGRAM + "success_exit_codes = [0, 256] # <-\n",
        "programs.web.success_exit_codes",
        r"exit codes from 0 to 255",
    ),
    (
        "exit-code-type",
        PROGRAM + 'prevent_restart_exit_codes = "78" # <-\n',
        "programs.web.prevent_restart_exit_codes",
        r"exit codes from 0 to 255",
    ),
    (
        "restart-value",
        PROGRAM + 'restart = "sometimes" # <-\n',
        "programs.web.restart",
        r'expected "always", "on-failure" or "never", got \'sometimes\'',
    ),
    (
        "umask-not-octal",
        PROGRAM + 'umask = "089" # <-\n',
        "programs.web.umask",
        r"octal string",
    ),
    (
        "umask-range",
        PROGRAM + 'umask = "1000" # <-\n',
        "programs.web.umask",
        r"between 000 and 777",
    ),
    (
        "user-type",
        PROGRAM + "user = 1000 # <-\n",
        "programs.web.user",
        r"expected a non-empty string, got an integer",
    ),
    (
        "after-type",
        PROGRAM + "after = [1] # <-\n",
        "programs.web.after",
        r"list of program names",
    ),
    (
        "jitter-range",
        PROGRAM + "[programs.web.backoff]\njitter = 1.5 # <-\n",
        "programs.web.backoff.jitter",
        r"fraction from 0 to 1",
    ),
    (
        "factor-below-one",
        PROGRAM + "backoff.factor = 0.5 # <-\n",
        "programs.web.backoff.factor",
        r"number >= 1.0",
    ),
    (
        "factor-nan",
        PROGRAM + "backoff = { factor = nan } # <-\n",
        "programs.web.backoff.factor",
        r"number >= 1.0",
    ),
    (
        "max-starts-negative",
        PROGRAM + "crash_loop = { max_starts = -1 } # <-\n",
        "programs.web.crash_loop.max_starts",
        r"integer from 0 to 1000000",
    ),
    (
        "log-size-too-small",
        PROGRAM + '[programs.web.log]\nmax_size = "1KB" # <-\n',
        "programs.web.log.max_size",
        r"at least 4KiB",
    ),
    (
        "log-size-malformed",
        PROGRAM + 'log = { max_size = "lots" } # <-\n',
        "programs.web.log.max_size",
        r"expected a size such as '10MB'",
    ),
    (
        "log-backups-range",
        PROGRAM + "log.backups = 101 # <-\n",
        "programs.web.log.backups",
        r"integer from 0 to 100",
    ),
    (
        "sub-table-type",
        PROGRAM + "log = 5 # <-\n",
        "programs.web.log",
        r"expected a table, got an integer",
    ),
    (
        "program-not-a-table",
        "[programs]\nweb = 1 # <-\n",
        "programs.web",
        r"expected a table, got an integer",
    ),
    ("daemon-not-a-table", "daemon = 1 # <-\n", "daemon", r"expected a table, got an integer"),
    (
        "daemon-dir-type",
        "[daemon]\nlog_dir = 5 # <-\n",
        "daemon.log_dir",
        r"expected a string, got an integer",
    ),
    (
        "bad-duration",
        PROGRAM + 'stop_timeout = "5 minutes" # <-\n',
        "programs.web.stop_timeout",
        r"expected a duration such as '10s' or '250ms', got '5 minutes'",
    ),
    (
        "negative-duration",
        PROGRAM + "ready_after = -1 # <-\n",
        "programs.web.ready_after",
        r"finite and not negative",
    ),
    (
        "bad-duration-in-sub-table",
        PROGRAM + '[programs.web.backoff]\nfactor = 2\nreset_after = "often" # <-\n',
        "programs.web.backoff.reset_after",
        r"got 'often'",
    ),
    (
        "bad-cooldown",
        PROGRAM + 'crash_loop.cooldown = "later" # <-\n',
        "programs.web.crash_loop.cooldown",
        r"got 'later'",
    ),
    (
        "bad-adopt-timeout",
        '[daemon]\nrun_dir = "r"\nadopt_timeout = "soon" # <-\n',
        "daemon.adopt_timeout",
        r"got 'soon'",
    ),
    (
        "adopt-timeout-beyond-any-timer",
        '[daemon]\nrun_dir = "r"\nadopt_timeout = 1e300 # <-\n',
        "daemon.adopt_timeout",
        r"at most 365d",
    ),
    (
        "stop-timeout-of-centuries",
        PROGRAM + 'stop_timeout = "40000d" # <-\n',
        "programs.web.stop_timeout",
        r"at most 365d",
    ),
    (
        "empty-run-dir",
        '[daemon]\nrun_dir = "" # <-\n',
        "daemon.run_dir",
        r"must not be empty \(leave it out for ",
    ),
    (
        "blank-log-dir",
        '[daemon]\nlog_dir = "  " # <-\n',
        "daemon.log_dir",
        r"must not be empty",
    ),
    (
        "run-dir-under-proc",
        '[daemon]\nrun_dir = "/proc/self/hl" # <-\n',
        "daemon.run_dir",
        r"/proc/self/hl is inside /proc, a kernel file system",
    ),
    (
        "run-dir-under-sys",
        '[daemon]\nrun_dir = "/sys" # <-\n',
        "daemon.run_dir",
        r"inside /sys",
    ),
    (
        "bad-signal-name",
        PROGRAM + 'stop_signal = "BOGUS" # <-\n',
        "programs.web.stop_signal",
        r"unknown signal 'BOGUS' \(use a name such as TERM",
    ),
    (
        "bad-signal-number",
        PROGRAM + "stop_signal = 999 # <-\n",
        "programs.web.stop_signal",
        r"no such signal number 999",
    ),
    (
        "bad-signal-type",
        PROGRAM + "stop_signal = true # <-\n",
        "programs.web.stop_signal",
        r"expected a signal name such as \"TERM\", got a boolean",
    ),
    (
        "unknown-after",
        PROGRAM + 'after = ["db"] # <-\n',
        "programs.web.after",
        r"no program named 'db'",
    ),
    (
        "unknown-requires",
        PROGRAM + 'after = []\nrequires = ["db", "cache"] # <-\n',
        "programs.web.requires",
        r"no program named 'db'",
    ),
    (
        "dependency-on-instance-name",
        '[programs.db]\ncommand = ["db"]\nnumprocs = 2\n' + PROGRAM + 'after = ["db:0"] # <-\n',
        "programs.web.after",
        r"no program named 'db:0'",
    ),
    (
        "waits-for-itself",
        PROGRAM + 'requires = "web" # <-\n',
        "programs.web.requires",
        r"cannot wait for itself",
    ),
    (
        "two-program-cycle",
        '[programs.a]\ncommand = ["a"]\nafter = ["b"]\n'
        '[programs.b]\ncommand = ["b"]\nafter = ["a"] # <-\n',
        "programs.b.after",
        r"start order has a cycle: a -> b -> a",
    ),
    (
        "three-program-cycle",
        '[programs.a]\ncommand = ["a"]\nafter = ["b"]\n'
        '[programs.b]\ncommand = ["b"]\nafter = ["c"]\n'
        '[programs.c]\ncommand = ["c"]\nafter = ["a"] # <-\n'
        '[programs.d]\ncommand = ["d"]\nafter = ["a"]\n',
        "programs.c.after",
        r"cycle: a -> b -> c -> a",
    ),
    (
        "missing-command",
        '[programs.ok]\ncommand = ["x"]\n[programs.web] # <-\nautostart = false\n',
        "programs.web",
        r"missing key 'command'",
    ),
    (
        "missing-command-with-defaults",
        '[defaults]\nshell = true\n[programs.web] # <-\nstop_signal = "INT"\n',
        "programs.web",
        r"missing key 'command'",
    ),
    (
        "bad-program-name",
        '[programs."my web"] # <-\ncommand = ["x"]\n',
        "programs.my web",
        r"program names use letters, digits",
    ),
    (
        "program-name-too-long",
        f"[programs.{'n' * 65}] # <-\ncommand = ['x']\n",
        f"programs.{'n' * 65}",
        r"at most 64",
    ),
    (
        "program-name-leading-dash",
        '[programs."-web"] # <-\ncommand = ["x"]\n',
        "programs.-web",
        r"program names",
    ),
    (
        "command-string-without-shell",
        '[programs.web]\ncommand = "/bin/web --flag" # <-\n',
        "programs.web.command",
        r"expected an argv list .*set shell = true",
    ),
    (
        "command-string-with-shell-false",
        '[programs.web]\nshell = false\ncommand = "/bin/web" # <-\n',
        "programs.web.command",
        r"set shell = true",
    ),
    (
        "shell-with-argv-list",
        '[programs.web]\nshell = true\ncommand = ["echo", "a; rm -rf /"] # <-\n',
        "programs.web.command",
        r"with shell = true the command is one string",
    ),
    (
        "command-wrong-type",
        "[programs.web]\ncommand = 5 # <-\n",
        "programs.web.command",
        r"expected an argv list of strings, got an integer",
    ),
    (
        "empty-command",
        "[programs.web]\ncommand = [] # <-\n",
        "programs.web.command",
        r"must not be empty",
    ),
    (
        "empty-program-path",
        '[programs.web]\ncommand = ["", "x"] # <-\n',
        "programs.web.command",
        r"program path \(item 0\) must not be empty",
    ),
    (
        "empty-shell-command",
        '[programs.web]\nshell = true\ncommand = "" # <-\n',
        "programs.web.command",
        r"must not be empty",
    ),
    (
        "command-item-type",
        '[programs.web]\ncommand = ["/bin/web", 3] # <-\n',
        "programs.web.command",
        r"item 1 must be a string, got an integer",
    ),
    (
        "nul-in-command",
        '[programs.web]\ncommand = ["/bin/web", "a\\u0000b"] # <-\n',
        "programs.web.command",
        r"item 1 must not contain a NUL character",
    ),
    (
        "nul-in-shell-command",
        '[programs.web]\nshell = true\ncommand = "echo \\u0000" # <-\n',
        "programs.web.command",
        r"NUL",
    ),
    (
        "nul-in-env-value",
        PROGRAM + 'env = { A = "x\\u0000" } # <-\n',
        "programs.web.env",
        r"value of A must not contain a NUL character",
    ),
    (
        "nul-in-env-name",
        PROGRAM + 'env = { "A\\u0000" = "x" } # <-\n',
        "programs.web.env",
        r"bad variable name",
    ),
    (
        "nul-in-cwd",
        PROGRAM + 'cwd = "/srv\\u0000" # <-\n',
        "programs.web.cwd",
        r"non-empty string",
    ),
    (
        "nul-in-run-dir",
        '[daemon]\nrun_dir = "/run\\u0000x" # <-\n',
        "daemon.run_dir",
        r"must not contain a NUL character",
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_error_names_file_line_and_key(text: str, key: str, message: str) -> None:
    """The error's text is "FILE:LINE: KEY: message" with LINE pointing at the offending key."""
    err = config_error(text)
    line = marked_line(text)
    assert err.file == FILE
    assert err.line == line
    assert err.key == key
    assert re.search(message, err.reason), err.reason
    assert str(err) == f"{FILE}:{line}: {key}: {err.reason}"
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    "text",
    [
        'x = "unterminated # <-\n',
        PROGRAM + "stop_timeout = 1 1 # <-\n",
        PROGRAM + "[programs.web] # <-\n",
        '[programs.web]\ncommand = ["/bin/web",\n  "--a",\n  = # <-\n]\n',
        "a = 1\nb = { c = 1,, } # <-\n",
    ],
    ids=["unterminated-string", "two-values", "duplicate-table", "inside-array", "inline-table"],
)
def test_invalid_toml_points_at_the_toml_error_line(text: str) -> None:
    """A TOML syntax error reports the parser's line, without the "(at line, column)" suffix."""
    err = config_error(text)
    assert err.line == marked_line(text)
    assert err.reason.startswith("invalid TOML: ")
    assert "(at line" not in str(err)
    assert str(err).startswith(f"{FILE}:{err.line}: invalid TOML: ")
    assert "\n" not in str(err)


def test_config_error_is_a_usage_class_error() -> None:
    """ConfigError is a HeartlineError whose CLI exit code is 2."""
    err = config_error(PROGRAM + "bogus = 1\n")
    assert isinstance(err, HeartlineError)
    assert err.exit_code == 2
    assert ConfigError.exit_code == 2


def test_error_without_path_names_the_placeholder() -> None:
    """parse_config without a path names the document "<config>"."""
    with pytest.raises(ConfigError, match=r"^<config>:3: programs\.web\.bogus: unknown key"):
        parse_config(PROGRAM + "bogus = 1\n")


def test_line_is_found_for_dotted_and_quoted_keys() -> None:
    """Dotted keys and quoted table names still map to the line they are written on."""
    text = (
        "[daemon]\n"
        'run_dir = "r"\n'
        '[programs."web"]\n'
        'command = ["x"]\n'
        'crash_loop.window = "10s"\n'
        "crash_loop.'max_starts' = 'many' # <-\n"
    )
    err = config_error(text)
    assert err.line == marked_line(text)
    assert err.key == "programs.web.crash_loop.max_starts"


def test_line_is_found_after_multiline_arrays_and_comments() -> None:
    """Multi-line arrays, comments and blank lines before the key do not shift the line."""
    text = (
        "# heartline config\n"
        "\n"
        "[programs.web]\n"
        "command = [\n"
        '  "/bin/web",  # the binary\n'
        '  "--port", "80",\n'
        "]\n"
        "\n"
        "# how to stop it\n"
        'stop_signal = "NOPE" # <-\n'
    )
    err = config_error(text)
    assert err.line == marked_line(text)


def test_crlf_line_endings_keep_line_numbers() -> None:
    """A file with CRLF line endings reports the same line numbers."""
    text = PROGRAM + 'stop_signal = "NOPE" # <-\n'
    err = config_error(text.replace("\n", "\r\n"))
    assert err.line == marked_line(text)


def test_first_error_in_file_order_is_reported() -> None:
    """With several mistakes, the first program's first bad key is the one reported."""
    text = PROGRAM + 'autostart = "no" # <-\nstop_signal = "NOPE"\n[programs.b]\nbogus = 1\n'
    err = config_error(text)
    assert err.line == marked_line(text)
    assert err.key == "programs.web.autostart"


def test_bad_default_points_at_the_defaults_line() -> None:
    """A wrong value in [defaults] is reported where it is written, as defaults.KEY."""
    text = '[defaults]\nstop_timeout = "bogus" # <-\n' + PROGRAM
    err = config_error(text)
    assert err.key == "defaults.stop_timeout"
    assert err.line == marked_line(text)


def test_bad_default_is_refused_without_programs() -> None:
    """A wrong value in [defaults] is an error even before any program uses it."""
    text = '[defaults]\nstop_timeout = "bogus" # <-\n'
    err = config_error(text)
    assert err.line == marked_line(text)


def test_cycle_through_requires_names_the_requires_key() -> None:
    """A dependency cycle made by requires points at the requires key that closes it."""
    text = (
        '[programs.a]\ncommand = ["a"]\nrequires = ["b"]\n'
        '[programs.b]\ncommand = ["b"]\nrequires = ["a"] # <-\n'
    )
    err = config_error(text)
    assert err.key == "programs.b.requires"
    assert err.line == marked_line(text)


def test_unknown_table_in_a_dotted_header_has_a_line() -> None:
    """A misspelt top-level table written as [progams.db] is reported at that header's line."""
    text = '[programs.web]\ncommand = ["x"]\n[progams.db] # <-\ncommand = ["y"]\n'
    err = config_error(text)
    assert err.key == "progams"
    assert err.line == marked_line(text)


def test_unicode_line_separator_in_a_comment_does_not_shift_lines() -> None:
    """Only newlines count as line breaks: U+2028 inside a comment keeps lines exact."""
    text = "# see\u2028the docs\n" + PROGRAM + 'stop_signal = "NOPE" # <-\n'
    err = config_error(text)
    assert err.line == marked_line(text)


def test_program_name_with_trailing_newline_is_refused() -> None:
    """A program name ending in a newline is not a valid name."""
    with pytest.raises(ConfigError, match="program names"):
        parse_config('[programs."web\\n"]\ncommand = ["x"]\n', path=FILE)


def test_huge_integer_duration_is_a_config_error() -> None:
    """stop_timeout = <400-digit integer> is a ConfigError, not an OverflowError."""
    text = PROGRAM + f"stop_timeout = 1{'0' * 400} # <-\n"
    err = config_error(text)
    assert err.line == marked_line(text)


def test_huge_size_string_is_a_config_error() -> None:
    """log.max_size = "<400 digits>" is a ConfigError, not an OverflowError."""
    text = PROGRAM + f'log.max_size = "{"9" * 400}" # <-\n'
    err = config_error(text)
    assert err.line == marked_line(text)


def test_deeply_nested_toml_is_a_config_error() -> None:
    """A pathologically nested array is refused with ConfigError, not RecursionError."""
    config_error("x = " + "[" * 5000 + "]" * 5000 + "\n")


def test_long_dependency_chain_loads() -> None:
    """A chain of 2000 programs, each after the next, is a valid configuration."""
    n = 2000
    text = "".join(
        f'[programs.p{i}]\ncommand = ["x"]\nafter = ["p{i + 1}"]\n' for i in range(n - 1)
    )
    text += f'[programs.p{n - 1}]\ncommand = ["x"]\n'
    assert len(parse_config(text).programs) == n


# --- load_config: the file itself -----------------------------------------------------------


def test_load_config_missing_file(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming the file and how to pass another one."""
    path = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == path
    assert str(info.value).startswith(f"{path}: ")
    assert "file not found" in str(info.value)
    assert info.value.exit_code == 2


def test_load_config_directory(tmp_path: Path) -> None:
    """A directory where the file should be is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_config(str(tmp_path))
    assert info.value.file == str(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: ")


def test_load_config_non_utf8(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are a ConfigError naming the file and the line they are on."""
    path = tmp_path / "bad.toml"
    path.write_bytes(b'[programs.web]\ncommand = ["x"]\n# caf\xe9\n')
    with pytest.raises(ConfigError, match="not valid UTF-8") as info:
        load_config(str(path))
    assert info.value.file == str(path)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: ")


def test_load_config_reports_the_file_in_validation_errors(tmp_path: Path) -> None:
    """Errors found while validating a loaded file name that file."""
    path = tmp_path / "h.toml"
    path.write_text(PROGRAM + "bogus = 1\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:3: programs\.web\.bogus: "):
        load_config(str(path))


def test_run_dir_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    """run_dir naming a file (or a path below one) is refused with its line, not a traceback."""
    afile = tmp_path / "plain"
    afile.write_text("x")
    for target, what in ((afile, "is not a directory"), (afile / "sub", "is inside")):
        cfg = tmp_path / "heartline.toml"
        text = f'[daemon]\nrun_dir = "{target}" # <-\n'
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=what) as info:
            load_config(str(cfg))
        assert info.value.key == "daemon.run_dir"
        assert info.value.line == marked_line(text)
