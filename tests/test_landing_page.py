"""The landing page of `calmops serve` and the look the served pages share: FastAPI's TestClient for what they
say, a real server (uvicorn in a thread) and headless Chromium for how they render."""

from __future__ import annotations

import html
import re
import socket
import threading
import time
from datetime import UTC, datetime

import pytest
import uvicorn
from cdp_browser import Browser
from fastapi.testclient import TestClient
from processed_home import copy_home

from calmops_dagster.interfaces.alerts import send_block_alerts
from calmops_dagster.interfaces.server import create_app
from calmops_dagster.reports.page_style import PLOTLY_ROUTE, STYLESHEET, get_plotlyjs
from calmops_dagster.spec import load_spec
from calmops_dagster.steps import circuit_breaker as cb
from calmops_dagster.store.metrics_store import MetricsStore


def _row(page: str, name: str) -> list[str]:
    """The cells of pipeline ``name``'s row of the landing page, as text."""
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", page, re.DOTALL) if f"/reports/{name}/" in r)
    return [" ".join(re.sub(r"<[^>]+>", " ", cell).replace("&#x27;", "'").split())
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]


def test_the_landing_page_lists_every_pipeline_with_its_story(processed_home, tmp_path):
    home = copy_home(processed_home, tmp_path)
    spec = load_spec(home.spec_path("demo"))
    metrics = MetricsStore(home.metrics_db)
    send_block_alerts(spec, home, metrics, "3")  # no webhook: recorded, as the block's run does
    bad = home.spec_path("broken")
    bad.parent.mkdir(parents=True)
    bad.write_text("name: broken\ntype: [not, a, type]\n")
    with TestClient(create_app(home)) as client:
        answer = client.get("/")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    page = answer.text
    assert STYLESHEET in page

    cells = _row(page, "demo")
    est = metrics.query("SELECT value, ci_low, ci_high FROM performance WHERE pipeline = 'demo' AND block = '4' "
                        "AND role = 'estimated' AND metric = 'balanced_accuracy'").iloc[0]
    real = metrics.query("SELECT value FROM performance WHERE pipeline = 'demo' AND block = '4' AND role = "
                         "'champion' AND evaluated_on = 'block' AND metric = 'balanced_accuracy'").iloc[0]
    assert cells[0] == "demo block · RandomForestClassifier · balanced_accuracy"
    assert cells[1] == "v0002 since block 3"
    assert re.fullmatch(r"4 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC · 4 processed", cells[2])
    assert cells[3] == "no drift share 0"
    assert cells[4] == f"{est['value']:.3g} [{est['ci_low']:.3g}, {est['ci_high']:.3g}] block 4 · v0002"
    assert cells[5] == f"{real['value']:.3g} block 4 · v0002"
    assert cells[6] == "closed"
    last = metrics.query("SELECT block, event, summary FROM alerts WHERE pipeline = 'demo' "
                         "ORDER BY event_at DESC, sent_at DESC LIMIT 1").iloc[0]  # block 3 raised several
    assert last["block"] == "3"
    assert cells[7].startswith(f"{last['event']} · block 3 ") and cells[7].endswith(" · no webhook")
    assert f"title='{html.escape(last['summary'], quote=True)}" in page  # the alert's sentence
    broken = _row(page, "broken")
    assert "spec not readable" in broken[0] and "field 'type'" in broken[0] and broken[1:] == ["—"] * 7


def test_the_landing_page_shows_drift_and_an_open_breaker(processed_home, tmp_path):
    home = copy_home(processed_home, tmp_path)
    metrics = MetricsStore(home.metrics_db)
    for _ in range(3):
        metrics.update_breaker("demo", lambda s: cb.on_failure(s, 3, 60, datetime.now(UTC), "boom"))
    metrics.replace_block_rows("blocks", "demo", "3", [{"rows": 300, "loaded_at": "2030-01-01T00:00:00+00:00"}])
    with TestClient(create_app(home)) as client:
        cells = _row(client.get("/").text, "demo")
    drifted = metrics.query("SELECT drifted_features FROM drift_summary WHERE block = '3'").iloc[0, 0]
    assert cells[2] == "3 2030-01-01 00:00:00 UTC · 4 processed"
    assert cells[3] == f"drift: 3 of 5 features {drifted.replace(',', ', ')}; share 0.6"
    assert cells[6].startswith("OPEN until") and cells[6].endswith("3 consecutive failures")


def test_the_landing_page_needs_the_key_and_carries_it_into_its_links(processed_home):
    home, _ = processed_home
    with TestClient(create_app(home, api_key="s3cret")) as client:
        assert client.get("/").status_code == 401
        page = client.get("/?key=s3cret").text
        assert "href='/reports/demo/?key=s3cret'" in page
        assert client.get("/reports/demo/?key=s3cret").status_code == 200
        assert client.get(PLOTLY_ROUTE).status_code == 200  # a public library: no key


def test_served_pages_load_the_installed_plotly_not_a_cdn(processed_home):
    home, _ = processed_home
    with TestClient(create_app(home)) as client:
        script = client.get(PLOTLY_ROUTE)
        report = client.get("/reports/demo/").text
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert script.text == get_plotlyjs()
    assert f"<script src='{PLOTLY_ROUTE}'></script>" in report
    assert get_plotlyjs()[:2000] not in report  # loaded once from the server, not embedded in every page
    sources = re.findall(r"<script[^>]*\bsrc=['\"]([^'\"]+)", report)
    assert sources == [PLOTLY_ROUTE]
    assert STYLESHEET in report
    block_report = (home.reports_dir("demo") / "3.html").read_text()
    assert STYLESHEET in block_report and re.findall(r"<script[^>]*\bsrc=['\"]([^'\"]+)", block_report) == [
        "plotly.min.js"]


@pytest.fixture
def live_server(processed_home):
    """``calmops serve``'s app on a real uvicorn server in a thread; yields its base URL."""
    home, _ = processed_home
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(home), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_served_pages_render_at_1280_px_and_the_heatmap_drills_down(live_server, tmp_path):
    with Browser(tmp_path / "profile", width=1280, height=1000) as browser:
        browser.open(f"{live_server}/")
        landing_width = browser.evaluate("document.documentElement.scrollWidth")
        rows = browser.evaluate("document.querySelectorAll('#pipelines tbody tr').length")
        color = browser.evaluate("getComputedStyle(document.body).color")
        browser.evaluate("document.querySelector('#pipelines a').click()")
        browser.wait_for("location.pathname === '/reports/demo/' && document.readyState === 'complete'")
        browser.wait_for("document.querySelectorAll('.js-plotly-plot').length === 6 && "
                         "document.querySelectorAll('#feature-drilldown .main-svg').length >= 2")
        loaded = browser.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        band = browser.evaluate("document.querySelectorAll('#estimated-performance .scatterlayer .js-fill').length")
        alert = browser.evaluate("document.getElementById('estimated-performance').data"
                                 ".filter(t => t.name === 'alert: estimated drop').length")
        before = browser.evaluate("document.getElementById('feature-drilldown').layout.title.text")
        browser.evaluate("document.getElementById('drift-heatmap').emit('plotly_click', {points: [{y: 'x3'}]})")
        after = browser.wait_for("document.getElementById('feature-drilldown').layout.title.text.startsWith('x3') "
                                 "&& document.getElementById('feature-drilldown').layout.title.text")
        shown = browser.evaluate("document.getElementById('feature-drilldown').data.filter(t => t.visible === true)"
                                 ".map(t => t.name)")
        report_width = browser.evaluate("document.documentElement.scrollWidth")
        errors = browser.errors()
    assert errors == [], errors
    assert rows == 1 and landing_width <= 1280 and report_width <= 1280
    assert color == "rgb(31, 41, 51)"  # dark text on the white page
    assert [u for u in loaded if u.endswith(".js")] == [f"{live_server}{PLOTLY_ROUTE}"]  # no CDN
    assert band >= 1 and alert == 0  # block 3's concept flip leaves the estimate high (docs/estimation.md)
    assert before.startswith("x1:") and after.startswith("x3:")
    assert shown == ["reference (the champion’s training rows)", "block (the block)"]
