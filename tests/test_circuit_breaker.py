"""Circuit breaker: pure transitions, DuckDB state, the run-failure sensor, the challenger guard, and the
``calmops relaunch / update / delete / list`` commands (local instance: no dagster dev answers)."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pytest
import yaml
from conftest import block_spec_dict
from dagster import (
    AssetKey,
    DagsterEventType,
    Definitions,
    build_run_status_sensor_context,
)

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.interfaces.cli import main
from calmops_dagster.orchestration.headless_runs import run_pending
from calmops_dagster.orchestration.ingest_registration import register_new_blocks
from calmops_dagster.orchestration.pipeline_defs import (
    build_breaker_definitions,
    build_pipeline_definitions,
    job_name,
)
from calmops_dagster.resources import build_resources
from calmops_dagster.spec import load_spec, parse_spec, save_spec
from calmops_dagster.steps import circuit_breaker as cb
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("events", "status", "failures"),
    [
        (["fail"], "closed", 1),
        (["fail", "fail", "ok"], "closed", 0),
        (["fail", "fail", "fail"], "open", 3),
        (["fail", "fail", "fail", "ok", "fail"], "open", 3),  # outcomes while open change nothing
        (["fail", "ok", "fail", "fail"], "closed", 2),
    ],
)
def test_transitions(events, status, failures):
    state = cb.BreakerState()
    for event in events:
        if event == "fail":
            state, _ = cb.on_failure(state, max_failures=3, backoff_minutes=60, now=T0, reason="x")
        else:
            state, _ = cb.on_success(state, T0)
    assert (state.status, state.consecutive_failures) == (status, failures)


def test_open_breaker_closes_after_backoff_or_reset():
    state = cb.BreakerState()
    for _ in range(2):
        state, event = cb.on_failure(state, max_failures=2, backoff_minutes=30, now=T0, reason="fit failed")
    assert event == "opened" and state.reopen_at == T0 + timedelta(minutes=30)
    assert "fit failed" in cb.skip_reason(state, T0 + timedelta(minutes=29))
    assert cb.skip_reason(state, T0 + timedelta(minutes=30)) is None
    assert cb.describe(state, T0).startswith("OPEN until")
    assert cb.effective(state, T0 + timedelta(hours=1)).consecutive_failures == 0
    assert cb.reset()[0].status == "closed"
    assert cb.failed_breaker_step(["p__data_block", "p__champion_model"], "p") == "champion_model"
    assert cb.failed_breaker_step(["p__data_block", "p__challenger_and_champion"], "p") == "challenger_and_champion"
    assert cb.failed_breaker_step(["p__data_block"], "p") is None


@pytest.fixture
def flaky(home, tmp_path):
    """Pipeline ``flaky``: 5 blocks with drift from block 3, a model whose fit fails on demand, breaker
    opening after 2 failures, no absolute thresholds (so an old champion may keep predicting)."""
    data_dir = tmp_path / "flaky_data"
    frame = make_drifting_blocks(n_blocks=5, rows_per_block=200, drift_at=3, seed=11)
    write_blocks(frame, tmp_path / "flaky_staging", block_col="block")
    data_dir.mkdir()
    raw = block_spec_dict("flaky", data_dir, performance={},
                          model_spec={"module": "calmops_dagster.learning.testing_models", "class": "ControlledTree",
                                      "params": {"max_depth": 5, "random_state": 0}},
                          circuit_breaker={"max_failures": 2, "backoff_minutes": 60})
    path = home.spec_path("flaky")
    spec = parse_spec(raw, path)
    save_spec(spec, path)
    return spec, sorted((tmp_path / "flaky_staging").glob("*.csv"))


def run_blocks(home, spec, instance, files):
    for file in files:
        shutil.copy(file, spec.data_dir)
    pipeline = build_pipeline_definitions(spec)
    defs = Definitions.merge(pipeline, build_breaker_definitions([spec], [pipeline]),
                             Definitions(resources=build_resources(home)))
    metrics, models = MetricsStore(home.metrics_db), ModelStore(home.models_dir(spec.name))
    register_new_blocks(instance, spec, metrics, models, logging.getLogger("test"))
    return run_pending(instance, spec, defs.resolve_job_def(job_name(spec)), metrics), defs


def test_failures_open_the_breaker_and_challenger_is_skipped_while_drift_and_predictions_go_on(
        home, flaky, instance, monkeypatch, capsys):
    spec, files = flaky
    first, _ = run_blocks(home, spec, instance, files[:2])
    assert all(r.success for r in first)
    champion = ModelStore(home.models_dir("flaky")).champion_version()

    monkeypatch.setenv("CALMOPS_TEST_FIT_FAIL", "1")
    failed, _ = run_blocks(home, spec, instance, files[2:4])  # blocks 3 and 4 drift: training fails twice
    assert [r.success for r in failed] == [False, False]
    metrics = MetricsStore(home.metrics_db)
    state = metrics.breaker_state("flaky")
    assert state.status == "open" and state.consecutive_failures == 2
    assert "injected training failure" in state.last_reason

    paused, _ = run_blocks(home, spec, instance, files[4:])  # the failed blocks 3, 4 are retried, then 5
    assert [r.block for r in paused] == ["3", "4", "5"] and all(r.success for r in paused), paused
    assert all("circuit breaker open" in r.summary for r in paused)
    assert instance.get_materialized_partitions(AssetKey(["flaky", "challenger_model"])) == {"1"}  # none since
    champion_md = instance.get_latest_materialization_event(AssetKey(["flaky", "champion_model"]))
    assert "circuit breaker open" in champion_md.asset_materialization.metadata["reason"].value
    assert (home.predictions_dir("flaky") / "5.parquet").is_file()
    drift = instance.get_latest_materialization_event(AssetKey(["flaky", "drift_report"]))
    assert drift.asset_materialization.partition == "5" and drift.asset_materialization.metadata["drift_detected"].value == 1
    assert drift.asset_materialization.metadata["challenger"].value.startswith("none: circuit breaker OPEN until")
    data_meta = instance.get_latest_materialization_event(AssetKey(["flaky", "data_block"]))
    assert data_meta.asset_materialization.metadata["circuit_breaker"].value.startswith("OPEN")
    assert ModelStore(home.models_dir("flaky")).champion_version() == champion

    assert main(["list"]) == 0
    assert "OPEN until" in capsys.readouterr().out
    events = metrics.query("SELECT event FROM breaker_events WHERE pipeline = 'flaky' ORDER BY event_at")
    assert events["event"].tolist().count("opened") == 1


def test_a_champion_below_its_thresholds_does_not_open_the_breaker(home, tmp_path, instance):
    """The blocking check champion_meets_thresholds stops the run, but that is a performance finding:
    counting it would pause retraining exactly when the pipeline needs it."""
    staging, data_dir = tmp_path / "staging", tmp_path / "strict_data"
    data_dir.mkdir()
    files = write_blocks(make_drifting_blocks(n_blocks=4, rows_per_block=200, drift_at=3, seed=1), staging,
                         block_col="block")
    raw = block_spec_dict("strict", data_dir, performance={"thresholds": {"balanced_accuracy": 0.99}},
                          circuit_breaker={"max_failures": 2, "backoff_minutes": 60})
    spec = parse_spec(raw, home.spec_path("strict"))
    save_spec(spec, home.spec_path("strict"))
    results, _ = run_blocks(home, spec, instance, sorted(files))
    assert [r.success for r in results] == [False] * 4
    assert all("champion_meets_thresholds" in r.summary for r in results)
    state = MetricsStore(home.metrics_db).breaker_state("strict")
    assert state.status == "closed" and state.consecutive_failures == 0
    trained = MetricsStore(home.metrics_db).query(
        "SELECT DISTINCT block FROM performance WHERE pipeline = 'strict' AND role = 'challenger'")
    assert set(trained["block"]) >= {"3", "4"}  # drift still gets challengers trained


def test_run_failure_sensor_counts_a_failed_training_run_once(home, flaky, instance, monkeypatch):
    spec, files = flaky
    run_blocks(home, spec, instance, files[:1])
    for file in files[1:3]:
        shutil.copy(file, spec.data_dir)
    pipeline = build_pipeline_definitions(spec)
    defs = Definitions.merge(pipeline, build_breaker_definitions([spec], [pipeline]),
                             Definitions(resources=build_resources(home)))
    register_new_blocks(instance, spec, MetricsStore(home.metrics_db), ModelStore(home.models_dir("flaky")),
                        logging.getLogger("test"))
    monkeypatch.setenv("CALMOPS_TEST_FIT_FAIL", "1")
    result = defs.resolve_job_def(job_name(spec)).execute_in_process(
        instance=instance, partition_key="3", raise_on_error=False)  # launched outside calmops run
    assert not result.success
    failure_sensor = next(s for s in defs.sensors if s.name == "calmops_run_failures")
    run = instance.get_run_by_id(result.run_id)
    failure = next(e for e in instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_FAILURE))
    resources = build_resources(home)
    for _ in range(2):  # a second evaluation of the same run is not counted again
        context = build_run_status_sensor_context(
            sensor_name="calmops_run_failures", dagster_event=failure.dagster_event, dagster_instance=instance,
            dagster_run=run, resources={k: resources[k] for k in ("home", "metrics")}).for_run_failure()
        failure_sensor(context)
    state = MetricsStore(home.metrics_db).breaker_state("flaky")
    assert state.consecutive_failures == 1 and "challenger_and_champion" in state.last_reason


def test_relaunch_closes_breaker_and_runs_pending_blocks_locally(home, flaky, monkeypatch, capsys):
    spec, files = flaky
    monkeypatch.setenv("CALMOPS_DAGSTER_PORT", "9")  # nothing answers there: the local instance is used
    metrics = MetricsStore(home.metrics_db)
    for _ in range(2):
        metrics.update_breaker("flaky", lambda s: cb.on_failure(s, 2, 60, datetime.now(UTC), "boom"))
    assert metrics.breaker_state("flaky").is_open
    for file in files[:2]:
        shutil.copy(file, spec.data_dir)
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))  # restored after the test
    assert main(["relaunch", "flaky"]) == 0
    out = capsys.readouterr().out
    assert "circuit breaker closed" in out and "block 1: ok" in out and "block 2: ok" in out
    assert not metrics.breaker_state("flaky").is_open
    assert main(["relaunch", "flaky"]) == 0
    assert "nothing pending" in capsys.readouterr().out


def test_update_validates_and_saves_dotted_keys(home, demo_spec, capsys):
    path = home.spec_path("demo")
    assert main(["update", "demo", "--performance.max_relative_drop", "0.2", "--sensor.settle_seconds=3",
                 "--dagster-port", "9"]) == 0
    spec = load_spec(path)
    assert spec.performance.max_relative_drop == 0.2 and spec.sensor.settle_seconds == 3
    assert "0.2" in capsys.readouterr().out
    before = path.read_text()
    assert main(["update", "demo", "--performance.max_relative_drop", "7", "--dagster-port", "9"]) == 2
    assert main(["update", "demo", "--performance.no_such_field", "1", "--dagster-port", "9"]) == 2
    assert main(["update", "demo", "--name", "other", "--dagster-port", "9"]) == 2
    err = capsys.readouterr().err
    assert "max_relative_drop" in err and "unknown key" in err and "cannot be changed" in err
    assert path.read_text() == before
    assert not list(path.parent.glob(".pipeline.yaml.*"))  # no temporary file left behind


def test_delete_asks_archives_by_default_and_purges_on_request(home, demo_spec, monkeypatch, capsys):
    metrics = MetricsStore(home.metrics_db)
    metrics.replace_block_rows("blocks", "demo", "1", [{"rows": 5}])
    metrics.replace_block_rows("blocks", "other", "1", [{"rows": 7}])
    monkeypatch.setenv("CALMOPS_DAGSTER_PORT", "9")
    monkeypatch.setattr("builtins.input", lambda _prompt: "n")
    assert main(["delete", "demo"]) == 1
    assert home.spec_path("demo").is_file()

    monkeypatch.setattr("builtins.input", lambda _prompt: "y")
    assert main(["delete", "demo"]) == 0
    (archive,) = (home.root / "archive").iterdir()
    assert archive.name.startswith("demo-")
    assert (archive / "pipeline" / "pipeline.yaml").is_file() and not home.pipeline_dir("demo").exists()
    assert pd.read_parquet(archive / "metrics" / "blocks.parquet")["rows"].tolist() == [5]
    with duckdb.connect(str(home.metrics_db), read_only=True) as con:
        assert con.execute("SELECT pipeline FROM blocks").fetchall() == [("other",)]

    path = home.spec_path("gone")
    save_spec(parse_spec(yaml.safe_load(yaml.safe_dump(block_spec_dict("gone", demo_spec.data_dir))), path), path)
    assert main(["delete", "gone", "--yes", "--purge"]) == 0
    assert not home.pipeline_dir("gone").exists()
    assert len(list((home.root / "archive").iterdir())) == 1
