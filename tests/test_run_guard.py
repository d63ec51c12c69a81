"""One `calmops run` of a pipeline at a time; SIGTERM stops it between blocks with a non-zero exit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from calmops_dagster.interfaces.cli import main
from calmops_dagster.orchestration.run_guard import pipeline_lock
from calmops_dagster.store.metrics_store import MetricsStore


def stable_copies(files, data_dir):
    old = time.time() - 60
    for path in files:
        os.utime(shutil.copy(path, data_dir), (old, old))


def test_second_run_of_a_pipeline_exits_with_a_clear_message(demo_spec, home, block_files, capsys, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    stable_copies(block_files[:1], demo_spec.data_dir)
    with pipeline_lock(home.pipeline_dir("demo"), "demo"):  # an overlapping run holds the pipeline
        assert main(["run", "demo"]) == 2
    err = capsys.readouterr().err
    assert "pipeline 'demo' is already being processed (pid" in err and "--wait" in err
    assert MetricsStore(home.metrics_db).query("SELECT * FROM blocks").empty  # it did nothing
    assert main(["run", "demo", "--wait"]) == 0  # free again: this one processes the block
    assert len(MetricsStore(home.metrics_db).query("SELECT * FROM blocks")) == 1


def test_sigterm_stops_after_the_current_block_and_exits_non_zero(demo_spec, home, block_files, tmp_path):
    stable_copies(block_files[:3], demo_spec.data_dir)
    env = {**os.environ, "CALMOPS_HOME": str(home.root)}
    env.pop("DAGSTER_HOME", None)
    log = home.pipeline_dir("demo") / "logs" / "pipeline.log"
    process = subprocess.Popen([sys.executable, "-m", "calmops_dagster.interfaces.cli", "run", "demo"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 900
        while not (log.is_file() and "block 1:" in log.read_text()):  # block 1 is past drift_report
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "block 1 never started"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=900)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, (out, err)
    done = [line.split(":")[0] for line in out.splitlines() if line.startswith("block ")]
    assert done and len(done) < 3 and all(": ok " in line for line in out.splitlines() if line.startswith("block "))
    assert f"stopped by SIGTERM after {done[-1]}" in err and "still pending" in err
    os.environ["DAGSTER_HOME"] = str(home.dagster_home)
    with DagsterInstance.get() as instance:  # no step was cut halfway and no next block started
        runs = instance.get_runs(RunsFilter(tags={"calmops/pipeline": "demo"}))
        assert sorted(run.tags["dagster/partition"] for run in runs) == sorted(b.split()[1] for b in done)
        assert {run.status for run in runs} == {DagsterRunStatus.SUCCESS}
    blocks = MetricsStore(home.metrics_db).query("SELECT block FROM blocks ORDER BY block")["block"].tolist()
    assert blocks == [b.split()[1] for b in done]


@pytest.fixture(autouse=True)
def _restore_dagster_home():
    before = os.environ.get("DAGSTER_HOME")
    yield
    if before is None:
        os.environ.pop("DAGSTER_HOME", None)
    else:
        os.environ["DAGSTER_HOME"] = before
