"""Experiment files: what a good one gives, and one-line errors with file, line and key for
bad ones; whatever a file holds, loading ends in an Experiment or a ConfigError."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heartline._util import toml_key, toml_value
from heartline.chaos import Experiment, load_experiment, parse_experiment
from heartline.errors import ConfigError

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples", "chaos")

GOOD = """\
title = "kill it"
[run]
rounds = 3
resolution = "50ms"
[blast_radius]
max_targets = 1
allow_last = true
[targets.web]
kind = "program"
program = "web"
[probes.http]
kind = "http"
url = "http://127.0.0.1:18080/health"
body = "ok"
[faults.kill]
kind = "kill"
target = "web"
"""


def test_a_good_file_gives_every_setting() -> None:
    """A good file's values come through, with defaults for what it leaves out."""
    exp = parse_experiment(GOOD, path="/x/e.toml")
    assert exp.title == "kill it"
    assert exp.run.rounds == 3 and exp.run.resolution == 0.05
    assert exp.run.recover_within == 30.0 and exp.run.lease == 30.0
    assert exp.blast.max_targets == 1 and exp.blast.allow_last
    assert exp.targets["web"].programs == ("web",)
    assert exp.probes["http"].status == 200 and exp.probes["http"].body == "ok"
    assert exp.steady == ("http",)
    assert [f.kind for f in exp.faults] == ["kill"] and exp.faults[0].signal == 9


def test_the_examples_are_valid() -> None:
    """Every experiment in examples/chaos loads."""
    from pathlib import Path

    names = [p.name for p in Path(EXAMPLES).glob("*.toml") if "[faults." in p.read_text()]
    assert "kill-program.toml" in names
    for name in names:
        assert isinstance(load_experiment(os.path.join(EXAMPLES, name)), Experiment)


@pytest.mark.parametrize(
    ("change", "line", "key", "words"),
    [
        (("[run]\nrounds = 3", "[run]\nrounds = 0"), 3, "run.rounds", "between 1 and"),
        (('resolution = "50ms"', 'resolution = "fast"'), 4, "run.resolution", "duration"),
        (('kind = "kill"', 'kind = "explode"'), 16, "faults.kill.kind", "one of"),
        (('target = "web"\n', 'target = "db"\n'), 17, "faults.kill.target", "no target"),
        (('url = "http://127', 'url = "ftp://127'), 13, "probes.http.url", "http://"),
        (("allow_last = true", "allow_lats = true"), 7, "blast_radius.allow_lats", "allow_last"),
        (('program = "web"', 'programme = "web"'), 10, "targets.web.programme", "unknown"),
    ],
)
def test_bad_values_name_file_line_and_key(
    change: tuple[str, str], line: int, key: str, words: str
) -> None:
    """A wrong value is a ConfigError of one line: file:line: key: what is wrong."""
    text = GOOD.replace(*change, 1)
    assert text != GOOD
    with pytest.raises(ConfigError) as e:
        parse_experiment(text, path="/x/e.toml")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"/x/e.toml:{line}: {key}: "), msg
    assert words in msg
    assert e.value.exit_code == 2


def test_missing_parts_are_named() -> None:
    """No faults, no probes, a fault kind that cannot hit its target, a partition off the lab:
    each says what to add or change."""
    no_faults = GOOD.split("[faults.kill]", maxsplit=1)[0]
    with pytest.raises(ConfigError, match="no faults"):
        parse_experiment(no_faults)
    with pytest.raises(ConfigError, match="cannot hit a program target"):
        parse_experiment(GOOD.replace('kind = "kill"', 'kind = "crash"'))
    hosts = GOOD + '[targets.box]\nkind = "hosts"\nhosts = ["a"]\nvia = "ssh"\n'
    with pytest.raises(ConfigError, match="lab hosts only"):
        parse_experiment(hosts + '[faults.cut]\nkind = "partition"\ntarget = "box"\n'
                         'for = "1s"\nother = "backend"\n')  # fmt: skip
    with pytest.raises(ConfigError, match="needs `for`"):
        parse_experiment(GOOD.replace('kind = "kill"', 'kind = "stop"'))


def test_supervise_programs_are_checked_as_the_daemon_would() -> None:
    """[supervise.programs.NAME] errors point at the experiment file's own key."""
    text = GOOD + "[supervise.programs.web]\ncommand = []\n"
    with pytest.raises(ConfigError) as e:
        parse_experiment(text, path="/x/e.toml")
    assert "supervise.programs.web.command" in str(e.value)
    ok = parse_experiment(GOOD + '[supervise.programs.web]\ncommand = ["true"]\ncwd = "."\n',
                          path="/x/e.toml")  # fmt: skip
    assert ok.supervised == ("web",)
    assert ok.supervise is not None and 'cwd = "/x"' in ok.supervise


def test_not_toml_and_not_utf8(tmp_path: Any) -> None:
    """Broken TOML names its line; bytes that are not UTF-8 are refused; a missing file says so."""
    with pytest.raises(ConfigError, match=r"e.toml:2: invalid TOML"):
        parse_experiment("title = 'x'\n[run\n", path="e.toml")
    bad = tmp_path / "b.toml"
    bad.write_bytes(b"title = '\xff'\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_experiment(str(bad))
    with pytest.raises(ConfigError, match="file not found"):
        load_experiment(str(tmp_path / "none.toml"))


KEYS = ["title", "run", "blast_radius", "targets", "probes", "faults", "steady", "lab",
        "supervise", "kind", "program", "target", "rounds", "resolution", "url", "for", "hosts",
        "via", "pick", "count", "other", "port", "toxic", "size", "path", "signal", "x"]  # fmt: skip
VALUES = st.recursive(
    st.none().map(lambda _: "s")
    | st.sampled_from(["kill", "program", "web", "hosts", "lab", "1s", "http://h/", "a:1"])
    | st.integers(-5, 70000) | st.booleans() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner,
                                                                max_size=4),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_any_document_loads_or_gives_one_line(doc: dict[str, Any]) -> None:
    """Random documents from the real keys and every value type never raise anything but a
    one-line ConfigError."""
    text = "\n".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items())
    try:
        parse_experiment(text, path="f.toml")
    except ConfigError as e:
        assert "\n" not in str(e)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_loads_or_gives_one_line(text: str) -> None:
    """Arbitrary text never raises anything but a one-line ConfigError."""
    try:
        parse_experiment(text, path="f.toml")
    except ConfigError as e:
        assert "\n" not in str(e)
