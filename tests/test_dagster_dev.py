"""End to end with the real `dagster dev` (webserver, daemon, sensor, run launcher) on a temporary home.

Stopping `dagster dev` must leave no process behind, and a `dagster dev` killed mid-run must pick up where
it was after a restart. Block files processed with nobody clicking, and the UI, are in test_dagster_ui.py,
which uses the helpers of this module.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus
from live_processes import answers_200, free_port, group_alive, stop_group, wait_for

CALMOPS = [sys.executable, "-m", "calmops_dagster.interfaces.cli"]

# The module's scenario starts a whole `dagster dev` (webserver, daemon, code server) twice; `make test`
# distributes whole modules (`--dist loadfile`), so both tests use the one scenario on one worker.


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
    subprocess.run([*CALMOPS, "demo", "--initial", "0", "--blocks", "3", "--rows-per-block", "200", *args],
                   env={**os.environ, "CALMOPS_HOME": str(home)}, check=True, capture_output=True)


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
class TwoLives:
    """What the scenario of this module saw: its home, and the `late` pipeline's decisions and champion just
    before its late block 3 was copied in."""

    home: Path
    late_before_block_3: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def two_lives(tmp_path_factory) -> TwoLives:
    """One home with two pipelines, and two lives of `dagster dev` (one `dagster dev` start is about a third
    of each story's time, so both stories share them):

    1. `demo` (a tree whose fit stalls) gets blocks 1 and 2; the whole of `dagster dev` is SIGKILLed while
       block 1 trains, with block 2 queued behind it.
    2. `dagster dev` is started again. `demo` resumes; meanwhile `late` gets blocks 1, 2, 4 and 5 (drift at 4
       promotes v0002), then block 3 of the old regime.
    """
    root = tmp_path_factory.mktemp("dagster_dev")
    home, port, signal_file, db = root / "home", free_port(), root / "training", root / "home" / "metrics.duckdb"
    make_demo(home)
    make_demo(home, "--name", "late", "--blocks", "5")
    spec_path = home / "pipelines" / "demo" / "pipeline.yaml"
    raw = yaml.safe_load(spec_path.read_text())
    raw["model_spec"] = {"module": "calmops_dagster.learning.testing_models", "class": "ControlledTree",
                         "params": {"random_state": 0}}
    spec_path.write_text(yaml.safe_dump(raw))
    demo_blocks, demo_data = demo_files(home, "demo")
    late_blocks, late_data = demo_files(home, "late")
    scenario = TwoLives(home)

    with running_dev(home, port, root / "dev1.log", CALMOPS_TEST_FIT_SIGNAL=str(signal_file),
                     CALMOPS_TEST_FIT_SLEEP="600") as process:
        wait_for(lambda: server_up(process, port), 300, "the webserver to answer /server_info")
        for path in demo_blocks[:2]:
            shutil.copy(path, demo_data / path.name)
        wait_for(signal_file.exists, 400, "demo's block 1 to start training")
        os.killpg(os.getpgid(process.pid), signal.SIGKILL)  # no clean shutdown: the run stays "started"

    with running_dev(home, port, root / "dev2.log"):
        for index in (0, 1, 3, 4):
            shutil.copy(late_blocks[index], late_data / late_blocks[index].name)
        wait_for(lambda: {"1", "2", "4", "5"} <= set(promotions_by_block(db, "late")), 600, "late's blocks 1, 2, 4, 5")
        scenario.late_before_block_3 = promotions_by_block(db, "late")
        shutil.copy(late_blocks[2], late_data / late_blocks[2].name)
        wait_for(lambda: "3" in promotions_by_block(db, "late"), 300, "late's late block 3")
        wait_for(lambda: len(processed_blocks(db, "demo")) == 2, 600, "demo's blocks 1 and 2")
    return scenario


def test_dagster_dev_killed_mid_training_resumes_in_block_order_after_a_restart(two_lives):
    """After the SIGKILL, the run left "started" is marked failed, and block 1 runs again ahead of block 2, in
    block order."""
    assert promotion_order(two_lives.home / "metrics.duckdb", "demo") == ["1", "2"]
    with DagsterInstance.from_config(str(two_lives.home / "dagster")) as instance:
        runs = instance.get_runs()
    reaped = [run for run in runs if run.tags.get("calmops/reaped") == "true"]
    assert len(reaped) == 1 and reaped[0].status == DagsterRunStatus.FAILURE
    assert reaped[0].tags["dagster/partition"] == "1" and reaped[0].tags["calmops/pipeline"] == "demo"


def test_a_late_block_dropped_into_dagster_dev_does_not_turn_production_back(two_lives):
    """The issue's recipe through the real sensor, daemon and run launcher: block 4 promoted v0002 before block
    3 of the old regime was copied in; block 3 is processed, recorded as late, and the champion stays."""
    before = two_lives.late_before_block_3
    assert before["4"][0] == "promoted"
    champion = before["5"][2]
    decision, late, after = promotions_by_block(two_lives.home / "metrics.duckdb", "late")["3"]
    assert decision == "late_kept" and late and after == champion
    pointer = yaml.safe_load((two_lives.home / "pipelines" / "late" / "models" / "champion.json").read_text())
    assert pointer["version"] == champion
