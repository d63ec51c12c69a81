"""`calmops report`: a self-contained HTML page, checked in headless Chromium (console, charts, screenshot)."""

from __future__ import annotations

import re
import struct

from cdp_browser import Browser
from plotly.offline import get_plotlyjs
from processed_home import copy_home, processed_home  # noqa: F401 -- session fixture

from calmops_dagster.interfaces.cli import main
from calmops_dagster.interfaces.pipeline_report import build_pipeline_report
from calmops_dagster.store.metrics_store import MetricsStore


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_report_is_self_contained_and_holds_every_section(processed_home):  # noqa: F811
    home, _ = processed_home
    page = build_pipeline_report(home, "demo")
    assert page.count(get_plotlyjs()) == 1  # plotly.js embedded once: the page works offline
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing fetched from elsewhere
    for text in ("Drift per feature over blocks", "Champion balanced_accuracy over blocks",
                 "Latest drift report (block 4)", "Circuit breaker", "Champion: <b>v0002</b>"):
        assert text in page


def test_report_renders_in_chromium_without_console_errors(processed_home, tmp_path):  # noqa: F811
    home = copy_home(processed_home, tmp_path)
    # a breaker state row, as the breaker writes it (closed, no failure)
    MetricsStore(home.metrics_db).update_breaker("demo", lambda state: (state, "reset"))
    out = tmp_path / "report.html"
    assert main(["--home", str(home.root), "report", "demo", "--out", str(out)]) == 0
    assert out.stat().st_size > 3_000_000  # plotly.js embedded: works offline

    with Browser(tmp_path / "profile") as browser:
        browser.open(out.as_uri())
        charts = browser.wait_for(
            "document.querySelectorAll('.js-plotly-plot').length === 3 && "
            "document.querySelectorAll('.js-plotly-plot .main-svg').length >= 6 && "
            "document.querySelectorAll('.js-plotly-plot .main-svg').length")
        heat_cells = browser.evaluate("document.querySelectorAll('#drift-heatmap .heatmaplayer image, "
                                      "#drift-heatmap .hm').length")
        stars = browser.evaluate("document.querySelectorAll('#performance .scatterlayer .trace').length")
        bars = browser.evaluate("document.querySelectorAll('#latest-drift .bars .point').length")
        breaker_text = browser.evaluate("document.body.innerText")
        shot = browser.screenshot(tmp_path / "report.png")
        errors = browser.errors()

    assert errors == [], errors
    assert charts >= 6
    assert heat_cells >= 1
    assert stars == 3  # champion line, challengers, promotions
    assert bars == 5  # x1..x4 and segment
    assert "closed" in breaker_text and "Champion: v0002" in breaker_text
    width, height = _png_size(shot)
    assert width >= 1000 and height >= 1500
    assert shot.stat().st_size > 50_000  # charts drawn, not a blank page
