"""End to end with the real `dagster dev` (webserver, daemon, sensor, run launcher) on a temporary home.

One home with four pipelines and two lives of `dagster dev` (starting one is a good part of each story's
time, so the stories share them; `make test` gives a whole module to one worker, `--dist loadfile`):

- `stalled`: `dagster dev` killed mid-training must pick up where it was after a restart;
- `late`: a late block dropped in must not turn production back to an old model;
- `flaky` (training always fails) and `demo` send their alerts to a real local HTTP receiver: each alert
  arrives once, `flaky`'s `breaker_open` from the run-failure sensor, and no webhook URL reaches a log;
- `demo`: the demo's story as a newcomer sees it. Block files are dropped into the watched folder (by hand,
  then with `calmops demo --next`) and processed by the sensor's runs with nobody clicking; then headless
  Chromium opens the Dagster UI (the first page loaded, the next ones reached inside the app, as its links
  go) and keeps screenshots (test artifacts, under ``$CALMOPS_TEST_ARTIFACTS``,
  default ``test-artifacts/`` of the repository) of the asset graph, the drifted block's ``drift_report``
  partition, the checks and the ``monitoring`` overview.

Stopping `dagster dev` must leave no process behind. Dagster shows a "Join the Dagster community" modal on
the first visit to a local UI; it is dismissed the way the UI itself remembers it:
``localStorage["communityNux"]`` set before every page loads.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest
import yaml
from cdp_browser import Browser
from dagster import DagsterInstance, DagsterRunStatus
from live_processes import answers_200, free_port, group_alive, stop_group, wait_for
from webhook_receiver import WebhookReceiver

from calmops_dagster.interfaces.cli import main

CALMOPS = [sys.executable, "-m", "calmops_dagster.interfaces.cli"]

REPO = Path(__file__).resolve().parents[1]
TOKEN = "T0K3N-d3v"  # in the webhook URLs: it must never reach a log
NO_COMMUNITY_MODAL = "localStorage.setItem('communityNux', JSON.stringify('1'))"


def processed_blocks(db: Path, pipeline: str = "demo") -> set[str]:
    """The blocks of ``pipeline`` with a promotion decision; empty while the metrics cannot be read yet."""
    return set(promotions_by_block(db, pipeline))


def promotions_by_block(db: Path, pipeline: str) -> dict:
    """``{block: (decision, late, champion_after)}`` of ``pipeline``, from the metrics catalog."""
    if not db.exists():
        return {}
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            rows = con.execute("SELECT block, decision, late, champion_after FROM promotions WHERE pipeline = ?",
                               [pipeline]).fetchall()
    except duckdb.Error:  # the catalog is being rewritten, or tables are not created yet
        return {}
    return {block: (decision, late, after) for block, decision, late, after in rows}


@contextmanager
def running_dev(home: Path, port: int, log_path: Path, **env):
    """`calmops dev` on ``home`` in its own process group; the whole group is stopped (SIGTERM) after."""
    env = {**os.environ, "CALMOPS_HOME": str(home), **env}
    with open(log_path, "a") as log:
        # `calmops dev` restores default SIGINT/SIGTERM handling before it execs dagster dev
        process = subprocess.Popen([*CALMOPS, "dev", "--port", str(port)], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            yield process
        finally:
            stop_group(process, timeout=60)
    assert not group_alive(process.pid), "dagster dev left processes behind"


def make_demo(home: Path, *args: str) -> None:
    """``calmops demo`` in this process (the story's setup, not its subject: `--next` runs as a command)."""
    assert main(["--home", str(home), "demo", "--initial", "0", "--blocks", "3", "--rows-per-block", "200",
                 *args]) == 0


def demo_files(home: Path, pipeline: str) -> tuple[list[Path], Path]:
    """A demo pipeline's block files in block order, and the folder its sensor watches."""
    base = home / "demo" / pipeline
    return sorted((base / "blocks").glob("*.csv")), base / "data"


def server_up(process, port):
    return answers_200(f"http://127.0.0.1:{port}/server_info", process, timeout=2)


def promotion_order(db: Path, pipeline: str) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return [row[0] for row in con.execute(
            "SELECT block FROM promotions WHERE pipeline = ? ORDER BY decided_at", [pipeline]).fetchall()]


@dataclass
class Story:
    """What the module's scenario left and saw: its home, the live `dagster dev`'s port, what `calmops demo
    --next` printed, and the `late` pipeline's decisions just before its late block 3 was copied in."""

    home: Path
    port: int
    hooks: WebhookReceiver
    dev_log: Path
    dropped: list[str] = field(default_factory=list)
    late_before_block_3: dict = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return self.home / "metrics.duckdb"


@pytest.fixture(scope="module")
def story(tmp_path_factory) -> Story:
    """Three pipelines in one home, and two lives of `dagster dev`:

    1. `stalled` (a tree whose fit stalls) gets blocks 1 and 2; the whole of `dagster dev` is SIGKILLed while
       block 1 trains, with block 2 queued behind it.
    2. `dagster dev` is started again, and stays up for the module's tests. `stalled` resumes. `late` gets
       blocks 1, 2, 4 and 5 (drift at 4 promotes v0002), then block 3 of the old regime. `demo` (4 blocks,
       drift at block 4, as in the README) gets block 1 by hand, then blocks 2-4 by `calmops demo --next`.
       `flaky` gets its block 1, whose training fails: the breaker opens. `demo` and `flaky` alert a live
       local receiver, which stays up for the module's tests.
    """
    root = tmp_path_factory.mktemp("dagster_dev")
    home, port, signal_file = root / "home", free_port(), root / "training"
    make_demo(home, "--blocks", "4", "--drift-at", "4")  # the README's story: drift at 4
    make_demo(home, "--name", "stalled")
    make_demo(home, "--name", "late", "--blocks", "5")
    spec_path = home / "pipelines" / "stalled" / "pipeline.yaml"
    raw = yaml.safe_load(spec_path.read_text())
    raw["model_spec"] = {"module": "calmops_dagster.learning.testing_models", "class": "ControlledTree",
                         "params": {"random_state": 0}}
    spec_path.write_text(yaml.safe_dump(raw))
    make_demo(home, "--name", "flaky", "--blocks", "1")

    stalled_blocks, stalled_data = demo_files(home, "stalled")
    for path in stalled_blocks[:2]:  # in the watched folder before `dagster dev` starts: settled at its first tick
        shutil.copy(path, stalled_data / path.name)
    with running_dev(home, port, root / "dev1.log", CALMOPS_TEST_FIT_SIGNAL=str(signal_file),
                     CALMOPS_TEST_FIT_SLEEP="600") as process:
        wait_for(lambda: server_up(process, port), 300, "the webserver to answer /server_info")
        wait_for(signal_file.exists, 400, "stalled's block 1 to start training")
        os.killpg(os.getpgid(process.pid), signal.SIGKILL)  # no clean shutdown: the run stays "started"

    late_blocks, late_data = demo_files(home, "late")
    demo_blocks, demo_data = demo_files(home, "demo")
    flaky_blocks, flaky_data = demo_files(home, "flaky")
    with WebhookReceiver() as hooks:
        add_alerts(home, "demo", hooks.url(f"/demo/{TOKEN}"))
        add_alerts(home, "flaky", hooks.url(f"/flaky/{TOKEN}"),
                   model_spec={"module": "calmops_dagster.learning.testing_models", "class": "FailingTree"},
                   circuit_breaker={"max_failures": 1, "backoff_minutes": 60})
        story = Story(home, port, hooks, root / "dev2.log")
        with running_dev(home, port, story.dev_log) as process:
            shutil.copy(flaky_blocks[0], flaky_data / flaky_blocks[0].name)
            for index in (0, 1, 3, 4):
                shutil.copy(late_blocks[index], late_data / late_blocks[index].name)
            shutil.copy(demo_blocks[0], demo_data / demo_blocks[0].name)
            wait_for(lambda: "1" in processed_blocks(story.db, "demo"), 300, "demo's block 1")
            env = {**os.environ, "CALMOPS_HOME": str(home)}
            story.dropped = [subprocess.run([*CALMOPS, "demo", "--next"], env=env, check=True, capture_output=True,
                                            text=True).stdout.splitlines()[0] for _ in range(3)]
            wait_for(lambda: {"1", "2", "4", "5"} <= set(promotions_by_block(story.db, "late")), 600,
                     "late's blocks 1, 2, 4, 5")
            story.late_before_block_3 = promotions_by_block(story.db, "late")
            shutil.copy(late_blocks[2], late_data / late_blocks[2].name)
            wait_for(lambda: "3" in promotions_by_block(story.db, "late"), 300, "late's late block 3")
            wait_for(lambda: processed_blocks(story.db, "demo") == {"1", "2", "3", "4"}, 600, "demo's blocks 2-4")
            wait_for(lambda: len(processed_blocks(story.db, "stalled")) == 2, 600, "stalled's blocks 1 and 2")
            wait_for(lambda: hooks.bodies(f"/flaky/{TOKEN}"), 300, "flaky's breaker_open from the run-failure sensor")
            wait_for(lambda: server_up(process, port), 120, "the webserver to answer /server_info")
            yield story


def add_alerts(home: Path, pipeline: str, webhook: str, **extra) -> None:
    spec_path = home / "pipelines" / pipeline / "pipeline.yaml"
    raw = yaml.safe_load(spec_path.read_text())
    raw["alerts"] = {"webhooks": [webhook], "retry_seconds": 0}
    raw.update(extra)
    spec_path.write_text(yaml.safe_dump(raw))


def runs_of(home: Path, pipeline: str) -> list:
    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        return [run for run in instance.get_runs() if run.tags.get("calmops/pipeline") == pipeline]


def test_dagster_dev_killed_mid_training_resumes_in_block_order_after_a_restart(story):
    """After the SIGKILL, the run left "started" is marked failed, and block 1 runs again ahead of block 2, in
    block order."""
    assert promotion_order(story.db, "stalled") == ["1", "2"]
    reaped = [run for run in runs_of(story.home, "stalled") if run.tags.get("calmops/reaped") == "true"]
    assert len(reaped) == 1 and reaped[0].status == DagsterRunStatus.FAILURE
    assert reaped[0].tags["dagster/partition"] == "1"
    assert not [run for run in runs_of(story.home, "late") + runs_of(story.home, "demo")
                if run.tags.get("calmops/reaped")]


def test_a_late_block_dropped_into_dagster_dev_does_not_turn_production_back(story):
    """The issue's recipe through the real sensor, daemon and run launcher: block 4 promoted v0002 before block
    3 of the old regime was copied in; block 3 is processed, recorded as late, and the champion stays."""
    before = story.late_before_block_3
    assert before["4"][0] == "promoted"
    champion = before["5"][2]
    decision, late, after = promotions_by_block(story.db, "late")["3"]
    assert decision == "late_kept" and late and after == champion
    pointer = yaml.safe_load((story.home / "pipelines" / "late" / "models" / "champion.json").read_text())
    assert pointer["version"] == champion


def test_dropped_block_files_are_processed_unattended(story):
    assert story.dropped[0].startswith("copied block_002.csv (block 2)")
    assert story.dropped[1].startswith("copied block_003.csv (block 3)")
    assert story.dropped[2].startswith("copied block_004.csv (block 4)")
    assert (story.home / "pipelines" / "demo" / "models" / "champion.json").is_file()
    assert (story.home / "dagster" / "dagster.yaml").is_file()
    runs = runs_of(story.home, "demo")
    assert sorted(run.tags["dagster/partition"] for run in runs) == ["1", "2", "3", "4"]
    assert {run.tags.get("dagster/sensor_name") for run in runs} == {"calmops_files"}  # nobody clicked


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("CALMOPS_TEST_ARTIFACTS", REPO / "test-artifacts")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


#: the lineage graph draws its edges (SVG paths) a moment after its nodes; the pipeline has 9 dependencies
EDGES_DRAWN = "document.querySelectorAll('path[stroke=\"var(--color-lineage-edge)\"]').length >= 9"
#: page, its path in the UI, texts that show it rendered the story (not a spinner or an error; none of them on
#: the page before it, which stays up until the app has drawn the next), and any other condition it must meet
#: before its screenshot
PAGES = [
    # the group's own page: `/asset-groups/demo` shows the global lineage, every group folded, once the code
    # location holds more than one pipeline
    ("asset_graph", "/locations/calmops_dagster.definitions/asset-groups/demo",
     ["data_block", "drift_report", "challenger_model", "champion_model", "predictions", "monitoring"],
     EDGES_DRAWN),
    ("drift_report_partition", "/assets/demo/drift_report?view=partitions&partition=4",
     ["drift_share", "drifted_features", "report_url"], None),
    ("checks", "/assets/demo/drift_report?view=checks", ["no_data_drift", "Execution history"], None),
    ("monitoring_overview", "/assets/demo/monitoring",
     ["champion", "last_decisions", "drift_per_block", "pipeline_report"], None),
]


def test_the_dagster_ui_tells_the_story(story, artifacts, tmp_path):
    shots = {}
    with Browser(tmp_path / "profile", width=1400, height=900) as browser:
        browser.before_each_page(NO_COMMUNITY_MODAL)
        for index, (name, path, texts, extra) in enumerate(PAGES):
            if index == 0:
                browser.open(f"http://127.0.0.1:{story.port}{path}")
            else:  # as the UI's links go, without loading the app again (a load per page: 40% more CPU)
                browser.follow(path)
            condition = " && ".join([*(f"document.body.innerText.includes({text!r})" for text in texts),
                                     *([extra] if extra else [])])
            browser.wait_for(condition, timeout=120)
            assert "Join the Dagster community" not in browser.evaluate("document.body.innerText")
            shots[name] = browser.screenshot(artifacts / f"{name}.png", full_page=False)
    for name, shot in shots.items():
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000, name  # a drawn page, not a blank one


def test_the_landing_page_and_the_report_tell_the_story(story, artifacts, tmp_path):
    """`calmops serve` beside the live `dagster dev`: the landing page lists the three pipelines, and the demo's
    report draws the estimate beside the truth; both screenshots are kept (the README shows them)."""
    port = free_port()
    env = {**os.environ, "CALMOPS_HOME": str(story.home)}
    server = subprocess.Popen([*CALMOPS, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: answers_200(f"http://127.0.0.1:{port}/health", server, timeout=5), 180, "calmops serve")
        with Browser(tmp_path / "profile", width=1280, height=800) as browser:
            browser.open(f"http://127.0.0.1:{port}/")
            browser.wait_for("['demo', 'late', 'stalled'].every(n => document.body.innerText.includes(n))"
                             " && document.body.innerText.includes('v0002')", timeout=120)
            landing = browser.screenshot(artifacts / "landing_page.png", full_page=False)
            browser.open(f"http://127.0.0.1:{port}/reports/demo/")
            browser.wait_for("document.querySelector('#estimated-performance .main-svg') !== null", timeout=120)
            browser.evaluate("document.querySelector('#estimated-performance').scrollIntoView()")
            estimate = browser.screenshot(artifacts / "estimate_plot.png", full_page=False)
    finally:
        stop_group(server)
    for shot in (landing, estimate):
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000, shot.name


def test_each_alert_arrives_once_and_no_webhook_url_is_logged(story):
    """Through the sensor, daemon, run launcher and run-failure sensor. Run last in the module: by then the
    run-failure sensor has ticked many times more, and nothing may have arrived twice."""
    demo = [(body["block"], body["event"]) for body in story.hooks.bodies(f"/demo/{TOKEN}")]
    flaky = story.hooks.bodies(f"/flaky/{TOKEN}")
    assert demo[0] == ("1", "promotion") and ("4", "drift") in demo
    assert demo.index(("4", "drift")) < demo.index(("4", "promotion"))
    assert not [key for key, count in Counter(demo).items() if count > 1]  # once each
    assert [(body["block"], body["event"]) for body in flaky] == [("1", "breaker_open")]
    assert "injected training failure" in flaky[0]["summary"] and flaky[0]["text"].startswith("calmops breaker_open")
    logged = story.dev_log.read_text() + "".join(
        path.read_text() for path in (story.home / "pipelines").glob("*/logs/pipeline.log"))
    assert "alert promotion of block 1 sent to webhook sha256:" in logged
    assert TOKEN not in logged
