"""The demo's story end to end in a live `dagster dev`, seen the way a newcomer sees it.

Block files are dropped into the watched folder (by hand, then with `calmops demo --next`) and processed by
the sensor's runs with nobody clicking; then headless Chromium opens the Dagster UI and keeps screenshots
(test artifacts, under ``$CALMOPS_TEST_ARTIFACTS``, default ``test-artifacts/`` of the repository) of the
asset graph, the drifted block's ``drift_report`` partition, the checks and the ``monitoring`` overview.

Dagster shows a "Join the Dagster community" modal on the first visit to a local UI; it is dismissed the
way the UI itself remembers it: ``localStorage["communityNux"]`` set before every page loads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cdp_browser import Browser
from dagster import DagsterInstance
from live_processes import free_port, wait_for
from test_dagster_dev import CALMOPS, make_demo, processed_blocks, running_dev, server_up

# `make test` distributes whole modules (`--dist loadfile`): both tests run on one worker, one after the
# other, so `demo_story` is built once.

REPO = Path(__file__).resolve().parents[1]
NO_COMMUNITY_MODAL = "localStorage.setItem('communityNux', JSON.stringify('1'))"


@pytest.fixture(scope="module")
def demo_story(tmp_path_factory):
    """`calmops demo` (3 blocks, drift at block 3, none in the watched folder) and `calmops dev`; block 1 is
    copied in by hand, blocks 2 and 3 dropped by `calmops demo --next`, all processed by the sensor's runs.
    Stopped (whole process group) after the module."""
    root = tmp_path_factory.mktemp("demo_story")
    home, port = root / "home", free_port()
    make_demo(home, "--drift-at", "3")
    env = {**os.environ, "CALMOPS_HOME": str(home)}
    with running_dev(home, port, root / "dagster_dev.log") as process:
        wait_for(lambda: server_up(process, port), 300, "the webserver to answer /server_info")
        blocks_dir, data_dir = home / "demo" / "demo" / "blocks", home / "demo" / "demo" / "data"
        first = blocks_dir / "block_001.csv"
        shutil.copy(first, data_dir / first.name)
        wait_for(lambda: "1" in processed_blocks(home / "metrics.duckdb"), 300, "block 1 to be processed")
        dropped = [subprocess.run([*CALMOPS, "demo", "--next"], env=env, check=True, capture_output=True,
                                  text=True).stdout.splitlines()[0] for _ in range(2)]
        wait_for(lambda: processed_blocks(home / "metrics.duckdb") == {"1", "2", "3"}, 600, "blocks 2 and 3")
        yield home, port, dropped


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("CALMOPS_TEST_ARTIFACTS", REPO / "test-artifacts")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_dropped_block_files_are_processed_unattended(demo_story):
    home, _, dropped = demo_story
    assert dropped[0].startswith("copied block_002.csv (block 2)")
    assert dropped[1].startswith("copied block_003.csv (block 3)")
    assert (home / "pipelines" / "demo" / "models" / "champion.json").is_file()
    assert (home / "dagster" / "dagster.yaml").is_file()
    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs()
    assert sorted(run.tags["dagster/partition"] for run in runs) == ["1", "2", "3"]
    assert {run.tags.get("dagster/sensor_name") for run in runs} == {"demo_files"}  # nobody clicked


#: the lineage graph draws its edges (SVG paths) a moment after its nodes; the pipeline has 9 dependencies
EDGES_DRAWN = "document.querySelectorAll('path[stroke=\"var(--color-lineage-edge)\"]').length >= 9"
#: page, its path in the UI, texts that show it rendered the story (not a spinner or an error), and any other
#: condition it must meet before its screenshot
PAGES = [
    ("asset_graph", "/asset-groups/demo",
     ["data_block", "drift_report", "challenger_model", "champion_model", "predictions", "monitoring"],
     EDGES_DRAWN),
    ("drift_report_partition", "/assets/demo/drift_report?view=partitions&partition=3",
     ["drift_share", "drifted_features", "report_url"], None),
    ("checks", "/assets/demo/drift_report?view=checks", ["no_data_drift"], None),
    ("monitoring_overview", "/assets/demo/monitoring",
     ["champion", "last_decisions", "drift_per_block", "pipeline_report"], None),
]


def test_the_dagster_ui_tells_the_story(demo_story, artifacts, tmp_path):
    _, port, _ = demo_story
    shots = {}
    with Browser(tmp_path / "profile", width=1400, height=900) as browser:
        browser.before_each_page(NO_COMMUNITY_MODAL)
        for name, path, texts, extra in PAGES:
            browser.open(f"http://127.0.0.1:{port}{path}")
            condition = " && ".join([*(f"document.body.innerText.includes({text!r})" for text in texts),
                                     *([extra] if extra else [])])
            browser.wait_for(condition, timeout=120)
            assert "Join the Dagster community" not in browser.evaluate("document.body.innerText")
            shots[name] = browser.screenshot(artifacts / f"{name}.png", full_page=False)
    for name, shot in shots.items():
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000, name  # a drawn page, not a blank one
