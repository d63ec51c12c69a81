"""`calmops report`: a self-contained HTML page, checked in headless Chromium (console, charts, screenshot)."""

from __future__ import annotations

import math
import re
import struct
from html.parser import HTMLParser

import pandas as pd
import pytest
from cdp_browser import Browser
from plotly.offline import get_plotlyjs
from processed_home import copy_home

from calmops_dagster.interfaces.cli import main
from calmops_dagster.interfaces.pipeline_report import build_pipeline_report
from calmops_dagster.reports.page_style import STYLESHEET
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_report_is_self_contained_and_holds_every_section(processed_home):
    home, _ = processed_home
    page = build_pipeline_report(home, "demo")
    assert page.count(get_plotlyjs()) == 1  # plotly.js embedded once: the page works offline
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing fetched from elsewhere
    for text in ("Drift per feature over blocks", "Champion balanced_accuracy over blocks",
                 "Latest drift report (block 4)", "Circuit breaker", "Champion: <b>v0002</b>",
                 "Estimated balanced_accuracy per block", "Champion timeline", "distribution per block"):
        assert text in page
    assert STYLESHEET in page


def test_report_renders_in_chromium_without_console_errors(processed_home, tmp_path):
    home = copy_home(processed_home, tmp_path)
    # a breaker state row, as the breaker writes it (closed, no failure)
    MetricsStore(home.metrics_db).update_breaker("demo", lambda state: (state, "reset"))
    out = tmp_path / "report.html"
    assert main(["--home", str(home.root), "report", "demo", "--out", str(out)]) == 0
    assert out.stat().st_size > 3_000_000  # plotly.js embedded: works offline
    assert out.stat().st_mode & 0o777 == 0o644  # readable like the per-block reports

    with Browser(tmp_path / "profile") as browser:
        browser.open(out.as_uri())
        charts = browser.wait_for(
            "document.querySelectorAll('.js-plotly-plot').length === 6 && "
            "document.querySelectorAll('.js-plotly-plot .main-svg').length >= 12 && "
            "document.querySelectorAll('.js-plotly-plot .main-svg').length")
        heat_cells = browser.evaluate("document.querySelectorAll('#drift-heatmap .heatmaplayer image, "
                                      "#drift-heatmap .hm').length")
        stars = browser.evaluate("document.querySelectorAll('#performance .scatterlayer .trace').length")
        bars = browser.evaluate("document.querySelectorAll('#latest-drift .bars .point').length")
        breaker_text = browser.evaluate("document.body.innerText")
        width = browser.evaluate("document.documentElement.scrollWidth")
        shot = browser.screenshot(tmp_path / "report.png")
        errors = browser.errors()

    assert errors == [], errors
    assert charts >= 12
    assert width <= 1280  # readable at 1280 px: nothing wider than the window
    assert heat_cells >= 1
    assert stars == 3  # champion line, challengers, promotions
    assert bars == 5  # x1..x4 and segment
    assert "closed" in breaker_text and "Champion: v0002" in breaker_text
    width, height = _png_size(shot)
    assert width >= 1000 and height >= 1500
    assert shot.stat().st_size > 50_000  # charts drawn, not a blank page


class _Tables(HTMLParser):
    """The cells of every ``<table id=...>`` of a page, by id."""

    def __init__(self):
        super().__init__()
        self.tables, self._id, self._row, self._cell = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._id = dict(attrs).get("id")
            self.tables[self._id] = []
        elif tag == "tr" and self._id:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._id].append(self._row)
            self._row = None
        elif tag == "table":
            self._id = None


def _same_number(shown: str, stored) -> bool:
    if stored is None or (isinstance(stored, float) and math.isnan(stored)):
        return shown == "—"
    return math.isclose(float(shown), float(stored), rel_tol=5e-3, abs_tol=1e-300)


def test_block_report_draws_its_charts_in_chromium(processed_home, tmp_path):
    """The charts are plotly.js specifications written by the report itself: Chromium draws them."""
    home, _ = processed_home
    with Browser(tmp_path / "profile") as browser:
        browser.open((home.reports_dir("demo") / "3.html").as_uri())
        charts = browser.wait_for("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2 && "
                                  "document.querySelectorAll('.js-plotly-plot').length")
        bars = browser.evaluate("document.querySelectorAll('#chart-0 .bars .point').length")
        history = browser.evaluate("document.querySelectorAll('.js-plotly-plot .scatterlayer .point').length")
        errors = browser.errors()
    assert errors == [], errors
    assert charts >= 2 and bars > 10 and history >= 3  # every tested feature; blocks 1-3 on the history


def test_block_report_shows_the_numbers_of_drift_results_and_explains_them(processed_home):
    home, spec = processed_home
    page = (home.reports_dir("demo") / "3.html").read_text(encoding="utf-8")
    parser = _Tables()
    parser.feed(page)
    header, *rows = parser.tables["all-tests"]
    shown = [dict(zip(header, row, strict=True)) for row in rows]
    stored = MetricsStore(home.metrics_db).query(
        "SELECT feature, test, statistic, p_value, effect_size, threshold, drifted "
        "FROM drift_results WHERE pipeline = 'demo' AND block = '3'")
    assert len(shown) == len(stored) > 10  # every drift_results row of the block, and only those
    by_key = {(r["feature"], r["test"]): r for r in shown}
    for row in stored.itertuples():
        cells = by_key[(row.feature, row.test)]
        for column in ("statistic", "p_value", "effect_size", "threshold"):
            assert _same_number(cells[column], getattr(row, column)), (row.feature, row.test, column, cells)
        assert cells["drifted"] == ("yes" if row.drifted else "no")

    summary = dict(parser.tables["summary"][1:])
    dataset = stored[stored["feature"] == "__dataset__"].iloc[0]
    assert _same_number(summary["drift share (drifted / tested features)"], dataset["statistic"])
    classifier = stored[(stored["feature"] == "__multivariate__") & (stored["test"] == "classifier")].iloc[0]
    assert classifier["p_value"] > 0 and _same_number(summary["classifier: p-value"], classifier["p_value"])
    assert f"classifier p={float(summary['classifier: p-value']):.3g}" in page  # the header: the same number

    alpha, share = spec.drift.alpha, spec.drift.multivariate_alpha_share
    uni, each = alpha * (1 - share), alpha * share / len(spec.drift.multivariate_tests)
    assert _same_number(summary["classifier: alpha"], each)
    legend = page[page.index("How to read this report"):page.index("All tests")]
    assert f"The block's alpha ({alpha:.3g}" in legend and f"share {uni:.3g}" in legend
    assert f"{each:.3g} each" in legend
    distances = set(stored.loc[stored["p_value"].isna() & ~stored["feature"].str.startswith("__"), "test"])
    assert distances and all(test in legend for test in distances)
    assert "have no p-value (shown as —)" in legend
    assert page.count("class='caption'") >= 2  # every figure says how to read it


# ---- the plots people look at first ------------------------------------------------------------------------
def _report_inputs(home):
    from calmops_dagster.interfaces.pipeline_report import _ordered, load_report_data

    data = load_report_data(home, "demo")
    order = _ordered(data["blocks"]["block"])
    return data, order


def test_estimate_plot_holds_the_band_the_realized_value_the_threshold_and_the_alert(processed_home):
    from calmops_dagster.interfaces.pipeline_report import estimate_figure

    home, spec = processed_home
    data, order = _report_inputs(home)
    store = ModelStore(home.models_dir("demo"))
    references = {v: store.manifest(v)["metrics"]["balanced_accuracy"] for v in ("v0001", "v0002")}
    fig = estimate_figure(spec, data["performance"], references, order)
    traces = {t.name: t for t in fig.data}
    stored = MetricsStore(home.metrics_db).query(
        "SELECT block, role, value, ci_low, ci_high, model_version FROM performance WHERE pipeline = 'demo' "
        "AND metric = 'balanced_accuracy' AND evaluated_on = 'block' ORDER BY block")
    est = stored[stored["role"] == "estimated"].set_index("block")
    real = stored[stored["role"] == "champion"].set_index("block")
    assert list(traces["estimated (without labels)"].x) == ["2", "3", "4"] == list(est.index)
    assert list(traces["estimated (without labels)"].y) == list(est["value"])
    assert list(traces["confidence band"].y) == list(est["ci_low"])  # filled up to the ci_high trace
    assert list(fig.data[0].y) == list(est["ci_high"])
    assert list(traces["realized (with labels)"].y) == list(real["value"])
    threshold = traces["alert threshold (reference - 10%)"]
    assert list(threshold.y) == [references[v] * 0.9 for v in est["model_version"]]
    assert traces["minimum (0.6)"].y[0] == 0.6
    # block 3's concept flip is invisible to the estimate (the model's confidence stays): no alert; a band
    # wholly below v0001's threshold is one
    assert "alert: estimated drop" not in traces and est.loc["3", "ci_high"] > references["v0001"] * 0.9
    performance = data["performance"].copy()
    dropped = (performance["block"] == "3") & (performance["role"] == "estimated")
    performance.loc[dropped, ["value", "ci_low", "ci_high"]] = [0.5, 0.45, 0.55]
    alert = {t.name: t for t in estimate_figure(spec, performance, references, order).data}["alert: estimated drop"]
    assert list(alert.x) == ["3"] and 0.55 < references["v0001"] * 0.9
    assert "Estimated balanced_accuracy of champion v0001 on block 3 of demo" in alert.text[0]


def test_champion_timeline_says_which_version_served_which_block_and_why(processed_home):
    from calmops_dagster.interfaces.pipeline_report import champion_timeline_figure

    home, _ = processed_home
    data, order = _report_inputs(home)
    fig = champion_timeline_figure(data["promotions"], order)
    served = {t.name: [x for x, y in zip(t.x, t.y, strict=True) if y is not None] for t in fig.data[:-1]}
    assert served == {"v0001": ["1", "2"], "v0002": ["3", "4"]}
    stars = fig.data[-1]
    assert list(stars.x) == ["1", "3"] and list(stars.y) == ["v0001", "v0002"]
    assert "first champion" in stars.text[0] and "McNemar" in stars.text[1] and "v0001 → v0002" in stars.text[1]
    page = build_pipeline_report(home, "demo")
    assert "<table id='promotions'>" in page and "trained_by" not in page  # no custom function: no empty column


def test_feature_drilldown_draws_each_block_against_its_reference(processed_home):
    from calmops_dagster.interfaces.pipeline_report import feature_drilldown_figure

    home, _ = processed_home
    data, order = _report_inputs(home)
    store = ModelStore(home.models_dir("demo"))
    features = ["x1", "x2", "x3", "x4", "segment"]
    fig = feature_drilldown_figure(home, "demo", data["summary"], store, features, order)
    menu = fig.layout.updatemenus[0]
    assert [b.label for b in menu.buttons] == features
    x1 = [t for t, shown in zip(fig.data, menu.buttons[0].args[0]["visible"], strict=True) if shown]
    block, reference = (next(t for t in x1 if t.name.startswith(k)) for k in ("block", "reference"))
    assert list(block.x) == ["1", "2", "3", "4"] and list(reference.x) == ["2", "3", "4"]  # block 1: no champion
    rows3 = pd.read_parquet(home.blocks_dir("demo") / "3.parquet")["x1"]
    assert block.median[2] == pytest.approx(rows3.median())
    assert reference.median[1] == pytest.approx(store.reference("v0001")["x1"].median())  # block 3 judged by v0001
    assert reference.median[2] == pytest.approx(store.reference("v0002")["x1"].median())  # block 4 by v0002
    segment = [t for t, shown in zip(fig.data, menu.buttons[4].args[0]["visible"], strict=True) if shown]
    first = next(t for t in segment if t.name.endswith("(block)"))
    category = first.name.removesuffix(" (block)")
    rows4 = pd.read_parquet(home.blocks_dir("demo") / "4.parquet")["segment"].astype(str)
    assert first.y[3] == pytest.approx((rows4 == category).mean())
    assert sum(len(menu.buttons[i].args[0]["visible"]) for i in range(5)) == 5 * len(fig.data)


def test_report_tables_show_numbers_to_four_significant_digits_and_missing_values_as_a_dash(processed_home):
    home, _ = processed_home
    parser = _Tables()
    parser.feed(build_pipeline_report(home, "demo"))
    cells = [cell for table in parser.tables.values() for row in table for cell in row]
    assert cells and "—" in cells
    assert not [c for c in cells if c.strip() in ("nan", "NaN", "None", "NaT", "<NA>")]
    numbers = [n for c in cells for n in re.findall(r"\d+\.\d+", c)]
    assert numbers and not [n for n in numbers if len(n.replace(".", "").lstrip("0")) > 4]  # no 0.13087422194977605
