"""Label-free estimated performance in the pipeline: ``estimated`` performance rows and metadata, the
``estimated_performance`` decision rule, prediction-only pipelines calibrated on their reference file."""

from __future__ import annotations

import os
import shutil

import numpy as np
from dagster import AssetKey, DagsterInstance
from sklearn.linear_model import LogisticRegression

from calmops_dagster.drift.model_drift import PerformanceDrift
from calmops_dagster.learning.retrain_policy import decide_retrain
from calmops_dagster.orchestration.estimated_performance import estimate_block
from calmops_dagster.spec import parse_spec, save_spec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.skops_io import skops_io
from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from tests.conftest import block_spec_dict
from tests.test_block_pipeline import run_pipeline

FEATURES = ["x1", "x2", "x3", "x4"]


def _latest_metadata(instance, spec, asset):
    event = instance.get_latest_materialization_event(AssetKey([spec.name, asset]))
    return event.asset_materialization.partition, {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_every_block_after_the_first_gets_an_estimate_beside_the_realized_score(home, demo_spec, block_files,
                                                                               instance):
    for path in block_files[:3]:
        shutil.copy(path, demo_spec.data_dir)
    assert all(r.success for r in run_pipeline(home, demo_spec, instance))
    perf = MetricsStore(home.metrics_db).query(
        "SELECT block, role, metric, value, ci_low, ci_high FROM performance WHERE evaluated_on = 'block'")
    estimated = perf[perf["role"] == "estimated"].set_index(["block", "metric"])
    realized = perf[perf["role"] == "champion"].set_index(["block", "metric"])
    assert sorted(estimated.index.get_level_values(0).unique()) == ["2", "3"]  # block 1 has no champion
    assert set(estimated.index.get_level_values(1)) == {"accuracy", "balanced_accuracy", "roc_auc"}
    assert (estimated["ci_low"] <= estimated["value"]).all() and (estimated["value"] <= estimated["ci_high"]).all()
    assert realized["ci_low"].isna().all()
    # block 2 is like the champion's training block: the estimate is close to what the labels then say
    for metric in ("accuracy", "roc_auc"):
        est, real = estimated.loc[("2", metric)], realized.loc[("2", metric), "value"]
        assert abs(est["value"] - real) < 0.08, (metric, est.to_dict(), real)
    block, meta = _latest_metadata(instance, demo_spec, "drift_report")
    assert meta["estimated_balanced_accuracy"] == estimated.loc[(block, "balanced_accuracy"), "value"]
    assert meta["estimated_balanced_accuracy_lower"] < meta["estimated_balanced_accuracy_upper"]
    assert "cross-fitted" in meta["estimation"]
    assert list(home.estimation_dir("demo").glob("v0001-*.parquet"))  # calibration kept with the version


def test_the_block_that_promotes_a_champion_prepares_its_calibration(home, demo_spec, block_files, instance):
    shutil.copy(block_files[0], demo_spec.data_dir)  # the first champion, and no block after it yet
    assert all(r.success for r in run_pipeline(home, demo_spec, instance))
    assert [p.name.split("-")[0] for p in home.estimation_dir("demo").glob("*.parquet")] == ["v0001"]


def test_regression_and_multiclass_get_no_estimate_and_say_so(home, tmp_path):
    frame = make_drifting_blocks(n_blocks=1, rows_per_block=200, seed=1)
    raw = block_spec_dict("reg", tmp_path, model_spec={"module": "sklearn.linear_model", "class": "Ridge"},
                          performance={})
    spec = parse_spec(raw, home.spec_path("reg"))
    note = estimate_block(spec, None, "v0001", object(), frame, tmp_path).note
    assert note.startswith("no estimate") and "regression" in note

    spec = parse_spec(block_spec_dict("multi", tmp_path), home.spec_path("multi"))
    three = frame.assign(y=np.arange(len(frame)) % 3)
    model = LogisticRegression().fit(three[FEATURES], three["y"])
    result = estimate_block(spec, None, "v0001", model, frame, tmp_path)
    assert not result.estimates and "multiclass" in result.note


def test_estimated_performance_rule_retrains_on_an_estimated_drop_only():
    drop = PerformanceDrift("accuracy", 0.9, 0.6, 0.55, 0.65, 0.95, 0.09, 300, 0, True, "estimated without labels")
    held = PerformanceDrift("accuracy", 0.9, 0.85, 0.8, 0.9, 0.95, 0.09, 300, 0, False, "estimated without labels")
    rule = "estimated_performance"
    decided = decide_retrain(True, True, ["x1"], None, None, {}, rule, drop)
    assert decided.retrain and decided.performance_drop and decided.reason.startswith("estimated accuracy fell")
    assert not decide_retrain(True, True, ["x1"], None, None, {}, rule, held).retrain  # drift alone: no
    assert not decide_retrain(True, False, [], None, None, {}, "drift_or_performance", drop).retrain


def test_prediction_only_pipeline_estimates_from_a_labelled_reference_file(home, tmp_path):
    frame = make_drifting_blocks(n_blocks=3, rows_per_block=400, drift_at=3, seed=3)
    model = LogisticRegression().fit(frame.loc[frame["block"] == 1, FEATURES], frame.loc[frame["block"] == 1, "y"])
    data = tmp_path / "data"
    data.mkdir()
    frame.drop(columns="y").to_csv(data / "blocks.csv", index=False)
    os.utime(data / "blocks.csv", (0, 0))
    frame[frame["block"] == 1][[*FEATURES, "y"]].to_parquet(tmp_path / "reference.parquet")
    skops_io().dump(model, tmp_path / "model.skops")
    raw = block_spec_dict("scoring", str(data), prediction_only=True, model_file=str(tmp_path / "model.skops"),
                          reference_file=str(tmp_path / "reference.parquet"), features=FEATURES,
                          model_spec={"module": "sklearn.linear_model", "class": "LogisticRegression"},
                          performance={"metric": "accuracy"}, drift={"decision_rule": "estimated_performance"})
    spec = parse_spec(raw, home.spec_path("scoring"))
    save_spec(spec, home.spec_path("scoring"))
    with DagsterInstance.ephemeral() as instance:
        assert all(r.success for r in run_pipeline(home, spec, instance))
    perf = MetricsStore(home.metrics_db).query(
        "SELECT block, role, metric, value, ci_low, ci_high FROM performance ORDER BY block")
    assert set(perf["role"]) == {"estimated"} and sorted(perf["block"].unique()) == ["1", "2", "3"]
    accuracy = perf[perf["metric"] == "accuracy"].set_index("block")
    truth = {b: float((model.predict(g[FEATURES]) == g["y"]).mean()) for b, g in frame.groupby(frame["block"].astype(str))}
    assert abs(accuracy.loc["2", "value"] - truth["2"]) < 0.06
    summary = MetricsStore(home.metrics_db).query("SELECT block, retrain, reason FROM drift_summary")
    assert not summary["retrain"].any()
