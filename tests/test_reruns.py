"""A rerun reproduces history: re-materializing an old block (one asset, or a backfill of every partition)
uses the champion and settings in force when the block was first processed, rewrites no decision and
moves no champion; the rows it replaces stay queryable in ``<table>_history``. A re-evaluation
(``calmops reevaluate``) writes its own rows beside the original decisions."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, Definitions, RunsFilter
from processed_home import copy_home

from calmops_dagster.interfaces.cli import main
from calmops_dagster.interfaces.pipeline_report import build_pipeline_report
from calmops_dagster.orchestration.instance import prepare_instance
from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
from calmops_dagster.resources import build_resources
from calmops_dagster.store.metrics_store import VERSIONED, MetricsStore
from calmops_dagster.store.model_store import ModelStore

VOLATILE = ["computed_at", "loaded_at", "decided_at", "run_id"]
ASSETS = ["data_block", "drift_report", "challenger_model", "champion_model", "predictions"]


def block_rows(metrics: MetricsStore, block: str) -> dict[str, pd.DataFrame]:
    """Every versioned table's current rows of ``block``, without the columns that name the run or time."""
    rows = {}
    for table in VERSIONED:
        frame = metrics.query(f"SELECT * FROM {table} WHERE pipeline = 'demo' AND block = ?", [block])
        frame = frame.drop(columns=[c for c in VOLATILE if c in frame.columns])
        rows[table] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return rows


def assert_same_rows(before: dict, after: dict, what: str):
    for table, rows in before.items():
        pd.testing.assert_frame_equal(rows, after[table], obj=f"{table} after {what}")


def champion_state(home) -> tuple:
    store = ModelStore(home.models_dir("demo"))
    return store.champion_version(), json.dumps(store.champion_history()), store.versions()


@pytest.fixture
def rerun_home(processed_home, tmp_path, monkeypatch):
    """A writable copy of the processed 4-block pipeline, its job, and an instance knowing its blocks."""
    home = copy_home(processed_home, tmp_path)
    monkeypatch.setenv("CALMOPS_HOME", str(home.root))
    spec = processed_home[1]
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(spec.partitions_name, ["1", "2", "3", "4"])
        yield home, defs.resolve_job_def(job_name(spec)), instance


def test_rerun_of_each_asset_of_an_old_block_reproduces_its_rows(rerun_home):
    """Block 2 was judged against v0001 (v0002 came with block 3): a rerun of any of its assets is judged
    against v0001 again, and block 3's rerun re-derives its promotion without moving the champion."""
    home, job, instance = rerun_home
    metrics = MetricsStore(home.metrics_db)
    state = champion_state(home)
    assert state[0] == "v0002"
    for block in ("2", "3"):
        before = block_rows(metrics, block)
        predictions = pd.read_parquet(home.predictions_dir("demo") / f"{block}.parquet")
        for name in ASSETS:
            result = job.execute_in_process(instance=instance, partition_key=block,
                                            asset_selection=[AssetKey(["demo", name])])
            assert result.success, name
            assert_same_rows(before, block_rows(metrics, block), f"a rerun of {name} of block {block}")
            assert champion_state(home) == state, name
        pd.testing.assert_frame_equal(pd.read_parquet(home.predictions_dir("demo") / f"{block}.parquet"),
                                      predictions)
    summary = metrics.query("SELECT reference_version, drift_detected FROM drift_summary WHERE block = '2'")
    assert summary.iloc[0].tolist() == ["v0001", False]
    promoted = metrics.query("SELECT decision, champion_after FROM promotions WHERE block = '3'").iloc[0]
    assert promoted.tolist() == ["promoted", "v0002"]

    # every materialization is on record: the replaced rows, with the run that wrote them
    history = metrics.query("SELECT run_id, replaced_at, reference_version FROM drift_summary_history "
                            "WHERE block = '2'")
    assert len(history) == 1 and history["run_id"][0] and history["reference_version"][0] == "v0001"
    current = metrics.query("SELECT run_id FROM drift_summary WHERE block = '2'")["run_id"]
    assert len(current) == 1 and current[0] != history["run_id"][0]  # the drift_report rerun's row


def test_backfill_over_all_partitions_changes_no_decision_and_no_champion(rerun_home):
    home, job, instance = rerun_home
    metrics = MetricsStore(home.metrics_db)
    state = champion_state(home)
    before = {block: block_rows(metrics, block) for block in ("1", "2", "3", "4")}
    for block in ("1", "2", "3", "4"):  # what the UI's "Materialize all" over every partition runs
        result = job.execute_in_process(instance=instance, partition_key=block)
        assert result.success, block
        meta = next(m.metadata for m in result.asset_materializations_for_node("demo__challenger_and_champion")
                    if m.asset_key == AssetKey(["demo", "champion_model"]))
        assert meta["rerun"].value == 1
    assert champion_state(home) == state
    for block, rows in before.items():
        assert_same_rows(rows, block_rows(metrics, block), f"a backfill (block {block})")


def test_reevaluation_with_a_stricter_alpha_writes_its_own_rows_and_leaves_the_originals(
        rerun_home, monkeypatch, capsys):
    home, _, _ = rerun_home
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # restored after the test
    prepare_instance(home)
    with DagsterInstance.get() as instance:  # the home's instance, which knows its processed blocks
        instance.add_dynamic_partitions("demo_blocks", ["1", "2", "3", "4"])
    metrics = MetricsStore(home.metrics_db)
    state = champion_state(home)
    before = {block: block_rows(metrics, block) for block in ("2", "3")}

    assert main(["reevaluate", "demo", "--blocks", "2-3", "--drift.alpha", "0.0001"]) == 0
    out = capsys.readouterr().out
    assert "block 2: was no drift, no retrain (against v0001)" in out and "block 3: was drift" in out
    stricter = metrics.query("SELECT * FROM reevaluation_summary ORDER BY block")
    assert stricter["block"].tolist() == ["2", "3"] and stricter["reevaluation_id"].nunique() == 1
    assert set(stricter["changes"]) == {'{"drift.alpha": 0.0001}'} and set(stricter["against"]) == {"v0001"}
    assert stricter["original_drift_detected"].tolist() == [False, True]
    reevaluated = metrics.query("SELECT block, feature, test, p_value, drifted FROM reevaluation_results")
    original = metrics.query("SELECT block, feature, test, p_value, drifted FROM drift_results "
                             "WHERE block IN ('2', '3')")
    both = original.merge(reevaluated, on=["block", "feature", "test"], suffixes=("", "_new"))
    assert len(both) == len(original)
    tested = both.dropna(subset=["p_value"])
    assert (tested["p_value"] == tested["p_value_new"]).all()  # same champion, same data: same tests
    assert both["drifted_new"].sum() <= both["drifted"].sum()  # a stricter alpha flags no more

    assert main(["reevaluate", "demo", "--blocks", "2", "--against", "current"]) == 0
    current = metrics.query("SELECT * FROM reevaluation_summary WHERE against = 'v0002'").iloc[0]
    assert current["block"] == "2" and current["changes"] == '{"against": "v0002"}'
    assert current["drift_detected"] and not current["original_drift_detected"]

    for block, rows in before.items():  # never over the original decisions
        assert_same_rows(rows, block_rows(metrics, block), "a re-evaluation")
    assert champion_state(home) == state
    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(job_name="demo_reevaluate"))
    assert sorted(run.tags["dagster/partition"] for run in runs) == ["2", "2", "3"]
    assert all(run.tags.get("calmops/reevaluation") for run in runs)
    page = build_pipeline_report(home, "demo")
    assert "Re-evaluations" in page and current["reevaluation_id"] in page
    assert main(["reevaluate", "demo", "--blocks", "7"]) == 2
    assert "block '7' not processed" in capsys.readouterr().err


def test_reevaluate_against_a_name_that_is_no_version_of_the_pipeline_is_one_line(rerun_home, monkeypatch, capsys):
    """``--against ../../other/models/v0001`` started a run per block, each failing; it is refused before any."""
    home, _, _ = rerun_home
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for against, said in (("../../other/models/v0001", "is not a model version of pipeline 'demo'"),
                          ("/etc/passwd", "is not a model version of pipeline 'demo'"),
                          ("v0042", "model version 'v0042' does not exist")):
        assert main(["reevaluate", "demo", "--against", against]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err
    assert MetricsStore(home.metrics_db).query("SELECT count(*) AS n FROM reevaluation_summary")["n"][0] == 0
