"""Toxics as users write them: the accepted forms, their canonical text, and one-line errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heartline.chaos import Toxic
from heartline.errors import UsageError

FAST = settings(max_examples=300, deadline=None)


@pytest.mark.parametrize(
    ("text", "toxic"),
    [
        ("latency 200ms", Toxic("latency", delay=0.2)),
        ("latency 200ms jitter 50ms", Toxic("latency", delay=0.2, jitter=0.05)),
        ("latency 1.5s up", Toxic("latency", delay=1.5, direction="up")),
        ("latency 1s down jitter 10ms", Toxic("latency", delay=1.0, jitter=0.01, direction="down")),
        ("LATENCY 20ms BOTH", Toxic("latency", delay=0.02)),
        ("latency 0", Toxic("latency")),
        ("bandwidth 64KiB/s", Toxic("bandwidth", rate=65536)),
        ("bandwidth 1MB/s up", Toxic("bandwidth", rate=1_000_000, direction="up")),
        ("bandwidth 100b/s", Toxic("bandwidth", rate=100)),
        ("reset", Toxic("reset")),
        ("  blackhole  ", Toxic("blackhole")),
        ("timeout 2s", Toxic("timeout", after=2.0)),
        ("timeout 0", Toxic("timeout")),
        ("down", Toxic("down")),
    ],
)
def test_the_documented_forms_parse(text: str, toxic: Toxic) -> None:
    """Each written form gives the toxic it names; kinds and directions in any case."""
    assert Toxic.parse(text) == toxic


@pytest.mark.parametrize(
    ("toxic", "text"),
    [
        (Toxic("latency", delay=0.2, jitter=0.05), "latency 200ms jitter 50ms"),
        (Toxic("latency", delay=2.0, direction="up"), "latency 2000ms up"),
        (Toxic("bandwidth", rate=65536), "bandwidth 64KiB/s"),
        (Toxic("bandwidth", rate=3 * 1024**2, direction="down"), "bandwidth 3MiB/s down"),
        (Toxic("bandwidth", rate=1000), "bandwidth 1000B/s"),
        (Toxic("timeout", after=0.25), "timeout 250ms"),
        (Toxic("reset"), "reset"),
        (Toxic("blackhole"), "blackhole"),
        (Toxic("down"), "down"),
    ],
)
def test_str_gives_the_written_form_back(toxic: Toxic, text: str) -> None:
    """str() of a toxic is a form parse() reads back to the same toxic."""
    assert str(toxic) == text
    assert Toxic.parse(text) == toxic


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", "empty"),
        ("slow", "'slow'"),
        ("latency", "needs a delay"),
        ("latency 200", "needs a unit"),
        ("latency fast", "'fast'"),
        ("latency -5ms", "'-5ms'"),
        ("latency 200ms jitter", "jitter needs"),
        ("latency 200ms jitter 50ms jitter 1ms", "unexpected 'jitter'"),
        ("latency 200ms up down", "unexpected 'down'"),
        ("latency 200ms sideways", "'sideways'"),
        ("latency 400d", "365d"),
        ("bandwidth", "needs a rate"),
        ("bandwidth 64KiB", "per second"),
        ("bandwidth 0B/s", "at least 1B/s"),
        ("bandwidth lots/s", "'lots'"),
        ("bandwidth 1KiB/s up up", "unexpected 'up'"),
        ("bandwidth 1KiB/s left", "unexpected 'left'"),
        ("reset now", "'now'"),
        ("down 5s", "'5s'"),
        ("timeout", "needs one time"),
        ("timeout 2", "needs a unit"),
        ("timeout 2s 3s", "needs one time"),
    ],
)
def test_bad_forms_are_one_line_usage_errors(text: str, names: str) -> None:
    """A bad toxic is a UsageError of one line naming the bad part and listing the forms."""
    with pytest.raises(UsageError) as info:
        Toxic.parse(text)
    message = str(info.value)
    assert names in message
    assert "the forms are: latency 200ms" in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"kind": "slow"}, "unknown toxic kind"),
        ({"kind": "latency", "direction": "left"}, "unknown toxic direction"),
        ({"kind": "latency", "delay": -1.0}, "delay"),
        ({"kind": "latency", "delay": math.nan}, "delay"),
        ({"kind": "latency", "jitter": math.inf}, "jitter"),
        ({"kind": "latency", "delay": True}, "delay"),
        ({"kind": "bandwidth"}, "at least 1 byte"),
        ({"kind": "bandwidth", "rate": 1.5}, "whole bytes"),
        ({"kind": "reset", "delay": 1.0}, "no delay"),
        ({"kind": "latency", "rate": 10}, "no rate"),
        ({"kind": "down", "after": 1.0}, "no 'after'"),
        ({"kind": "blackhole", "direction": "up"}, "no direction"),
        ({"kind": "timeout", "after": 400 * 86400.0}, "365 days"),
    ],
)
def test_the_constructor_refuses_inconsistent_toxics(fields: dict[str, object], names: str) -> None:
    """A toxic built in code is checked as a parsed one is: kinds, ranges, fields per kind."""
    with pytest.raises(UsageError, match=names):
        Toxic(**fields)  # type: ignore[arg-type]


def test_a_toxic_is_frozen() -> None:
    """A toxic cannot change under a proxy that holds it."""
    toxic = Toxic("latency", delay=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        toxic.delay = 0.2  # type: ignore[misc]


@FAST
@given(st.text(max_size=80))
def test_any_text_parses_or_is_a_one_line_usage_error(text: str) -> None:
    """Whatever the text, parse() gives a toxic or a one-line UsageError, nothing else."""
    try:
        toxic = Toxic.parse(text)
    except UsageError as e:
        assert len(str(e).splitlines()) == 1
    else:
        assert Toxic.parse(str(toxic)) == Toxic.parse(str(Toxic.parse(str(toxic))))


WORDS = st.sampled_from(
    ["latency", "bandwidth", "reset", "blackhole", "timeout", "down", "up", "both", "jitter",
     "0", "1", "200", "200ms", "1.5s", "0.001us", "3m", "64KiB/s", "1b/s", "0B/s", "10GB/s",
     "1e3ms", "-1s", ".5s", "1..2s", "ms", "/s", "KiB/s", "9999999999999999999999d"]
)  # fmt: skip


@FAST
@given(st.lists(WORDS, max_size=6), st.sampled_from([" ", "  ", "\t"]))
def test_near_miss_forms_parse_or_fail_cleanly(words: list[str], sep: str) -> None:
    """Sequences of the grammar's own words (mostly near misses) give a toxic or a one-line
    UsageError; a toxic they give reads back from its own text."""
    try:
        toxic = Toxic.parse(sep.join(words))
    except UsageError as e:
        assert len(str(e).splitlines()) == 1
    else:
        assert str(Toxic.parse(str(toxic))) == str(toxic)


SECONDS = st.floats(min_value=0, max_value=86400.0, allow_nan=False)
TOXICS = st.one_of(
    st.builds(
        Toxic,
        st.just("latency"),
        delay=SECONDS,
        jitter=SECONDS,
        direction=st.sampled_from(["up", "down", "both"]),
    ),
    st.builds(
        Toxic,
        st.just("bandwidth"),
        rate=st.integers(min_value=1, max_value=2**40),
        direction=st.sampled_from(["up", "down", "both"]),
    ),
    st.builds(Toxic, st.just("timeout"), after=SECONDS),
    st.sampled_from([Toxic("reset"), Toxic("blackhole"), Toxic("down")]),
)


@FAST
@given(TOXICS)
def test_every_toxic_reads_back_from_its_text(toxic: Toxic) -> None:
    """str() then parse() gives the same toxic, times to the microsecond."""
    back = Toxic.parse(str(toxic))
    assert str(back) == str(toxic)
    assert (back.kind, back.rate, back.direction) == (toxic.kind, toxic.rate, toxic.direction)
    for name in ("delay", "jitter", "after"):
        assert getattr(back, name) == pytest.approx(getattr(toxic, name), abs=1e-6)
