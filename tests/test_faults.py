"""Concurrency and faults: parallel processes writing the metric tables, and a run SIGKILLed mid-training."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import pytest
from conftest import block_spec_dict
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.interfaces.cli import main
from calmops_dagster.spec import parse_spec, save_spec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore

WRITER = """
import sys
from calmops_dagster.store.metrics_store import MetricsStore
db, pipeline, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = MetricsStore(db)
for block in range(n):
    store.replace_block_rows("drift_results", pipeline, str(block),
                             [{"feature": f"f{i}", "test": "ks", "p_value": i / 10} for i in range(10)])
    store.append_rows("quarantine", [{"pipeline": pipeline, "file": f"{block}.csv", "reason": "test"}])
"""


def test_parallel_processes_writing_metrics_lose_no_row(tmp_path):
    """Three processes write the metric tables at once: every row arrives."""
    db = str(tmp_path / "metrics.duckdb")
    workers = [subprocess.Popen([sys.executable, "-c", WRITER, db, name, "20"]) for name in ("a", "b", "c")]
    assert [w.wait(timeout=600) for w in workers] == [0, 0, 0]
    with duckdb.connect(db, read_only=True) as con:
        counts = dict(con.execute("SELECT pipeline, count(*) FROM drift_results GROUP BY pipeline").fetchall())
        logged = dict(con.execute("SELECT pipeline, count(*) FROM quarantine GROUP BY pipeline").fetchall())
    assert counts == {"a": 200, "b": 200, "c": 200}
    assert logged == {"a": 20, "b": 20, "c": 20}


def test_a_connection_held_on_the_catalog_blocks_neither_reads_nor_writes(tmp_path):
    """Someone keeps ``metrics.duckdb`` open, even for writing (an analyst's session, another thread): the
    store still reads and writes at once, since it commits to Delta tables and reads them in memory."""
    store = MetricsStore(tmp_path / "metrics.duckdb", max_wait_seconds=1.0)
    store.append_rows("quarantine", [{"pipeline": "a", "file": "0.csv", "reason": "test"}])
    held = duckdb.connect(str(store.path))
    try:
        store.append_rows("quarantine", [{"pipeline": "a", "file": "1.csv", "reason": "test"}])
        assert len(store.query("SELECT * FROM quarantine")) == 2
        assert len(held.execute("SELECT * FROM quarantine").fetchall()) == 2
    finally:
        held.close()


def make_pipeline(home, tmp_path, name, n_blocks, drift_at, model_spec=None, seed=0):
    frame = make_drifting_blocks(n_blocks=n_blocks, rows_per_block=200, drift_at=drift_at, seed=seed)
    files = write_blocks(frame, tmp_path / f"{name}_staging", block_col="block")
    data_dir = tmp_path / f"{name}_data"
    data_dir.mkdir()
    overrides = {"model_spec": model_spec} if model_spec else {}
    path = home.spec_path(name)
    spec = parse_spec(block_spec_dict(name, data_dir, **overrides), path)
    save_spec(spec, path)
    return spec, sorted(files)


def calmops(home, *args, env=None, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "calmops_dagster.interfaces.cli", "--home", str(home.root), *args],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, **kwargs)


def test_two_pipelines_run_in_parallel_processes_and_every_row_arrives(home, tmp_path):
    for name, seed in (("alpha", 1), ("beta", 2)):
        spec, files = make_pipeline(home, tmp_path, name, n_blocks=3, drift_at=3, seed=seed)
        for file in files:
            shutil.copy(file, spec.data_dir)
    procs = [calmops(home, "run", name) for name in ("alpha", "beta")]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    with duckdb.connect(str(home.metrics_db), read_only=True) as con:
        def per_pipeline(table):
            return dict(con.execute(f"SELECT pipeline, count(DISTINCT block) FROM {table} GROUP BY 1").fetchall())

        for table in ("blocks", "drift_summary", "promotions", "performance"):
            assert per_pipeline(table) == {"alpha": 3, "beta": 3}, table
        assert per_pipeline("drift_results") == {"alpha": 2, "beta": 2}  # block 1 has no reference yet
        dupes = con.execute("SELECT count(*) FROM (SELECT pipeline, block, feature, test, count(*) n "
                            "FROM drift_results GROUP BY ALL HAVING n > 1)").fetchone()[0]
    assert dupes == 0


def table_counts(home, block):
    with duckdb.connect(str(home.metrics_db), read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t} WHERE block = ?", [block]).fetchone()[0]
                for t in ("blocks", "drift_summary", "drift_results", "performance", "promotions")}


def test_run_killed_mid_training_leaves_champion_intact_and_rerun_finishes_without_duplicates(
        home, tmp_path, monkeypatch):
    model = {"module": "calmops_dagster.learning.testing_models", "class": "ControlledTree",
             "params": {"max_depth": 5, "random_state": 0}}
    spec, files = make_pipeline(home, tmp_path, "crashy", n_blocks=3, drift_at=3, model_spec=model, seed=5)
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))  # `calmops run` in-process sets it: restore
    for file in files[:2]:
        shutil.copy(file, spec.data_dir)
    assert main(["run", "crashy"]) == 0
    models = ModelStore(home.models_dir("crashy"))
    champion, pointer = models.champion_version(), (models.root / "champion.json").read_bytes()

    shutil.copy(files[2], spec.data_dir)  # block 3 drifts: a challenger is trained
    marker = tmp_path / "training-started"
    proc = calmops(home, "run", "crashy", env={"CALMOPS_TEST_FIT_SIGNAL": str(marker),
                                                "CALMOPS_TEST_FIT_SLEEP": "60"})
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    assert models.champion_version() == champion
    assert (models.root / "champion.json").read_bytes() == pointer
    models.load(champion)  # hash-checked: the champion file is whole
    killed = table_counts(home, "3")
    assert killed["promotions"] == 0 and killed["blocks"] == 1  # data_block and drift_report had finished

    assert main(["run", "crashy"]) == 0  # the dead run is reaped and block 3 runs again
    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(tags={"dagster/partition": "3"}))
        assert sorted(r.status.value for r in runs) == ["FAILURE", "SUCCESS"]
        killed_run = next(r for r in runs if r.status == DagsterRunStatus.FAILURE)
        messages = [e.message for e in instance.all_logs(killed_run.run_id)]
        assert any("is gone" in (m or "") for m in messages)
    events = MetricsStore(home.metrics_db).query(
        "SELECT run_id, event, step FROM breaker_events WHERE pipeline = 'crashy' AND block = '3' ORDER BY event_at")
    assert events.values.tolist()[0] == [killed_run.run_id, "failure", "challenger_and_champion"]  # killed training
    assert events["event"].tolist()[-1] == "success"  # the rerun resets the count
    after = table_counts(home, "3")
    assert after["promotions"] == after["blocks"] == after["drift_summary"] == 1
    with duckdb.connect(str(home.metrics_db), read_only=True) as con:
        dupes = con.execute("SELECT count(*) FROM (SELECT block, feature, test, count(*) n FROM drift_results "
                            "GROUP BY ALL HAVING n > 1)").fetchone()[0]
        perf_dupes = con.execute("SELECT count(*) FROM (SELECT block, model_version, role, evaluated_on, metric, "
                                 "count(*) n FROM performance GROUP BY ALL HAVING n > 1)").fetchone()[0]
        decision = con.execute("SELECT decision, champion_after FROM promotions WHERE block = '3'").fetchone()
    assert dupes == perf_dupes == 0
    assert decision[1] == models.champion_version()
    models.load(models.champion_version())


def _children() -> set[str]:
    return set(subprocess.run(["pgrep", "-P", str(os.getpid())], check=False, capture_output=True,
                              text=True).stdout.split())


@pytest.fixture(autouse=True)
def _no_stray_processes():
    """No process this test started outlives it. Children that were there before (a pytest-xdist worker
    keeps e.g. joblib's worker pool from an earlier test of another module) are not this test's."""
    before = _children()
    yield
    left = _children() - before
    assert not left, f"processes left behind: {sorted(left)}"
