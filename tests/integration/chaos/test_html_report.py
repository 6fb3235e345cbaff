"""The chaos report in a real browser: Debian Chromium opens the file, shows the outcome, the
fault table and the timeline's lanes, loads nothing but the file, and renders to a real image."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from tests.unit.chaos.test_html import realistic_result

from heartline.chaos import render_html


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_report_opens_in_chromium(chromium_page: Any, tmp_path: Path) -> None:
    """Chromium shows the deviated badge, five fault rows, two timeline lanes and p50 / p95 /
    max; it requests nothing but the report file and logs no error (the page's CSP would log
    any blocked load); the full-page screenshot is a sizeable PNG with the badge in view."""
    page = chromium_page
    report = tmp_path / "report.html"
    report.write_text(render_html(realistic_result()), encoding="utf-8")
    url = report.as_uri()
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    page.goto(url, wait_until="load", timeout=10_000)

    badge = page.locator("#outcome")
    assert badge.is_visible()
    assert (badge.text_content() or "").strip().endswith("deviated")
    text = page.inner_text("body")
    assert "DEVIATED" in text
    assert "round 4 (hang): not recovered within the 2 s deadline" in text

    rows = page.locator("table.faults tbody tr")
    assert rows.count() == 5
    for number in range(5):
        row = rows.nth(number)
        assert row.is_visible()
        assert row.locator("td").first.inner_text() == str(number + 1)
    assert "SIGSTOP pid 4250 for 2 s" in rows.nth(3).inner_text()
    assert rows.nth(3).locator(".pill").inner_text() == "deviated"

    lanes = page.locator("svg.timeline g.lane")
    assert lanes.count() == 2
    assert [lanes.nth(i).get_attribute("data-probe") for i in range(2)] == ["status", "http"]
    lane_box = lanes.nth(0).bounding_box()
    assert lane_box is not None and lane_box["width"] > 600 and lane_box["height"] > 10
    assert page.locator("svg.timeline .fault-window, svg.timeline .fault-instant").count() == 5
    for mark in ("p50 440 ms", "p95 2.61 s", "max 2.61 s"):
        assert mark in text

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    width, height = png_size(shot)
    assert width == 1280 and height > 1500
    assert shot.stat().st_size > 60_000
    box = badge.bounding_box()
    assert box is not None
    assert box["width"] > 60 and box["height"] > 16
    assert box["x"] >= 0 and box["x"] + box["width"] <= 1280 and 0 <= box["y"] < 900

    assert requests == [url]
    assert problems == []
