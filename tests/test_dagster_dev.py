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
from pathlib import Path

import duckdb
import yaml
from dagster import DagsterInstance, DagsterRunStatus
from live_processes import answers_200, free_port, group_alive, stop_group, wait_for

CALMOPS = [sys.executable, "-m", "calmops_dagster.interfaces.cli"]

# Each test starts a whole `dagster dev` (webserver, daemon, code server): `make test` distributes whole
# modules (`--dist loadfile`), so they run one after the other on one worker.


def processed_blocks(db: Path) -> set[str]:
    if not db.exists():
        return set()
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            return {row[0] for row in con.execute("SELECT block FROM promotions").fetchall()}
    except duckdb.Error:  # a run holds the write lock, or tables are not created yet
        return set()


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


def server_up(process, port):
    return answers_200(f"http://127.0.0.1:{port}/server_info", process, timeout=2)


def promotion_order(db: Path) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return [row[0] for row in con.execute("SELECT block FROM promotions ORDER BY decided_at").fetchall()]


def test_dagster_dev_killed_mid_training_resumes_in_block_order_after_a_restart(tmp_path):
    """The whole of `dagster dev` is SIGKILLed while block 1 trains (block 2 queued behind it), then started
    again: the run left "started" is marked failed, block 1 runs again ahead of block 2, in block order."""
    home, port, signal_file = tmp_path / "home", free_port(), tmp_path / "training"
    make_demo(home)
    spec_path = home / "pipelines" / "demo" / "pipeline.yaml"
    raw = yaml.safe_load(spec_path.read_text())
    raw["model_spec"] = {"module": "calmops_dagster.learning.testing_models", "class": "ControlledTree",
                         "params": {"random_state": 0}}
    spec_path.write_text(yaml.safe_dump(raw))
    blocks_dir, data_dir = home / "demo" / "demo" / "blocks", home / "demo" / "demo" / "data"

    with running_dev(home, port, tmp_path / "dev1.log", CALMOPS_TEST_FIT_SIGNAL=str(signal_file),
                     CALMOPS_TEST_FIT_SLEEP="600") as process:
        wait_for(lambda: server_up(process, port), 300, "the webserver to answer /server_info")
        for path in sorted(blocks_dir.glob("*.csv"))[:2]:
            shutil.copy(path, data_dir / path.name)
        wait_for(signal_file.exists, 400, "block 1 to start training")
        os.killpg(os.getpgid(process.pid), signal.SIGKILL)  # no clean shutdown: the run stays "started"

    with running_dev(home, port, tmp_path / "dev2.log") as process:
        wait_for(lambda: len(processed_blocks(home / "metrics.duckdb")) == 2, 600, "blocks 1 and 2")
    assert promotion_order(home / "metrics.duckdb") == ["1", "2"]
    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs()
    reaped = [run for run in runs if run.tags.get("calmops/reaped") == "true"]
    assert len(reaped) == 1 and reaped[0].status == DagsterRunStatus.FAILURE
    assert reaped[0].tags["dagster/partition"] == "1"


def promotions_by_block(db: Path) -> dict:
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            rows = con.execute("SELECT block, decision, late, champion_after FROM promotions").fetchall()
    except duckdb.Error:  # a run holds the write lock, or tables are not created yet
        return {}
    return {block: (decision, late, after) for block, decision, late, after in rows}


def test_a_late_block_dropped_into_dagster_dev_does_not_turn_production_back(tmp_path):
    """The issue's recipe through the real sensor, daemon and run launcher: blocks 1, 2, 4, 5 (drift at 4
    promotes v0002), then block 3 of the old regime is copied in. It is processed, recorded as late, and the
    champion stays v0002."""
    home, port = tmp_path / "home", free_port()
    subprocess.run([*CALMOPS, "demo", "--initial", "0", "--blocks", "5", "--rows-per-block", "200"],
                   env={**os.environ, "CALMOPS_HOME": str(home)}, check=True, capture_output=True)
    blocks_dir, data_dir = home / "demo" / "demo" / "blocks", home / "demo" / "demo" / "data"
    files, db = sorted(blocks_dir.glob("*.csv")), home / "metrics.duckdb"
    with running_dev(home, port, tmp_path / "dagster_dev.log") as process:
        wait_for(lambda: server_up(process, port), 120, "the webserver to answer /server_info")
        for index in (0, 1, 3, 4):
            shutil.copy(files[index], data_dir / files[index].name)
        wait_for(lambda: {"1", "2", "4", "5"} <= set(promotions_by_block(db)), 480, "blocks 1, 2, 4, 5")
        assert promotions_by_block(db)["4"][0] == "promoted"
        champion = promotions_by_block(db)["5"][2]
        shutil.copy(files[2], data_dir / files[2].name)
        wait_for(lambda: "3" in promotions_by_block(db), 300, "the late block 3")
    decision, late, after = promotions_by_block(db)["3"]
    assert decision == "late_kept" and late and after == champion
    pointer = yaml.safe_load((home / "pipelines" / "demo" / "models" / "champion.json").read_text())
    assert pointer["version"] == champion
