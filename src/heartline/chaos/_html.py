"""The HTML report of a chaos experiment: one self-contained file from a result document.

The page carries its own CSS and draws its charts as inline SVG; it loads nothing (no fonts, no
scripts, no images), so it opens the same from a CI artefact, an e-mail or a machine with no
network. Hover titles (SVG ``<title>``) give the details; everything is readable without them.

The result document comes from the runner, but a report is also rendered from files kept for
months, so every field is read defensively: a missing, null or oddly typed field shows as a dash
and never raises. The same document always renders to the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

__all__ = ["render_html"]

#: The SVG coordinate width; the charts scale to the page's width (``width="100%"``).
_W = 1000.0
#: Left column of the timeline, where the lane names are.
_LABEL_W = 190.0
_PAD_R = 18.0
_DASH = "\u2014"
#: The widest scale a chart draws (about 30 years): a time beyond it is pinned to the chart's
#: edge (the tables still write it out), and no scale can overflow to infinity.
_SCALE_MAX = 1e9
#: The narrowest: a chart spans at least a millisecond (powers of ten below it underflow).
_SCALE_MIN = 1e-3

#: Okabe-Ito colours, told apart by most colour-blind readers; every state also has a word.
_HEALTHY = "#009E73"
_FAILING = "#D55E00"
_FAULT = "#E69F00"
_STEADY = "#0072B2"
_UNKNOWN = "#e4e7eb"

_OUTCOMES: dict[str, tuple[str, str]] = {
    "passed": ("\u2713", "passed"),
    "deviated": ("!", "deviated"),
    "errored": ("\u2717", "errored"),
    "aborted": ("\u25a0", "aborted"),
}
_FAULT_OUTCOMES = {"recovered", "not-detected", "deviated", "errored", "aborted"}


# --- reading the document -------------------------------------------------------------------


def _str(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return ""


def _num(value: object) -> float | None:
    """A finite number, or None (null, a string, a bool, NaN or an infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _map(value: object) -> Mapping[str, object]:
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    return {}


def _seq(value: object) -> Sequence[object]:
    if isinstance(value, list | tuple):
        return value
    return ()


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _names(value: object) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    return [s for s in (_str(v) for v in _seq(value)) if s]


@dataclass
class _Fault:
    index: int
    round: str
    name: str
    kind: str
    targets: list[str]
    detail: str
    applied: float | None
    ended: float | None
    undone: float | None
    detected: float | None
    recovered: float | None
    deadline: float | None
    outcome: str
    availability: float | None
    error: str

    @property
    def end(self) -> float | None:
        """When the fault stopped acting: undone if it was undone, else when it ended."""
        for moment in (self.undone, self.ended):
            if moment is not None:
                return moment
        return None

    @property
    def label(self) -> str:
        head = f"R{self.round}" if self.round else f"#{self.index + 1}"
        return f"{head} {self.name or self.kind or 'fault'}"


@dataclass
class _Probe:
    name: str
    kind: str = ""
    what: str = ""
    timeout: float | None = None
    group: str | None = None
    #: (t, healthy, detail), sorted by t.
    events: list[tuple[float, bool, str]] = field(default_factory=list)
    count: float | None = None
    ok: float | None = None
    before: bool | None = None
    after: bool | None = None


@dataclass
class _Doc:
    version: str
    title: str
    file: str
    source: str | None
    started_at: str
    duration: float | None
    outcome: str
    reason: str
    resolution: float | None
    targets: dict[str, Mapping[str, object]]
    probes: list[_Probe]
    steady_before: Mapping[str, object]
    steady_after: Mapping[str, object]
    faults: list[_Fault]
    summary: Mapping[str, object]

    @property
    def span(self) -> float:
        """The timeline's right end: the run's duration, or the latest moment it mentions."""
        moments = [
            self.duration,
            _num(self.steady_before.get("t")),
            _num(self.steady_after.get("t")),
        ]
        for fault in self.faults:
            moments += [fault.applied, fault.end]
            if fault.applied is not None:
                moments += [fault.applied + (fault.recovered or 0.0)]
        for probe in self.probes:
            moments += [t for t, _, _ in probe.events]
        known = [m for m in moments if m is not None and m > 0]
        span = min(max(known, default=0.0), _SCALE_MAX)
        return max(span, _SCALE_MIN) if span > 0 else 1.0


def _read(result: Mapping[str, object]) -> _Doc:
    result = _map(result)
    targets = {name: _map(spec) for name, spec in _map(result.get("targets")).items()}
    steady = _map(result.get("steady"))
    before, after = _map(steady.get("before")), _map(steady.get("after"))
    timeline = _map(result.get("timeline"))
    samples = _map(result.get("samples"))

    probes: dict[str, _Probe] = {}
    for name, given in _map(result.get("probes")).items():
        spec = _map(given)
        probes[name] = _Probe(
            name=name,
            kind=_str(spec.get("kind")),
            what=_str(spec.get("what")),
            timeout=_num(spec.get("timeout")),
            group=_group_of(spec, targets),
        )
    # A probe seen only in the timeline, the samples or a steady check still gets its lane.
    for seen in (timeline, samples, _map(before.get("probes")), _map(after.get("probes"))):
        for name in seen:
            probes.setdefault(name, _Probe(name=name))
    for name, probe in probes.items():
        events = []
        for entry in _seq(timeline.get(name)):
            row = _seq(entry)
            t = _num(row[0]) if row else None
            healthy = _bool(row[1]) if len(row) > 1 else None
            if t is None or healthy is None:
                continue
            events.append((t, healthy, _str(row[2]) if len(row) > 2 else ""))
        probe.events = sorted(events, key=lambda e: e[0])
        counts = _map(samples.get(name))
        probe.count, probe.ok = _num(counts.get("count")), _num(counts.get("ok"))
        probe.before = _bool(_map(before.get("probes")).get(name))
        probe.after = _bool(_map(after.get("probes")).get(name))

    faults = []
    for index, entry in enumerate(_seq(result.get("faults"))):
        if not isinstance(entry, Mapping):
            continue
        spec = _map(entry)
        round_ = spec.get("round")
        faults.append(
            _Fault(
                index=index,
                round=_str(round_) if not isinstance(round_, bool) else "",
                name=_str(spec.get("name")),
                kind=_str(spec.get("kind")),
                targets=_names(spec.get("targets")),
                detail=_str(spec.get("detail")),
                applied=_num(spec.get("applied")),
                ended=_num(spec.get("ended")),
                undone=_num(spec.get("undone")),
                detected=_num(spec.get("detected")),
                recovered=_num(spec.get("recovered")),
                deadline=_num(spec.get("deadline")),
                outcome=_str(spec.get("outcome")),
                availability=_num(spec.get("availability")),
                error=_str(spec.get("error")),
            )
        )
    source = result.get("source")
    return _Doc(
        version=_str(result.get("version")),
        title=_str(result.get("title")),
        file=_str(result.get("file")),
        source=source if isinstance(source, str) else None,
        started_at=_str(result.get("started_at")),
        duration=_num(result.get("duration")),
        outcome=_str(result.get("outcome")),
        reason=_str(result.get("reason")),
        resolution=_num(result.get("resolution")),
        targets=targets,
        probes=list(probes.values()),
        steady_before=before,
        steady_after=after,
        faults=faults,
        summary=_map(result.get("summary")),
    )


def _group_of(
    probe: Mapping[str, object], targets: Mapping[str, Mapping[str, object]]
) -> str | None:
    """The target a probe watches: named by the probe, or the one whose name it probes."""
    for key in ("target", "targets"):
        for name in _names(probe.get(key)):
            if name in targets:
                return name
    what = _str(probe.get("what"))
    if not what:
        return None
    for name, spec in targets.items():
        if what == name or what in _names(spec.get("names")):
            return name
    return None


# --- formatting -----------------------------------------------------------------------------


def _e(text: str) -> str:
    return escape(text, quote=True)


def _secs(value: float | None) -> str:
    """A duration for people: 80 ms, 1.43 s, 2 min 05 s; a dash for none."""
    if value is None or not math.isfinite(value):
        return _DASH
    sign, value = ("\u2212", -value) if value < 0 else ("", value)
    if value >= 1e7:
        text = f"{value:.3g} s"
    elif round(value * 1000) < 1000:
        text = f"{value * 1000:.0f} ms"
    elif value < 60:
        text = f"{value:.2f} s"
    elif value < 3600:
        minutes, seconds = divmod(round(value), 60)
        text = f"{minutes} min {seconds:02d} s"
    else:
        hours, rest = divmod(round(value), 3600)
        text = f"{hours} h {rest // 60:02d} min"
    return sign + text


def _at(value: float | None) -> str:
    """A moment on the run's clock: t = 1.43 s."""
    if value is None or not math.isfinite(value):
        return _DASH
    if abs(value) >= 1e7:
        return f"{value:.3g} s"
    return f"{value:.2f} s"


def _pct(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return _DASH
    if abs(value) >= 1e7:
        return f"{value * 100:.3g} %"
    return f"{value * 100:.1f} %"


def _n(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return _DASH
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _c(value: float) -> str:
    """An SVG coordinate: one decimal keeps the file small and the output stable."""
    return f"{value:.1f}"


def _when(started_at: str) -> str:
    if not started_at:
        return _DASH
    try:
        moment = datetime.fromisoformat(started_at)
    except ValueError:
        return _e(started_at)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
        shown = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    else:
        shown = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f'<time datetime="{_e(started_at)}">{_e(shown)}</time>'


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _nice_step(span: float, ticks: int) -> float:
    """A step of 1, 2 or 5 times a power of ten that cuts ``span`` into about ``ticks``."""
    raw = span / max(ticks, 1)
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    for mult in (1.0, 2.0, 5.0, 10.0):
        if raw <= mult * power:
            return mult * power
    return 10.0 * power


def _tick_label(value: float, step: float) -> str:
    if abs(value) >= 1e7:
        return f"{value:.3g}"
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def _ticks(hi: float, count: int) -> tuple[float, list[float]]:
    step = _nice_step(hi, count)
    n = min(int(hi / step + 1e-9), 50)
    return step, [i * step for i in range(n + 1)]


def _percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest rank, as the runner's summary uses."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# --- page -----------------------------------------------------------------------------------

_CSS = """
:root{color-scheme:light;--ink:#1f2328;--muted:#59636e;--line:#d8dee4;--card:#fff;--bg:#f6f7f9;
--ok:#00704f;--okbg:#e3f4ee;--fail:#a8420b;--failbg:#fcebe1;--warn:#7a5200;--warnbg:#fff3d4;
--err:#a4161a;--errbg:#fde7e7;--off:#4b525a;--offbg:#eceff2;--info:#005a8e;--infobg:#e3f0f9}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--ink);line-height:1.45;
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",
"Liberation Sans",sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px 20px 48px}
header.top{background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:20px 24px;margin-bottom:18px}
.kicker{margin:0 0 4px;color:var(--muted);font-size:13px;letter-spacing:.04em;
text-transform:uppercase}
h1{margin:0;font-size:24px;line-height:1.25;overflow-wrap:anywhere}
.headline{display:flex;flex-wrap:wrap;gap:10px 16px;align-items:center;margin-bottom:10px}
.badge{display:inline-flex;align-items:center;gap:6px;padding:4px 12px;border-radius:999px;
font-weight:700;font-size:14px;letter-spacing:.06em;text-transform:uppercase;border:2px solid}
.b-passed{color:var(--ok);background:var(--okbg);border-color:#009E73}
.b-deviated{color:var(--warn);background:var(--warnbg);border-color:#E69F00}
.b-errored{color:var(--err);background:var(--errbg);border-color:#d1242f}
.b-aborted,.b-other{color:var(--off);background:var(--offbg);border-color:#8c959f}
.reason{margin:6px 0 12px;padding:8px 12px;border-left:4px solid #8c959f;background:var(--offbg);
border-radius:0 6px 6px 0;overflow-wrap:anywhere}
.reason.r-deviated{border-color:#E69F00;background:var(--warnbg)}
.reason.r-errored{border-color:#d1242f;background:var(--errbg)}
dl.meta{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:10px 18px;
margin:12px 0 0}
dl.meta div{min-width:0}
dl.meta dt{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
dl.meta dd{margin:2px 0 0;font-weight:600;overflow-wrap:anywhere;font-variant-numeric:tabular-nums}
nav.toc{margin:14px 0 0;font-size:14px}
nav.toc a{color:var(--info);margin-right:14px;text-decoration:none}
nav.toc a:hover{text-decoration:underline}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 22px;
margin-bottom:18px}
h2{margin:0 0 4px;font-size:18px}
.sub{margin:0 0 12px;color:var(--muted);font-size:14px}
.empty{color:var(--muted);font-style:italic;margin:8px 0}
.scroll{overflow-x:auto}
.chart{display:block;width:100%;min-width:720px;height:auto;font-family:inherit}
.chart text{font-size:12px;fill:#24292f}
.chart .dim{fill:#59636e}
.chart .small{font-size:11px}
.chart .head{font-weight:700}
.chart .halo{paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin:10px 0 0;padding:0;list-style:none;
font-size:13px;color:var(--muted)}
.legend li{display:flex;align-items:center;gap:6px}
.sw{display:inline-block;width:22px;height:12px;border-radius:2px;border:1px solid rgba(0,0,0,.15)}
.sw-ok{background:#009E73}
.sw-fail{background:repeating-linear-gradient(45deg,#D55E00 0 4px,#e98a52 4px 7px)}
.sw-unk{background:#e4e7eb}
.sw-fault{background:rgba(230,159,0,.28);border-color:#E69F00}
.sw-instant{width:3px;background:#E69F00;border:0}
.sw-steady{width:0;height:14px;border:0;border-left:2px dashed #0072B2;border-radius:0}
.sw-rec{width:10px;height:10px;border-radius:50%;background:#0072B2;border:0}
table{border-collapse:collapse;width:100%;font-size:14px;font-variant-numeric:tabular-nums}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;
background:#f6f8fa;position:sticky;top:0;z-index:1}
tbody th{font-weight:600}
tr.overall th,tr.overall td{border-top:2px solid var(--line);font-weight:700}
td.num,th.num{text-align:right;white-space:nowrap}
td.detail{min-width:11em;max-width:320px;overflow-wrap:anywhere}
td.error{min-width:14em;max-width:300px;overflow-wrap:anywhere;color:var(--err)}
tbody tr:hover{background:#f6f8fa}
.tall{max-height:640px;overflow:auto;border:1px solid var(--line);border-radius:6px}
.late{color:var(--fail);font-weight:700}
.pill{display:inline-block;padding:1px 8px;border-radius:999px;font-size:12px;font-weight:700;
white-space:nowrap;border:1px solid}
.o-recovered,.s-ok{color:var(--ok);background:var(--okbg);border-color:#7cc8ad}
.o-deviated{color:var(--warn);background:var(--warnbg);border-color:#e6b85c}
.o-errored,.s-fail{color:var(--err);background:var(--errbg);border-color:#f0a3a3}
.o-not-detected{color:var(--info);background:var(--infobg);border-color:#8cbfe0}
.o-aborted,.o-other,.s-none{color:var(--off);background:var(--offbg);border-color:#c4ccd4}
.stats{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;
margin:0 0 14px}
.stat{border:1px solid var(--line);border-radius:8px;padding:8px 12px}
.stat .k{display:block;color:var(--muted);font-size:12px;text-transform:uppercase;
letter-spacing:.04em}
.stat .v{display:block;font-size:20px;font-weight:700;font-variant-numeric:tabular-nums}
pre.source{margin:0;padding:14px 16px;background:#f6f8fa;border:1px solid var(--line);
border-radius:8px;overflow:auto;max-height:720px;font:13px/1.5 ui-monospace,SFMono-Regular,
"SF Mono",Menlo,Consolas,"Liberation Mono",monospace;white-space:pre;tab-size:4}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;
font-size:.92em}
footer{color:var(--muted);font-size:12px;text-align:center}
@media (max-width:640px){main{padding:12px 8px 32px}section,header.top{padding:14px}
h1{font-size:20px}}
@media print{body{background:#fff}section,header.top{break-inside:avoid;border-color:#bbb}
.tall{max-height:none;overflow:visible}}
"""


def render_html(result: Mapping[str, object]) -> str:
    """The report of one experiment's result document, as one self-contained HTML page.

    It never raises on a document that is a mapping: what is missing or malformed is shown as
    missing. The same document gives the same page, byte for byte.
    """
    doc = _read(result)
    outcome_class = doc.outcome if doc.outcome in _OUTCOMES else "other"
    page_title = f"{doc.outcome or 'result'} \u00b7 {doc.title or doc.file or 'chaos experiment'}"
    parts = [
        "<!DOCTYPE html>\n",
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        # A report must not reach out: nothing may load, even if a string slipped through.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">\n",
        f"<title>{_e(page_title)} \u2014 heartline chaos</title>\n",
        f"<style>{_CSS}</style>\n</head>\n",
        f'<body class="outcome-{outcome_class}">\n<main>\n',
        _header(doc),
        _timeline_section(doc),
        _faults_section(doc),
        _recovery_section(doc),
        _steady_section(doc),
        _source_section(doc),
        _footer(doc),
        "</main>\n</body>\n</html>\n",
    ]
    return "".join(parts)


def _badge(outcome: str) -> str:
    icon, word = _OUTCOMES.get(outcome, ("?", outcome or "unknown"))
    css = outcome if outcome in _OUTCOMES else "other"
    return (
        f'<span class="badge b-{css}" id="outcome" data-outcome="{_e(outcome)}">'
        f'<span aria-hidden="true">{icon}</span>{_e(word)}</span>'
    )


def _header(doc: _Doc) -> str:
    title = doc.title or doc.file or "Chaos experiment"
    meta = [
        ("Started", _when(doc.started_at)),
        ("Duration", _e(_secs(doc.duration))),
        ("File", f"<code>{_e(doc.file)}</code>" if doc.file else _DASH),
    ]
    rounds = _num(doc.summary.get("rounds"))
    meta.append(("Rounds", _e(_n(rounds if rounds is not None else float(len(doc.faults))))))
    availability = _num(doc.summary.get("availability"))
    if availability is not None:
        meta.append(("Availability", _e(_pct(availability))))
    if doc.resolution is not None:
        meta.append(("Probe resolution", _e(_secs(doc.resolution))))
    if doc.targets:
        shown = []
        for name, spec in doc.targets.items():
            kind = _str(spec.get("kind"))
            where = _str(spec.get("where"))
            extra = " \u00b7 ".join(x for x in (kind, where) if x)
            shown.append(_e(name) + (f' <span class="dim">({_e(extra)})</span>' if extra else ""))
        meta.append(("Targets", ", ".join(shown)))
    items = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in meta)
    reason = ""
    if doc.reason:
        reason = f'<p class="reason r-{_e(doc.outcome)}" id="reason">{_e(doc.reason)}</p>\n'
    toc = (
        '<nav class="toc" aria-label="Sections"><a href="#timeline">Timeline</a>'
        '<a href="#faults">Faults</a><a href="#recovery">Time to recover</a>'
        '<a href="#steady">Steady state</a><a href="#source">The experiment as run</a></nav>'
    )
    return (
        '<header class="top">\n<p class="kicker">heartline chaos experiment</p>\n'
        f'<div class="headline"><h1>{_e(title)}</h1>{_badge(doc.outcome)}</div>\n'
        f'{reason}<dl class="meta">{items}</dl>\n{toc}\n</header>\n'
    )


# --- timeline -------------------------------------------------------------------------------

_STEADY_ROW = 20.0
_FAULT_ROW = 24.0
_GROUP_ROW = 22.0
_LANE = 24.0
_BAR = 14.0
_AXIS = 34.0


def _timeline_section(doc: _Doc) -> str:
    body = _timeline_svg(doc) if doc.probes or doc.faults else ""
    if not body:
        body = '<p class="empty">No probe states and no faults were recorded.</p>'
    legend = (
        '<ul class="legend">'
        '<li><span class="sw sw-ok"></span>healthy</li>'
        '<li><span class="sw sw-fail"></span>failing</li>'
        '<li><span class="sw sw-unk"></span>no state yet</li>'
        '<li><span class="sw sw-fault"></span>fault window (applied \u2192 ended / undone)</li>'
        '<li><span class="sw sw-instant"></span>instant fault</li>'
        '<li><span class="sw sw-rec"></span>recovered</li>'
        '<li><span class="sw sw-steady"></span>steady-state check</li></ul>'
    )
    return (
        '<section id="timeline">\n<h2>Timeline</h2>\n'
        '<p class="sub">Seconds since the run started. One lane per probe; hover a band for '
        "its details.</p>\n"
        f'<div class="scroll">{body}</div>\n{legend}\n</section>\n'
    )


def _lane_groups(doc: _Doc) -> list[tuple[str | None, list[_Probe]]]:
    """Probes under the targets they watch, in the targets' order; the rest last."""
    if not any(p.group for p in doc.probes):
        return [(None, list(doc.probes))]
    groups: list[tuple[str | None, list[_Probe]]] = []
    for target in doc.targets:
        members = [p for p in doc.probes if p.group == target]
        if members:
            groups.append((target, members))
    rest = [p for p in doc.probes if p.group is None]
    if rest:
        groups.append(("", rest))
    return groups


def _timeline_svg(doc: _Doc) -> str:
    span = doc.span
    plot_w = _W - _LABEL_W - _PAD_R
    groups = _lane_groups(doc)
    lanes = sum(len(members) for _, members in groups)
    headed = sum(1 for name, _ in groups if name is not None)
    top = _STEADY_ROW + _FAULT_ROW
    lanes_h = headed * _GROUP_ROW + lanes * _LANE
    height = top + max(lanes_h, _LANE) + _AXIS

    def x(t: float) -> float:
        return _LABEL_W + min(max(t, 0.0), span) / span * plot_w

    out = [
        f'<svg class="chart timeline" viewBox="0 0 {_c(_W)} {_c(height)}" width="100%" '
        f'role="img" aria-label="Timeline of probe states and faults" '
        f'data-lanes="{lanes}" data-span="{span:.6g}">',
        "<defs>"
        f'<pattern id="hl-fail" width="7" height="7" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="7" height="7" fill="{_FAILING}"/>'
        '<rect width="3" height="7" fill="#ffffff" fill-opacity="0.3"/></pattern>'
        "</defs>",
    ]
    # Grid and axis first so that everything else lies over them.
    step, ticks = _ticks(span, 10)
    axis_y = top + max(lanes_h, _LANE)
    out.append('<g class="axis">')
    for tick in ticks:
        tx = _c(x(tick))
        out.append(
            f'<line x1="{tx}" y1="{_c(top)}" x2="{tx}" y2="{_c(axis_y + 4)}" '
            'stroke="#d8dee4" stroke-width="1"/>'
            f'<text x="{tx}" y="{_c(axis_y + 17)}" text-anchor="middle" class="dim">'
            f"{_tick_label(tick, step)}</text>"
        )
    out.append(
        f'<line x1="{_c(_LABEL_W)}" y1="{_c(axis_y)}" x2="{_c(_LABEL_W + plot_w)}" '
        f'y2="{_c(axis_y)}" stroke="#8c959f" stroke-width="1"/>'
        f'<text x="{_c(_LABEL_W + plot_w)}" y="{_c(axis_y + 31)}" text-anchor="end" '
        'class="dim small">seconds since start</text></g>'
    )
    out.append(
        f'<text x="8" y="{_c(_STEADY_ROW - 6)}" class="dim small">steady state</text>'
        f'<text x="8" y="{_c(top - 8)}" class="dim small">faults</text>'
    )

    # Lanes.
    y = top
    for group, members in groups:
        if group is not None:
            spec = doc.targets.get(group, {})
            kind = _str(spec.get("kind"))
            label = f"target {group}" if group else "other probes"
            if group and kind:
                label += f" \u00b7 {kind}"
            out.append(
                f'<g class="group" data-target="{_e(group)}">'
                f'<line x1="0" y1="{_c(y + 0.5)}" x2="{_c(_W)}" y2="{_c(y + 0.5)}" '
                'stroke="#d8dee4"/>'
                f'<text x="8" y="{_c(y + 15)}" class="head">{_e(_clip(label, 60))}</text></g>'
            )
            y += _GROUP_ROW
        for probe in members:
            out.append(_lane(probe, y, x, span, indent=group is not None))
            y += _LANE

    # Faults over the lanes: bands, or a line for a fault that took no time. With hundreds of
    # rounds the marks are drawn thin and faint, or they would hide the lanes.
    placed = sorted(
        (f for f in doc.faults if f.applied is not None),
        key=lambda f: (f.applied or 0.0, f.index),
    )
    dense = len(placed) > plot_w / 10
    out.append(f'<g class="faults{" dense" if dense else ""}">')
    labels = []
    label_end = -1.0
    for fault in placed:
        applied = fault.applied or 0.0
        x0 = x(applied)
        end = fault.end
        x1 = x(end) if end is not None else x0
        tip = _fault_tip(fault)
        if x1 - x0 >= 1.0:
            out.append(
                f'<g class="fault-window" data-round="{_e(fault.round)}"><title>{tip}</title>'
                f'<rect x="{_c(x0)}" y="{_c(_STEADY_ROW + 4)}" width="{_c(x1 - x0)}" '
                f'height="{_c(axis_y - _STEADY_ROW - 4)}" fill="{_FAULT}" '
                f'fill-opacity="{"0.12" if dense else "0.2"}" stroke="{_FAULT}" '
                f'stroke-opacity="{"0.4" if dense else "0.8"}" stroke-width="1"/></g>'
            )
        elif dense:
            out.append(
                f'<g class="fault-instant" data-round="{_e(fault.round)}"><title>{tip}</title>'
                f'<line x1="{_c(x0)}" y1="{_c(_STEADY_ROW + 4)}" x2="{_c(x0)}" '
                f'y2="{_c(axis_y)}" stroke="{_FAULT}" stroke-width="1" stroke-opacity="0.5"/>'
                "</g>"
            )
        else:
            out.append(
                f'<g class="fault-instant" data-round="{_e(fault.round)}"><title>{tip}</title>'
                f'<line x1="{_c(x0)}" y1="{_c(_STEADY_ROW + 4)}" x2="{_c(x0)}" '
                f'y2="{_c(axis_y)}" stroke="{_FAULT}" stroke-width="2.5"/>'
                f'<path d="M{_c(x0 - 5)} {_c(_STEADY_ROW + 4)}h10l-5 7z" fill="{_FAULT}"/></g>'
            )
        if fault.recovered is not None:
            rx = x(applied + fault.recovered)
            out.append(
                f'<circle cx="{_c(rx)}" cy="{_c(top - 6)}" r="{"2" if dense else "3.5"}" '
                f'fill="{_STEADY}"><title>{_e(fault.label)} recovered '
                f"{_e(_secs(fault.recovered))} after it was applied "
                f"(t = {_e(_at(applied + fault.recovered))})</title></circle>"
            )
        # Labels only where they fit: with hundreds of rounds the table names every fault.
        label = _clip(fault.label, 28)
        width = len(label) * 6.4 + 6
        lx = x0 + 4
        if lx >= label_end and lx + width <= _W:
            labels.append(
                f'<text x="{_c(lx)}" y="{_c(top - 10)}" class="small halo">{_e(label)}</text>'
            )
            label_end = lx + width
    # The labels last, over every mark, each on a white halo.
    out += labels
    out.append("</g>")

    # Steady-state checks: a dashed line across the lanes with the verdict beside it.
    out.append('<g class="steady">')
    for which, check in (("before", doc.steady_before), ("after", doc.steady_after)):
        t = _num(check.get("t"))
        if t is None:
            continue
        sx = x(t)
        ok = _bool(check.get("ok"))
        verdict = "held" if ok else ("did not hold" if ok is False else "unknown")
        mark = "\u2713" if ok else ("\u2717" if ok is False else "?")
        anchor = "start" if sx < _LABEL_W + plot_w / 2 else "end"
        label_x = sx + 5 if anchor == "start" else sx - 5
        out.append(
            f'<g class="steady-check" data-when="{which}"><title>steady state {which}: '
            f"{verdict} (t = {_e(_at(t))})</title>"
            f'<line x1="{_c(sx)}" y1="{_c(4)}" x2="{_c(sx)}" y2="{_c(axis_y)}" '
            f'stroke="{_STEADY}" stroke-width="1.5" stroke-dasharray="4 3"/>'
            f'<text x="{_c(label_x)}" y="{_c(_STEADY_ROW - 6)}" text-anchor="{anchor}" '
            f'class="small" fill="{_STEADY}">{which} {mark} {verdict}</text></g>'
        )
    out.append("</g></svg>")
    return "".join(out)


def _lane(
    probe: _Probe, y: float, x: Callable[[float], float], span: float, *, indent: bool
) -> str:
    bar_y = y + (_LANE - _BAR) / 2
    name = _clip(probe.name, 22 if indent else 24)
    kind = f" ({probe.kind})" if probe.kind and probe.kind != probe.name else ""
    out = [
        f'<g class="lane" data-probe="{_e(probe.name)}">',
        f"<title>probe {_e(probe.name)}{_e(kind)}"
        + (f": {_e(probe.what)}" if probe.what else "")
        + "</title>",
        f'<text x="{20 if indent else 8}" y="{_c(y + _LANE / 2 + 4)}">{_e(name)}'
        f'<tspan class="dim small">{_e(_clip(kind, 14))}</tspan></text>',
        f'<rect x="{_c(_LABEL_W)}" y="{_c(bar_y)}" width="{_c(x(span) - _LABEL_W)}" '
        f'height="{_c(_BAR)}" fill="{_UNKNOWN}"><title>{_e(probe.name)}: no state yet</title>'
        "</rect>",
    ]
    events = probe.events
    for i, (t, healthy, detail) in enumerate(events):
        until = events[i + 1][0] if i + 1 < len(events) else span
        x0, x1 = x(t), x(until)
        if healthy:
            if x1 - x0 <= 0:
                continue
            tip = f"{probe.name} healthy {_at(t)} \u2192 {_at(until)}"
            out.append(
                f'<rect class="ok" x="{_c(x0)}" y="{_c(bar_y)}" width="{_c(x1 - x0)}" '
                f'height="{_c(_BAR)}" fill="{_HEALTHY}"><title>{_e(tip)}</title></rect>'
            )
        else:
            # A failure shorter than a pixel is still shown: it is what the report is about.
            width = max(x1 - x0, 2.0)
            # Stripes need room; a narrow failure is drawn solid so that it stays visible.
            fill = "url(#hl-fail)" if width >= 6 else _FAILING
            tip = f"{probe.name} failing {_at(t)} \u2192 {_at(until)} ({_secs(until - t)})"
            if detail:
                tip += f": {detail}"
            out.append(
                f'<rect class="fail" x="{_c(x0)}" y="{_c(bar_y)}" width="{_c(width)}" '
                f'height="{_c(_BAR)}" fill="{fill}"><title>{_e(tip)}</title></rect>'
            )
    out.append("</g>")
    return "".join(out)


def _fault_tip(fault: _Fault) -> str:
    lines = [fault.label + (f" ({fault.kind})" if fault.kind and fault.kind != fault.name else "")]
    if fault.targets:
        lines.append("targets: " + ", ".join(fault.targets))
    if fault.detail:
        lines.append(fault.detail)
    span = f"applied {_at(fault.applied)}"
    if fault.end is not None:
        span += f", {'undone' if fault.undone is not None else 'ended'} {_at(fault.end)}"
    lines.append(span)
    lines.append(
        f"detected after {_secs(fault.detected)}, recovered after {_secs(fault.recovered)}"
    )
    if fault.outcome:
        lines.append(f"outcome: {fault.outcome}")
    if fault.error:
        lines.append(f"error: {fault.error}")
    return _e("\n".join(lines))


# --- faults table ---------------------------------------------------------------------------


def _outcome_pill(outcome: str) -> str:
    css = outcome if outcome in _FAULT_OUTCOMES else "other"
    return f'<span class="pill o-{css}">{_e(outcome or _DASH)}</span>'


def _faults_section(doc: _Doc) -> str:
    head = '<section id="faults">\n<h2>Faults, round by round</h2>\n'
    if not doc.faults:
        return head + '<p class="empty">No faults were applied.</p>\n</section>\n'
    counts: dict[str, int] = {}
    for fault in doc.faults:
        counts[fault.outcome or "unknown"] = counts.get(fault.outcome or "unknown", 0) + 1
    tally = ", ".join(f"{n} {_e(outcome)}" for outcome, n in counts.items())
    # The error column only when a round has one: most runs have none.
    errors = any(fault.error for fault in doc.faults)
    rows = []
    for fault in doc.faults:
        late_detect = (
            fault.detected is not None
            and fault.deadline is not None
            and fault.detected > fault.deadline
        )
        late = fault.deadline is not None and (
            (fault.recovered is not None and fault.recovered > fault.deadline)
            or (fault.recovered is None and fault.outcome == "deviated")
        )
        recovered = _e(_secs(fault.recovered))
        if fault.recovered is None and fault.detected is not None:
            recovered = "never"
        rows.append(
            f'<tr class="fault-row" data-outcome="{_e(fault.outcome)}">'
            f'<td class="num">{_e(fault.round) or _DASH}</td>'
            f"<td>{_e(fault.name) or _DASH}</td>"
            f"<td>{_e(fault.kind) or _DASH}</td>"
            f"<td>{_e(', '.join(fault.targets)) or _DASH}</td>"
            f'<td class="detail">{_e(fault.detail) or _DASH}</td>'
            f'<td class="num{" late" if late_detect else ""}">{_e(_secs(fault.detected))}</td>'
            f'<td class="num{" late" if late else ""}">{recovered}</td>'
            f'<td class="num">{_e(_secs(fault.deadline))}</td>'
            f'<td class="num">{_e(_pct(fault.availability))}</td>'
            f"<td>{_outcome_pill(fault.outcome)}</td>"
            + (f'<td class="error">{_e(fault.error)}</td>' if errors else "")
            + "</tr>"
        )
    wrap = "scroll tall" if len(rows) > 25 else "scroll"
    return (
        head + f'<p class="sub">{len(doc.faults)} fault{"s" if len(doc.faults) != 1 else ""}: '
        f"{tally}. Times to detect and to "
        "recover count from the moment the fault was applied.</p>\n"
        f'<div class="{wrap}"><table class="faults">'
        "<thead><tr>"
        '<th class="num" scope="col">Round</th><th scope="col">Fault</th>'
        '<th scope="col">Kind</th><th scope="col">Targets</th><th scope="col">Detail</th>'
        '<th class="num" scope="col">Detect</th><th class="num" scope="col">Recover</th>'
        '<th class="num" scope="col">Deadline</th><th class="num" scope="col">Availability</th>'
        '<th scope="col">Outcome</th>'
        + ('<th scope="col">Error</th>' if errors else "")
        + "</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table></div>\n</section>\n"
    )


# --- time to recover ------------------------------------------------------------------------


def _stat_triplet(
    summary: Mapping[str, object], key: str, values: Sequence[float]
) -> dict[str, float | None]:
    """p50 / p95 / max as the runner summarised them, else from the rounds themselves."""
    given = _map(summary.get(key))
    return {
        "p50": _num(given.get("p50")) if "p50" in given else _percentile(values, 50),
        "p95": _num(given.get("p95")) if "p95" in given else _percentile(values, 95),
        "max": _num(given.get("max")) if "max" in given else (max(values) if values else None),
    }


def _recovery_section(doc: _Doc) -> str:
    recovered = [f.recovered for f in doc.faults if f.recovered is not None]
    detected = [f.detected for f in doc.faults if f.detected is not None]
    never = sum(1 for f in doc.faults if f.recovered is None)
    recover = _stat_triplet(doc.summary, "recover", recovered)
    detect = _stat_triplet(doc.summary, "detect", detected)
    stats = [
        ("recover-p50", "Recover p50", recover["p50"]),
        ("recover-p95", "Recover p95", recover["p95"]),
        ("recover-max", "Recover max", recover["max"]),
        ("detect-p50", "Detect p50", detect["p50"]),
        ("detect-p95", "Detect p95", detect["p95"]),
        ("detect-max", "Detect max", detect["max"]),
    ]
    cards = "".join(
        f'<div class="stat" id="{key}"><span class="k">{label}</span>'
        f'<span class="v">{_e(_secs(value))}</span></div>'
        for key, label, value in stats
    )
    sub = (
        f"{len(recovered)} of {len(doc.faults)} rounds recovered"
        + (f"; {never} did not (not drawn)" if never else "")
        + ". Each dot is a round; bars count rounds per bin."
    )
    chart = (
        _recovery_svg(recovered, recover, _deadline(doc.faults))
        if recovered
        else '<p class="empty">No round has a time to recover to plot.</p>'
    )
    return (
        '<section id="recovery">\n<h2>Time to recover</h2>\n'
        f'<p class="sub">{_e(sub)}</p>\n<div class="stats">{cards}</div>\n'
        f'<div class="scroll">{chart}</div>\n</section>\n'
    )


def _deadline(faults: Iterable[_Fault]) -> float | None:
    deadlines = {f.deadline for f in faults if f.deadline is not None and f.deadline > 0}
    return max(deadlines) if deadlines else None


def _recovery_svg(
    values: Sequence[float], marks: Mapping[str, float | None], deadline: float | None
) -> str:
    left, right = 56.0, 24.0
    marks_h, plot_h, strip_h, axis_h = 50.0, 120.0, 30.0, 36.0
    plot_w = _W - left - right
    height = marks_h + plot_h + strip_h + axis_h
    known = [v for v in (*values, *(m for m in marks.values() if m is not None)) if v >= 0]
    hi = min(max(known, default=0.0), _SCALE_MAX)
    hi = max(hi, _SCALE_MIN) if hi > 0 else 1.0
    # A deadline close to the data is worth drawing; one far beyond it would squash the plot.
    show_deadline = deadline is not None and deadline <= hi * 1.5
    if show_deadline and deadline is not None:
        hi = max(hi, deadline)
    step, ticks = _ticks(hi, 8)
    hi = max(hi, ticks[-1])
    if ticks[-1] < hi:
        ticks.append(ticks[-1] + step)
        hi = ticks[-1]

    def x(v: float) -> float:
        return left + min(max(v, 0.0), hi) / hi * plot_w

    # Bins a quarter of a tick wide: edges on round numbers, and fine enough that a few
    # rounds do not all fall into one bar.
    width = step / 4
    bins = max(1, min(round(hi / width), 200))
    width = hi / bins
    counts = [0] * bins
    for v in values:
        counts[min(max(int(v / width), 0), bins - 1)] += 1
    top = max(counts)
    base = marks_h + plot_h
    out = [
        f'<svg class="chart recovery" viewBox="0 0 {_c(_W)} {_c(height)}" width="100%" '
        f'role="img" aria-label="Distribution of time to recover" data-rounds="{len(values)}">'
    ]
    _, yticks = _ticks(float(top), 4)
    for count in yticks:
        if count != int(count):
            continue
        yy = base - count / top * plot_h
        out.append(
            f'<line x1="{_c(left)}" y1="{_c(yy)}" x2="{_c(left + plot_w)}" y2="{_c(yy)}" '
            'stroke="#eef1f4"/>'
            f'<text x="{_c(left - 8)}" y="{_c(yy + 4)}" text-anchor="end" class="dim small">'
            f"{int(count)}</text>"
        )
    out.append(
        f'<text x="12" y="{_c(marks_h + plot_h / 2)}" class="dim small" text-anchor="middle" '
        f'transform="rotate(-90 12 {_c(marks_h + plot_h / 2)})">rounds</text>'
    )
    for i, count in enumerate(counts):
        if not count:
            continue
        x0, x1 = x(i * width), x((i + 1) * width)
        bar_h = count / top * plot_h
        rounds = f"{count} round{'s' if count != 1 else ''}"
        tip = f"{rounds} recovered in {_secs(i * width)} \u2013 {_secs((i + 1) * width)}"
        out.append(
            f'<rect class="bin" x="{_c(x0 + 1)}" y="{_c(base - bar_h)}" '
            f'width="{_c(max(x1 - x0 - 2, 1.0))}" height="{_c(bar_h)}" fill="{_STEADY}" '
            f'fill-opacity="0.75"><title>{_e(tip)}</title></rect>'
        )
    # The strip: every round as a dot, spread vertically by a fixed sequence (no randomness:
    # the same document renders the same page).
    for i, v in enumerate(values):
        jitter = (i * 0.618034) % 1.0
        cy = base + 6 + jitter * (strip_h - 12)
        out.append(
            f'<circle cx="{_c(x(v))}" cy="{_c(cy)}" r="3" fill="{_HEALTHY}" fill-opacity="0.7">'
            f"<title>{_e(_secs(v))}</title></circle>"
        )
    axis_y = base + strip_h
    out.append(
        f'<text x="{_c(left - 8)}" y="{_c(base + strip_h / 2 + 4)}" text-anchor="end" '
        'class="dim small">each</text>'
    )
    out.append(
        f'<line x1="{_c(left)}" y1="{_c(axis_y)}" x2="{_c(left + plot_w)}" y2="{_c(axis_y)}" '
        'stroke="#8c959f"/>'
    )
    for tick in ticks:
        tx = x(tick)
        out.append(
            f'<line x1="{_c(tx)}" y1="{_c(axis_y)}" x2="{_c(tx)}" y2="{_c(axis_y + 4)}" '
            'stroke="#8c959f"/>'
            f'<text x="{_c(tx)}" y="{_c(axis_y + 17)}" text-anchor="middle" class="dim">'
            f"{_tick_label(tick, step)}</text>"
        )
    out.append(
        f'<text x="{_c(left + plot_w)}" y="{_c(axis_y + 32)}" text-anchor="end" '
        'class="dim small">seconds from fault to recovery</text>'
    )
    # Marks on rows of their own so that p50, p95 and max stay readable when they coincide.
    rows = [("p50", 13.0, "#24292f"), ("p95", 28.0, "#24292f"), ("max", 43.0, _FAILING)]
    for key, row_y, colour in rows:
        value = marks.get(key)
        if value is None:
            continue
        mx = x(value)
        text = f"{key} {_secs(value)}"
        anchor = "start" if mx < left + plot_w * 0.8 else "end"
        tx = mx + 4 if anchor == "start" else mx - 4
        out.append(
            f'<g class="mark" data-mark="{key}"><line x1="{_c(mx)}" y1="{_c(row_y - 10)}" '
            f'x2="{_c(mx)}" y2="{_c(axis_y)}" stroke="{colour}" stroke-width="1.5" '
            f'stroke-dasharray="5 3"/><text x="{_c(tx)}" y="{_c(row_y)}" '
            f'text-anchor="{anchor}" class="small head" fill="{colour}">{_e(text)}</text></g>'
        )
    if show_deadline and deadline is not None:
        dx = x(deadline)
        out.append(
            f'<g class="mark" data-mark="deadline"><line x1="{_c(dx)}" y1="{_c(marks_h)}" '
            f'x2="{_c(dx)}" y2="{_c(axis_y)}" stroke="#d1242f" stroke-width="2"/>'
            f'<text x="{_c(dx - 4)}" y="{_c(marks_h + 12)}" text-anchor="end" class="small" '
            f'fill="#d1242f">deadline {_e(_secs(deadline))}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


# --- steady state, source, footer -----------------------------------------------------------


def _verdict(value: bool | None) -> str:
    if value is None:
        return f'<span class="pill s-none">{_DASH}</span>'
    if value:
        return '<span class="pill s-ok">\u2713 holds</span>'
    return '<span class="pill s-fail">\u2717 fails</span>'


def _steady_section(doc: _Doc) -> str:
    checked = []
    before, after = _num(doc.steady_before.get("t")), _num(doc.steady_after.get("t"))
    if before is not None:
        checked.append(f"at t = {_at(before)} before the first fault")
    if after is not None:
        checked.append(f"at t = {_at(after)} after the last")
    sub = "Checked " + " and ".join(checked) + "." if checked else "No check time recorded."
    head = (
        '<section id="steady">\n<h2>Steady state, before and after</h2>\n'
        f'<p class="sub">{_e(sub)}</p>\n'
    )
    if not doc.probes:
        return head + '<p class="empty">The experiment has no probes.</p>\n</section>\n'
    rows = []
    for probe in doc.probes:
        if probe.count is not None and probe.ok is not None and probe.count > 0:
            share = f"{_n(probe.ok)} / {_n(probe.count)} ({_pct(probe.ok / probe.count)})"
        elif probe.count is not None:
            share = f"{_n(probe.ok)} / {_n(probe.count)}"
        else:
            share = _DASH
        failures = sum(1 for _, healthy, _ in probe.events if not healthy)
        rows.append(
            f'<tr data-probe="{_e(probe.name)}"><th scope="row">{_e(probe.name)}</th>'
            f"<td>{_e(probe.kind) or _DASH}</td>"
            f'<td class="detail"><code>{_e(probe.what)}</code></td>'
            f"<td>{_e(probe.group) if probe.group else _DASH}</td>"
            f"<td>{_verdict(probe.before)}</td><td>{_verdict(probe.after)}</td>"
            f'<td class="num">{failures}</td><td class="num">{_e(share)}</td></tr>'
        )
    overall = (
        '<tr class="overall"><th scope="row">steady state</th><td></td><td></td><td></td>'
        f"<td>{_verdict(_bool(doc.steady_before.get('ok')))}</td>"
        f"<td>{_verdict(_bool(doc.steady_after.get('ok')))}</td><td></td><td></td></tr>"
    )
    return (
        head + '<div class="scroll"><table class="steady"><thead><tr>'
        '<th scope="col">Probe</th><th scope="col">Kind</th><th scope="col">What</th>'
        '<th scope="col">Target</th><th scope="col">Before</th><th scope="col">After</th>'
        '<th class="num" scope="col">Failures</th><th class="num" scope="col">Samples ok</th>'
        "</tr></thead>\n<tbody>\n" + "\n".join(rows) + f"\n{overall}\n</tbody></table></div>\n"
        "</section>\n"
    )


def _source_section(doc: _Doc) -> str:
    head = '<section id="source">\n<h2>The experiment as run</h2>\n' + (
        f'<p class="sub"><code>{_e(doc.file)}</code></p>\n' if doc.file else ""
    )
    if doc.source is None:
        return head + '<p class="empty">The result carries no experiment source.</p>\n</section>\n'
    return head + f'<pre class="source"><code>{_e(doc.source)}</code></pre>\n</section>\n'


def _footer(doc: _Doc) -> str:
    version = f" (result format {_e(doc.version)})" if doc.version else ""
    return f"<footer>Rendered by heartline chaos{version}.</footer>\n"
