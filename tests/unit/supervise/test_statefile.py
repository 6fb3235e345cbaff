"""The state file reader: any content gives checked records or nothing, never an exception."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from heartline.supervise._statefile import PID_MAX, Record, Saved, dump, parse

BOOT = "boot-1"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)

FIELDS = ["pid", "start_time", "pipes", "restarts", "started", "spec", "others", "intent",
          "state", "detail", "last_exit"]  # fmt: skip


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    good: dict[str, Any] = {
        "pid": draw(st.integers(1, PID_MAX)),
        "start_time": draw(st.integers(0, 2**40)),
        "pipes": [draw(st.integers(0, 2**32)), draw(st.integers(0, 2**32))],
        "restarts": draw(st.integers(0, 100)),
        "started": draw(st.floats(0, 2e9)),
        "spec": "0123456789abcdef",
    }
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        good[key] = draw(json_values)
    return good


def _check(saved: Saved) -> None:
    assert isinstance(saved, Saved)
    for rec in saved.records.values():
        assert isinstance(rec, Record)
        assert isinstance(rec.restarts, int) and rec.restarts >= 0
        if rec.pid is not None:
            assert 1 <= rec.pid <= PID_MAX
            assert isinstance(rec.start_time, int)
            assert all(isinstance(i, int) and i >= 0 for i in rec.pipes)
        for pid, ticks in rec.others:
            assert 1 <= pid <= PID_MAX and isinstance(ticks, int)
    for pid, ticks in saved.strays:
        assert 1 <= pid <= PID_MAX and isinstance(ticks, int)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), records(), max_size=4), json_values)
def test_parse_checks_every_record_and_never_raises(programs: dict[str, Any], junk: Any) -> None:
    """Records with any field of any type: each is kept checked or dropped, nothing raises."""
    doc = {"version": 2, "boot_id": BOOT, "notify": junk, "programs": programs}
    _check(parse(json.dumps(doc).encode(), boot_id=BOOT))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_parse_survives_arbitrary_bytes(data: bytes) -> None:
    """Any bytes at all (torn, binary, other JSON shapes) give a Saved, maybe empty."""
    _check(parse(data, boot_id=BOOT))


def test_deeply_nested_json_is_refused_quietly() -> None:
    """A pathologically nested document is not a RecursionError."""
    assert parse(b"[" * 100_000 + b"]" * 100_000, boot_id=BOOT).records == {}


def test_a_bad_record_keeps_the_others_and_salvages_its_process() -> None:
    """One unusable record is dropped alone; its sound pid is kept as a process to stop."""
    doc = {
        "boot_id": BOOT,
        "programs": {
            "ok": {"pid": 10, "start_time": 5, "pipes": [1, 2], "restarts": 3, "started": 1.0},
            "bad": {"pid": 11, "start_time": 6, "pipes": 5, "restarts": 0},
        },
    }
    saved = parse(json.dumps(doc).encode(), boot_id=BOOT)
    assert list(saved.records) == ["ok"] and saved.records["ok"].restarts == 3
    assert saved.strays == [(11, 6)]


def test_records_of_another_boot_are_ignored() -> None:
    """After a reboot every recorded pid is meaningless."""
    doc = {"boot_id": "other", "programs": {"a": {"pid": 10, "start_time": 5}}}
    assert parse(json.dumps(doc).encode(), boot_id=BOOT).records == {}


def test_dump_and_parse_round_trip() -> None:
    """What the daemon writes, the next one reads back unchanged."""
    records = {
        "web": Record(
            restarts=2,
            pid=42,
            start_time=99,
            pipes=(7, 8),
            started=1.5,
            spec="abcd",
            others=[(43, 100)],
            intent="restart",
        ),
        "job": Record(
            restarts=1,
            state="exited",
            detail="exit 0",
            last_exit={"reason": "exit", "code": 0, "signal": None, "detail": ""},
        ),
    }
    notify = "@heartline/notify/" + "ab" * 16
    saved = parse(dump(boot_id=BOOT, daemon_pid=1, notify=notify, records=records), boot_id=BOOT)
    assert saved.notify == notify
    assert saved.records == records
