"""Whatever a configuration file holds, loading it ends in a Config or a one-line ConfigError.

Two generators: arbitrary text, and TOML documents built from random nested tables that mix the
real key names with junk and every TOML value type (serialised by heartline._util's TOML writer,
so the documents exercise table headers, dotted sub-tables and inline tables alike).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heartline._util import toml_string, toml_value
from heartline.config import Config, parse_config
from heartline.errors import ConfigError

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PROGRAM_KEYS = [
    "command", "shell", "env", "cwd", "user", "group", "umask", "numprocs", "autostart",
    "stop_signal", "stop_timeout", "after", "requires", "restart", "success_exit_codes",
    "prevent_restart_exit_codes", "backoff", "crash_loop", "ready_after", "log",
    "redirect_stderr",
]  # fmt: skip
SUB_KEYS = {
    "backoff": ["initial", "max", "factor", "jitter", "reset_after"],
    "crash_loop": ["max_starts", "window", "cooldown"],
    "log": ["max_size", "backups"],
}
DAEMON_KEYS = ["run_dir", "log_dir", "adopt_timeout"]


def emit(doc: dict[str, Any], headers: bool) -> str:
    """Serialise ``doc``; with ``headers``, nested tables get [a."b".c] headers, else inline."""
    lines: list[str] = []

    def table(path: list[str], t: dict[str, Any]) -> None:
        subs = []
        for k, v in t.items():
            if headers and isinstance(v, dict):
                subs.append((k, v))
            else:
                lines.append(f"{toml_string(k)} = {toml_value(v)}")
        for k, v in subs:
            lines.append("[" + ".".join(toml_string(p) for p in [*path, k]) + "]")
            table([*path, k], v)

    table([], doc)
    return "\n".join(lines) + "\n"


def test_emitter_round_trips_through_tomllib() -> None:
    """The emitter writes what tomllib reads back (the fuzz below depends on it)."""
    import tomllib

    doc = {
        "a": 1,
        "b": [1.5, 'x\n"\\\x7f', True, {"c": []}],
        "programs": {"we b": {"command": ["x"], "log": {"max_size": -0.0}}},
        "n": {"i": math.inf, "": "empty key"},
    }
    for headers in (False, True):
        assert tomllib.loads(emit(doc, headers)) == doc


# --- strategies ---------------------------------------------------------------------------

junk_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"]),
    max_size=12,
)
any_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"]),
    max_size=400,
)
names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,8}", fullmatch=True)
scalars = st.one_of(
    junk_text,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.booleans(),
    st.sampled_from(
        ["10s", "250ms", "0", "never", "TERM", "SIGKILL", "always", "on-failure", "022", "10MB"]
    ),
    st.sampled_from([0, 1, 2, 15, 255, 256, 1000, 1001, 4096, -1]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(junk_text | names, inner, max_size=4)
    ),
    max_leaves=12,
)


durations = st.one_of(
    st.sampled_from(["10s", "250ms", "0", "1.5m", "2h", "1d", "500us"]),
    st.integers(min_value=0, max_value=10**6),
    st.floats(min_value=0, max_value=1e6),
)
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "command": st.lists(st.sampled_from(["/bin/app", "--flag", "x" * 200, "é"]), min_size=1),
    "shell": st.booleans(),
    "env": st.dictionaries(names, st.one_of(names, st.integers(0, 9)), max_size=3),
    "cwd": names,
    "user": names,
    "group": names,
    "umask": st.sampled_from(["022", "077", 18, "0"]),
    "numprocs": st.integers(1, 3),
    "autostart": st.booleans(),
    "stop_signal": st.sampled_from(["TERM", "sigint", "HUP", 9, 15]),
    "stop_timeout": durations,
    "restart": st.sampled_from(["always", "on-failure", "never"]),
    "success_exit_codes": st.lists(st.integers(0, 255), max_size=3),
    "prevent_restart_exit_codes": st.lists(st.integers(0, 255), max_size=3),
    "ready_after": durations,
    "redirect_stderr": st.booleans(),
    "initial": durations,
    "max": durations,
    "factor": st.floats(min_value=1, max_value=10),
    "jitter": st.floats(min_value=0, max_value=1),
    "reset_after": durations,
    "max_starts": st.integers(0, 20),
    "window": durations,
    "cooldown": st.one_of(st.just("never"), durations),
    "max_size": st.sampled_from(["4KiB", "10MB", 4096, 65536]),
    "backups": st.integers(0, 5),
    "run_dir": names,
    "log_dir": names,
    "adopt_timeout": durations,
}


def one_in(draw: st.DrawFn, n: int) -> bool:
    """True about once in ``n`` draws.

    Hypothesis favours the simplest choice (index 0, small integers), so the rare outcome is
    the last index.
    """
    return draw(st.sampled_from(range(n))) == n - 1


def pick_keys(draw: st.DrawFn, real: list[str], most: int) -> list[str]:
    """Mostly real keys; about one time in thirty a junk one."""
    keys = draw(st.lists(st.sampled_from(real), max_size=most, unique=True))
    if one_in(draw, 30):
        keys.append(draw(junk_text))
    return keys


def value_for(draw: st.DrawFn, key: str) -> Any:
    """A plausible value for ``key`` nine times in ten, else any TOML value."""
    if key in PLAUSIBLE and not one_in(draw, 10):
        return draw(PLAUSIBLE[key])
    return draw(values)


@st.composite
def program_tables(draw: st.DrawFn, group_names: list[str]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    if not one_in(draw, 10):
        table["command"] = value_for(draw, "command")
    for key in pick_keys(draw, PROGRAM_KEYS, 6):
        if key in SUB_KEYS and not one_in(draw, 5):
            table[key] = {k: value_for(draw, k) for k in pick_keys(draw, SUB_KEYS[key], 4)}
        elif key in ("after", "requires") and group_names and not one_in(draw, 5):
            table[key] = draw(st.lists(st.sampled_from(group_names), max_size=3))
        else:
            table[key] = value_for(draw, key)
    if table.get("shell") is True and draw(st.booleans()):
        table["command"] = draw(names)
    return table


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    group_names = draw(st.lists(names, max_size=4, unique=True))
    if one_in(draw, 10):
        group_names.append(draw(junk_text))
    if draw(st.booleans()):
        doc["daemon"] = {k: value_for(draw, k) for k in pick_keys(draw, DAEMON_KEYS, 3)}
    if draw(st.booleans()):
        doc["defaults"] = draw(program_tables(group_names))
        doc["defaults"].pop("command", None)
    doc["programs"] = {n: draw(program_tables(group_names)) for n in group_names}
    if one_in(draw, 20):
        doc[draw(junk_text)] = draw(values)
    if one_in(draw, 20):
        doc[draw(st.sampled_from(["daemon", "defaults", "programs"]))] = draw(values)
    return doc


def check_outcome(text: str) -> None:
    try:
        cfg = parse_config(text, path="/fuzz/heartline.toml")
    except ConfigError as e:
        message = str(e)
        assert message.startswith("/fuzz/heartline.toml")
        assert "\n" not in message
        assert "\r" not in message
        assert e.reason
        if e.line is not None:
            assert 1 <= e.line <= text.count("\n") + 1
    else:
        assert isinstance(cfg, Config)
        for name, spec in cfg.programs.items():
            assert spec.name == name
            assert spec.command
            assert name in cfg.groups[spec.group]


@FUZZ
@given(any_text)
def test_arbitrary_text_gives_config_or_config_error(text: str) -> None:
    """Arbitrary text never raises anything but ConfigError, and its message is one line."""
    check_outcome(text)


TOML_BITS = st.sampled_from(
    [
        "[programs.a]", "[programs.b]", "[defaults]", "[daemon]", "[programs.a.backoff]",
        'command = ["x"]', 'command = "x"', "shell = true", 'after = ["b"]', 'requires = "a"',
        'stop_timeout = "1s"', "numprocs = 3", "x = 1", "[[programs]]", "=", "[", "]", '"',
        "log = { max_size = 4096 }", "# c", "", "crash_loop.cooldown = 'never'",
    ]
)  # fmt: skip


@FUZZ
@given(st.lists(st.one_of(TOML_BITS, junk_text), max_size=14))
def test_toml_like_lines_give_config_or_config_error(lines: list[str]) -> None:
    """Lines stitched from TOML fragments give a Config or a one-line ConfigError."""
    check_outcome("\n".join(lines))


@settings(FUZZ, max_examples=150)
@given(documents(), st.booleans())
def test_structured_documents_give_config_or_config_error(
    doc: dict[str, Any], headers: bool
) -> None:
    """Random tables of real and junk keys with values of every type give a Config or a
    one-line ConfigError that names the file, whether written with headers or inline."""
    check_outcome(emit(doc, headers))


@pytest.mark.parametrize(
    "text",
    ['"bad\\nkey" = 1\n', '[programs.a]\ncommand = ["x"]\nenv = { "A\\nB" = true }\n'],
    ids=["unknown-key", "env-name"],
)
def test_messages_stay_on_one_line_even_for_odd_key_names(text: str) -> None:
    """A key name holding a newline is shown escaped, keeping the error on one line."""
    check_outcome(text)
