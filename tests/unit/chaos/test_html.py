"""The HTML report of a chaos result document: structure, escaping, self-containment, and that
no document within the schema (with nulls and odd strings) breaks it."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heartline.chaos import render_html

INJECTION = "<script>alert('x')</script> & \"quoted\" 'single'"

SOURCE = """\
title = "SIGKILL a supervised program five times"

[targets.web]
kind = "program"
names = ["web"]

[probes.http]
kind = "http"
what = "http://127.0.0.1:18080/"   # body must contain "ok" & status < 400

[[faults]]
name = "kill"
kind = "kill"
rounds = 5
"""


def realistic_result() -> dict[str, Any]:
    """Five rounds on a supervised program watched by two probes; round 4 (a 2 s hang) took
    longer than its 2 s deadline to recover, so the run deviated."""
    rounds: list[tuple[str, str, float, float | None, float, float, str]] = [
        # name, kind, applied, ended, detected, recovered, outcome
        ("kill", "kill", 1.02, 1.02, 0.08, 0.41, "recovered"),
        ("kill", "kill", 3.01, 3.01, 0.07, 0.38, "recovered"),
        ("kill", "kill", 5.03, 5.03, 0.09, 0.44, "recovered"),
        ("hang", "stop", 7.00, 9.00, 0.11, 2.61, "deviated"),
        ("kill", "kill", 11.02, 11.02, 0.06, 0.52, "recovered"),
    ]
    faults = []
    http: list[list[object]] = [[0.31, True, ""]]
    status: list[list[object]] = [[0.22, True, ""]]
    for number, (name, kind, applied, ended, detected, recovered, outcome) in enumerate(
        rounds, start=1
    ):
        faults.append(
            {
                "round": number,
                "name": name,
                "kind": kind,
                "targets": ["web"],
                "detail": "SIGSTOP pid 4250 for 2 s"
                if kind == "stop"
                else f"SIGKILL pid {4240 + number}",
                "applied": applied,
                "ended": ended,
                "undone": ended if kind == "stop" else None,
                "detected": detected,
                "recovered": recovered,
                "deadline": 2.0,
                "outcome": outcome,
                "availability": round(1 - recovered / 12.4, 3),
                "error": "",
            }
        )
        http += [
            [round(applied + detected, 2), False, "connection refused"],
            [round(applied + recovered, 2), True, ""],
        ]
        status += [
            [round(applied + detected - 0.03, 2), False, "web is starting (restart 1)"],
            [round(applied + recovered - 0.1, 2), True, ""],
        ]
    return {
        "version": 1,
        "title": "SIGKILL a supervised program five times",
        "file": "examples/chaos/kill-program.toml",
        "source": SOURCE,
        "started_at": "2026-12-04T21:30:00Z",
        "duration": 12.4,
        "outcome": "deviated",
        "reason": "round 4 (hang): not recovered within the 2 s deadline (2.61 s)",
        "resolution": 0.1,
        "targets": {"web": {"kind": "program", "names": ["web"], "where": "local"}},
        "probes": {
            "http": {"kind": "http", "what": "http://127.0.0.1:18080/", "timeout": 1.0},
            "status": {"kind": "status", "what": "web", "timeout": 0.5},
        },
        "steady": {
            "before": {"ok": True, "probes": {"http": True, "status": True}, "t": 0.3},
            "after": {"ok": True, "probes": {"http": True, "status": True}, "t": 12.3},
        },
        "faults": faults,
        "timeline": {"http": http, "status": status},
        "samples": {"http": {"count": 124, "ok": 79}, "status": {"count": 124, "ok": 82}},
        "summary": {
            "rounds": 5,
            "detect": {"p50": 0.08, "p95": 0.11, "max": 0.11},
            "recover": {"p50": 0.44, "p95": 2.61, "max": 2.61},
            "availability": 0.67,
        },
    }


VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "source"}


class Balance(HTMLParser):
    """Checks that every element is closed, in order, and collects text and attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: dict[str, int] = {}
        self.attrs: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []
        self.classes: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._count(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._count(tag, attrs)

    def _count(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for name, value in attrs:
            self.attrs.append((tag, name, value))
            if name == "class" and value:
                for css in value.split():
                    self.classes.setdefault(css, []).append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Balance:
    parser = Balance()
    parser.feed(page)
    parser.close()
    return parser


def assert_well_formed(page: str) -> Balance:
    parsed = parse(page)
    assert parsed.errors == []
    assert parsed.stack == []
    assert page.startswith("<!DOCTYPE html>")
    for tag in ("html", "head", "body", "main", "style"):
        assert parsed.tags.get(tag) == 1, tag
    head = page[: page.index("</head>")]
    assert head.count("<title>") == 1 and head.count("</title>") == 1
    assert "script" not in parsed.tags
    return parsed


def loaded_references(page: str) -> list[str]:
    """Every reference to another place that a browser could load or follow."""
    parsed = parse(page)
    found = [
        f"{tag} {name}={value}"
        for tag, name, value in parsed.attrs
        if name in {"src", "href", "xlink:href", "action", "srcset", "poster", "data"}
        and value
        and not value.startswith("#")
    ]
    found += re.findall(r"url\(\s*['\"]?(?!#)[^)]*\)", page)
    found += re.findall(r"@import", page)
    return found


def external_references(page: str, shown_as_text: list[str]) -> list[str]:
    """Loaded references, and any URL in the page but those the document carries as text."""
    rest = page
    for text in shown_as_text:
        rest = rest.replace(text, "")
    return loaded_references(page) + re.findall(r"(?:https?:)?//[a-z0-9.-]+", rest)


def visible_text(page: str) -> str:
    parsed = parse(page)
    return " ".join(" ".join(parsed.text).split())


def test_realistic_document_has_every_part() -> None:
    """A five-round run with two probes and one deviated round: the badge says deviated, the
    reason is shown, the fault table has five rows, the timeline two lanes and five fault
    marks, the summary's p50 / p95 / max are written out, and the source is in a <pre>."""
    page = render_html(realistic_result())
    parsed = assert_well_formed(page)
    text = visible_text(page)

    assert re.search(r'<span class="badge b-deviated" id="outcome"[^>]*>.*?deviated</span>', page)
    assert "round 4 (hang): not recovered within the 2 s deadline (2.61 s)" in text
    assert len(re.findall(r'<tr class="fault-row"', page)) == 5
    assert len(re.findall(r'<tr class="fault-row" data-outcome="deviated"', page)) == 1
    assert '<th scope="col">Error</th>' not in page  # no round has an error
    assert len(re.findall(r'<g class="lane"', page)) == 2
    assert len(re.findall(r'class="fault-instant"', page)) == 4
    assert len(re.findall(r'class="fault-window"', page)) == 1
    assert len(re.findall(r'class="steady-check"', page)) == 2
    # The status probe watches the program "web" by name, so its lane is under that target.
    assert re.search(r'<g class="group" data-target="web">', page)
    for label, value in (("Recover p50", "440 ms"), ("Recover p95", "2.61 s"),
                         ("Recover max", "2.61 s"), ("Detect p50", "80 ms")):  # fmt: skip
        assert f'{label}</span><span class="v">{value}</span>' in page
    assert "p50 440 ms" in text and "p95 2.61 s" in text and "max 2.61 s" in text
    assert parsed.tags["pre"] == 1
    assert "&quot;ok&quot; &amp; status &lt; 400" in page
    assert "2026-12-04 21:30:00 UTC" in text and "12.40 s" in text
    assert "examples/chaos/kill-program.toml" in text


def test_report_is_self_contained() -> None:
    """The page references nothing outside itself: no src/href to another place, no url() in
    CSS but fragment ones, no @import; the only URL in it is the probe's, shown as text."""
    page = render_html(realistic_result())
    assert external_references(page, ["http://127.0.0.1:18080/"]) == []
    assert "<script" not in page and "<link" not in page and "<img" not in page


KNOWN_ATTRIBUTES = set(
    [
        "class",
        "id",
        "lang",
        "charset",
        "name",
        "content",
        "http-equiv",
        "role",
        "aria-label",
        "aria-hidden",
        "href",
        "scope",
        "datetime",
        "viewbox",
        "width",
        "height",
        "x",
        "y",
        "x1",
        "x2",
        "y1",
        "y2",
        "r",
        "cx",
        "cy",
        "d",
        "transform",
        "fill",
        "fill-opacity",
        "stroke",
        "stroke-width",
        "stroke-opacity",
        "stroke-dasharray",
        "text-anchor",
        "patternunits",
        "patterntransform",
        "data-outcome",
        "data-round",
        "data-probe",
        "data-target",
        "data-when",
        "data-mark",
        "data-lanes",
        "data-span",
        "data-rounds",
    ]
)


def test_every_string_field_is_escaped() -> None:
    """A <script> placed in every string the document carries shows as text and never as an
    element; quotes cannot leave an attribute."""
    doc = realistic_result()
    doc["title"] = doc["reason"] = doc["file"] = doc["source"] = INJECTION
    doc["started_at"] = INJECTION
    doc["outcome"] = INJECTION
    doc["targets"] = {INJECTION: {"kind": INJECTION, "names": [INJECTION], "where": INJECTION}}
    doc["probes"] = {INJECTION: {"kind": INJECTION, "what": INJECTION, "target": INJECTION}}
    doc["timeline"] = {INJECTION: [[0.5, True, INJECTION], [1.1, False, INJECTION]]}
    doc["samples"] = {INJECTION: {"count": 3, "ok": 2}}
    doc["steady"]["before"]["probes"] = {INJECTION: True}
    for fault in doc["faults"]:
        for key in ("name", "kind", "detail", "outcome", "error", "round"):
            fault[key] = INJECTION
        fault["targets"] = [INJECTION, INJECTION]
    doc["version"] = INJECTION
    page = render_html(doc)
    parsed = assert_well_formed(page)
    assert "<script" not in page
    # Quotes in a value cannot open a new attribute: only the renderer's own names appear.
    names = {name for _, name, _ in parsed.attrs}
    assert names - KNOWN_ATTRIBUTES == set()
    assert '<th scope="col">Error</th>' in page
    text = " ".join(parsed.text)
    assert text.count("<script>alert('x')</script>") >= 10


def test_no_faults_and_no_probes() -> None:
    """A run that applied nothing and watched nothing still renders, and says so."""
    doc = realistic_result()
    doc["faults"] = []
    doc["summary"] = {"rounds": 0}
    page = render_html(doc)
    assert_well_formed(page)
    text = visible_text(page)
    assert "No faults were applied." in text
    assert "No round has a time to recover to plot." in text

    page = render_html({"version": 1, "outcome": "errored", "reason": "probe http: no such host"})
    assert_well_formed(page)
    text = visible_text(page)
    assert "errored" in text and "probe http: no such host" in text
    assert "No probe states and no faults were recorded." in text


def test_nulls_and_a_probe_that_never_failed() -> None:
    """detected/recovered null show as a dash and "never"; a probe that never failed draws no
    failing band; zero duration does not divide by zero."""
    doc = realistic_result()
    doc["duration"] = 0
    doc["timeline"]["status"] = [[0.0, True, ""]]
    doc["faults"][1]["detected"] = None
    doc["faults"][1]["recovered"] = None
    doc["faults"][2]["recovered"] = None
    doc["summary"] = {}
    page = render_html(doc)
    assert_well_formed(page)
    lane = re.search(r'<g class="lane" data-probe="status">(.*?)</g>', page)
    assert lane is not None and 'class="fail"' not in lane.group(1)
    rows = re.findall(r'<tr class="fault-row".*?</tr>', page)
    assert ">\u2014</td>" in rows[1]
    assert ">never</td>" in rows[2]
    # The p50 / p95 / max come from the rounds themselves when the summary has none.
    assert 'Recover max</span><span class="v">2.61 s</span>' in page


def test_zero_everything() -> None:
    """A run with zero duration, every fault at t = 0 and every recovery 0 s renders."""
    doc = realistic_result()
    doc["duration"] = 0.0
    for fault in doc["faults"]:
        fault.update(applied=0.0, ended=0.0, undone=None, detected=0.0, recovered=0.0)
    doc["timeline"] = {"http": [[0.0, True, ""]]}
    doc["steady"] = {"before": {"ok": True, "t": 0}, "after": {"ok": False, "t": 0}}
    page = render_html(doc)
    assert_well_formed(page)
    assert 'data-span="1"' in page


def test_tiny_times() -> None:
    """A run whose every moment is a denormal fraction of a second renders, on a timeline
    that spans a millisecond (no scale of a power of ten that underflows)."""
    doc = realistic_result()
    tiny = 5e-324
    doc["duration"] = tiny
    doc["steady"] = {}
    doc["timeline"] = {"http": [[tiny, True, ""], [tiny * 2, False, "x"]]}
    for fault in doc["faults"]:
        fault.update(applied=tiny, ended=tiny, undone=None, detected=tiny, recovered=tiny)
    doc["summary"] = {}
    page = render_html(doc)
    assert_well_formed(page)
    assert 'data-span="0.001"' in page


@pytest.mark.parametrize("big", [1e15, 1.7e308])
def test_huge_and_negative_times(big: float) -> None:
    """Times far beyond any run (and negative ones) are written out in the tables and pinned
    to the charts' edges; no scale overflows to infinity."""
    doc = realistic_result()
    doc["duration"] = big
    doc["faults"][0].update(applied=-5.0, ended=big, recovered=big, deadline=big / 2)
    doc["faults"][1].update(recovered=-1.0, detected=big)
    doc["timeline"]["http"].append([big, False, "gone"])
    doc["timeline"]["status"].insert(0, [-big, False, "before the start"])
    doc["samples"] = {"http": {"count": 5e-324, "ok": big}}
    doc["summary"] = {"recover": {"p50": -3.0, "p95": big, "max": big}}
    page = render_html(doc)
    assert_well_formed(page)
    assert "inf" not in page.lower().replace("info", "")
    assert "nan" not in page


def test_hundreds_of_rounds_stay_small_and_readable() -> None:
    """500 rounds: every round is a table row, the file stays well under a megabyte and fault
    labels on the timeline are thinned to those that fit."""
    doc = realistic_result()
    base = doc["faults"][0]
    faults, http = [], [[0.2, True, ""]]
    for number in range(1, 501):
        applied = number * 2.0
        recovered = 0.3 + (number % 17) / 40
        faults.append(dict(base, round=number, applied=applied, ended=applied,
                           recovered=recovered, detail=f"SIGKILL pid {5000 + number}"))  # fmt: skip
        http += [[applied + 0.08, False, "connection refused"], [applied + recovered, True, ""]]
    doc.update(faults=faults, duration=1003.0, timeline={"http": http, "status": []})
    doc["summary"] = {"rounds": 500}
    page = render_html(doc)
    assert_well_formed(page)
    assert len(page) < 900_000, len(page)
    assert len(re.findall(r'<tr class="fault-row"', page)) == 500
    labels = re.findall(r'<text x="[\d.]+" y="[\d.]+" class="small halo">R\d+ kill</text>', page)
    assert 0 < len(labels) < 60
    assert 'class="scroll tall"' in page


def test_same_document_same_page() -> None:
    """Rendering is deterministic and does not change the document."""
    doc = realistic_result()
    kept = copy.deepcopy(doc)
    assert render_html(doc) == render_html(copy.deepcopy(doc))
    assert doc == kept


def test_badges_for_every_outcome() -> None:
    """Each run outcome has its own badge class and word; an unknown one is shown as given."""
    for outcome in ("passed", "deviated", "errored", "aborted", "later-kind"):
        page = render_html(dict(realistic_result(), outcome=outcome))
        css = outcome if outcome != "later-kind" else "other"
        assert re.search(rf'class="badge b-{css}" id="outcome"[^>]*>.*?{outcome}</span>', page)


# --- random documents ----------------------------------------------------------------------

odd_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "<",
            "&amp;",
            '"',
            "'",
            "</svg>",
            "]]>",
            "<!--",
            "\u202e",
            "\x00",
            INJECTION,
            "a" * 300,
        ]
    ),
)
number = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-5, max_value=1e4),
    st.sampled_from([0.0, -0.0, 5e-324, 1e15, 1.7e308, -1.7e308]),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.booleans(),
)
scalar = st.one_of(st.none(), odd_text, number)


def keyed(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(odd_text, values, max_size=4)


fault_doc = st.fixed_dictionaries(
    {},
    optional={
        "round": st.one_of(number, odd_text),
        "name": scalar,
        "kind": scalar,
        "targets": st.one_of(scalar, st.lists(scalar, max_size=3)),
        "detail": scalar,
        "applied": number,
        "ended": number,
        "undone": number,
        "detected": number,
        "recovered": number,
        "deadline": number,
        "outcome": st.one_of(
            st.sampled_from(["recovered", "not-detected", "deviated", "errored", "aborted"]), scalar
        ),
        "availability": number,
        "error": scalar,
    },
)
steady_doc = st.fixed_dictionaries(
    {}, optional={"ok": st.one_of(st.booleans(), scalar), "probes": keyed(scalar), "t": number}
)
triplet = st.one_of(scalar, keyed(number))
result_doc = st.fixed_dictionaries(
    {},
    optional={
        "version": scalar,
        "title": scalar,
        "file": scalar,
        "source": scalar,
        "started_at": st.one_of(scalar, st.just("2026-12-04T21:30:00+02:00")),
        "duration": number,
        "outcome": st.one_of(st.sampled_from(["passed", "deviated", "errored", "aborted"]), scalar),
        "reason": scalar,
        "resolution": number,
        "targets": st.one_of(
            scalar,
            keyed(
                st.one_of(
                    scalar,
                    keyed(scalar),
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "kind": scalar,
                            "names": st.lists(odd_text, max_size=3),
                            "where": scalar,
                        },
                    ),
                )
            ),
        ),
        "probes": st.one_of(
            scalar,
            keyed(
                st.one_of(
                    scalar,
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "kind": scalar,
                            "what": scalar,
                            "timeout": number,
                            "target": scalar,
                        },
                    ),
                )
            ),
        ),
        "steady": st.one_of(
            scalar,
            st.fixed_dictionaries(
                {},
                optional={
                    "before": st.one_of(scalar, steady_doc),
                    "after": st.one_of(scalar, steady_doc),
                },
            ),
        ),
        "faults": st.one_of(scalar, st.lists(st.one_of(fault_doc, scalar), max_size=6)),
        "timeline": st.one_of(
            scalar,
            keyed(
                st.one_of(
                    scalar,
                    st.lists(
                        st.one_of(
                            scalar,
                            st.tuples(number, st.one_of(st.booleans(), scalar), scalar),
                            st.lists(scalar, max_size=4),
                        ),
                        max_size=8,
                    ),
                )
            ),
        ),
        "samples": st.one_of(scalar, keyed(st.one_of(scalar, keyed(number)))),
        "summary": st.one_of(
            scalar,
            st.fixed_dictionaries(
                {},
                optional={
                    "rounds": number,
                    "detect": triplet,
                    "recover": triplet,
                    "availability": number,
                },
            ),
        ),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(result_doc)
def test_random_documents_never_raise_and_stay_well_formed(doc: dict[str, Any]) -> None:
    """Any document shaped like a result (missing fields, nulls, NaN, odd strings, wrong types
    in places) renders without raising, to balanced HTML with one badge, no script element and
    nothing loaded from elsewhere."""
    page = render_html(doc)
    parsed = assert_well_formed(page)
    assert len(parsed.classes.get("badge", [])) == 1
    assert loaded_references(page) == []
