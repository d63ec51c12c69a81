"""Label-free estimated performance in the pipeline: ``estimated`` performance rows and metadata for binary,
multiclass and regression champions, the ``estimated_performance`` decision rule, prediction-only pipelines
calibrated on their reference file."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.svm import LinearSVC

from calmops_dagster.drift.model_drift import PerformanceDrift
from calmops_dagster.estimation import Estimate
from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.learning.model_factory import build_model
from calmops_dagster.learning.retrain_policy import decide_retrain
from calmops_dagster.learning.training import evaluation_split
from calmops_dagster.spec import parse_spec, save_spec
from calmops_dagster.steps import estimated_performance
from calmops_dagster.steps.estimated_performance import (
    BlockEstimates,
    KeptBlocks,
    estimate_block,
    estimated_drop,
    prepare_calibration,
)
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from calmops_dagster.store.skops_io import skops_io
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
        "SELECT block, role, metric, value, ci_low, ci_high, calibration_rows FROM performance "
        "WHERE evaluated_on = 'block'")
    estimated = perf[perf["role"] == "estimated"].set_index(["block", "metric"])
    realized = perf[perf["role"] == "champion"].set_index(["block", "metric"])
    assert sorted(estimated.index.get_level_values(0).unique()) == ["2", "3"]  # block 1 has no champion
    # calibrated on the 90 rows of block 1 held out from v0001's training; block 3 also on block 2's 300 rows
    assert estimated["calibration_rows"].to_dict() == {(b, m): {"2": 90, "3": 390}[b] for b, m in estimated.index}
    assert realized["calibration_rows"].isna().all()
    assert set(estimated.index.get_level_values(1)) == {"accuracy", "balanced_accuracy", "roc_auc"}
    assert (estimated["ci_low"] <= estimated["value"]).all() and (estimated["value"] <= estimated["ci_high"]).all()
    assert realized["ci_low"].isna().all()
    # block 2 is like the champion's training block: the estimate is close to what the labels then say
    for metric in ("accuracy", "roc_auc"):
        est, real = estimated.loc[("2", metric)], realized.loc[("2", metric), "value"]
        assert abs(est["value"] - real) < 0.08, (metric, est.to_dict(), real)
    block, meta = _latest_metadata(instance, demo_spec, "drift_report")
    assert meta["estimated_balanced_accuracy"] == pytest.approx(estimated.loc[(block, "balanced_accuracy"), "value"],
                                                                rel=5e-4)  # shown to 4 significant digits
    assert meta["estimated_balanced_accuracy_lower"] < meta["estimated_balanced_accuracy_upper"]
    assert meta["estimation"] == ("calibrated on 390 labelled rows: v0001's outputs on the 90 rows of block 1 "
                                  "held out from its training, and its outputs on the labelled blocks 2 it did not "
                                  "train on")
    assert meta["estimation_calibration_rows"] == 390
    kept = sorted(p.name for p in home.estimation_dir("demo").glob("v0001-*.parquet"))  # kept with the version
    assert len(kept) == 2 and kept[0].startswith("v0001-block-2-") and kept[1] == "v0001-held-out.parquet"


def test_the_block_that_promotes_a_champion_prepares_its_calibration(home, demo_spec, block_files, instance):
    shutil.copy(block_files[0], demo_spec.data_dir)  # the first champion, and no block after it yet
    assert all(r.success for r in run_pipeline(home, demo_spec, instance))
    assert [p.name.split("-")[0] for p in home.estimation_dir("demo").glob("*.parquet")] == ["v0001"]


CLASS_WEIGHTS = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])


def three_class_blocks(seed: int, narrowed_at: int = 3, n_blocks: int = 3, rows: int = 400) -> pd.DataFrame:
    """Three named classes from softmax(2 W x1..x2), P(y | x) the same in every block; from ``narrowed_at`` on
    the features crowd around the origin, where the classes mix (covariate shift: the champion's accuracy
    falls while nothing it learnt became wrong)."""
    rng = np.random.default_rng(seed)
    parts = []
    for block in range(1, n_blocks + 1):
        x = rng.normal(size=(rows, 4)) * (0.35 if block >= narrowed_at else 1.0)
        proba = softmax(2.0 * x[:, :2] @ CLASS_WEIGHTS.T, axis=1)
        y = np.array(["red", "green", "blue"])[(rng.uniform(size=(rows, 1)) > proba.cumsum(axis=1)).sum(axis=1)]
        parts.append(pd.DataFrame({**dict(zip(FEATURES, x.T)), "segment": rng.choice(["a", "b", "c"], rows),
                                   "y": y, "block": block}))
    return pd.concat(parts, ignore_index=True)


def regression_blocks(seed: int, shifted_at: int = 3, n_blocks: int = 3, rows: int = 400) -> pd.DataFrame:
    """A linear target whose noise grows with |x1| and is three times larger in segment "c"; from
    ``shifted_at`` on most rows are in segment "c", where a linear champion errs more (covariate shift: the
    mean function is unchanged)."""
    rng = np.random.default_rng(seed)
    parts = []
    for block in range(1, n_blocks + 1):
        x = rng.normal(size=(rows, 4))
        segment = rng.choice(["a", "b", "c"], rows, p=[0.1, 0.1, 0.8] if block >= shifted_at else [0.4, 0.4, 0.2])
        noise = (0.5 + np.abs(x[:, 0])) * np.where(segment == "c", 3.0, 1.0)
        y = 2 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2] + rng.normal(size=rows) * noise
        parts.append(pd.DataFrame({**dict(zip(FEATURES, x.T)), "segment": segment, "y": y, "block": block}))
    return pd.concat(parts, ignore_index=True)


def _run_blocks(home, tmp_path, name, frame, instance, **spec_overrides):
    data = tmp_path / name
    write_blocks(frame, data, block_col="block")
    spec = parse_spec(block_spec_dict(name, data, drift={"decision_rule": "estimated_performance"},
                                      **spec_overrides), home.spec_path(name))
    save_spec(spec, home.spec_path(name))
    assert all(r.success for r in run_pipeline(home, spec, instance))
    perf = MetricsStore(home.metrics_db).query(
        "SELECT block, role, metric, value, ci_low, ci_high FROM performance WHERE pipeline = ? AND "
        "evaluated_on = 'block'", [name])
    summary = MetricsStore(home.metrics_db).query(
        "SELECT block, retrain, performance_drop, reason FROM drift_summary WHERE pipeline = ?", [name])
    return (spec, perf[perf["role"] == "estimated"].set_index(["block", "metric"]),
            perf[perf["role"] == "champion"].set_index(["block", "metric"]), summary.set_index("block"))


def test_a_multiclass_champion_is_estimated_beside_its_realized_scores_and_retrains_on_an_estimated_drop(
        home, tmp_path, instance):
    spec, estimated, realized, summary = _run_blocks(
        home, tmp_path, "colours", three_class_blocks(11), instance, performance={"thresholds": {}},
        model_spec={"module": "sklearn.linear_model", "class": "LogisticRegression"})
    assert sorted(estimated.index.get_level_values(0).unique()) == ["2", "3"]  # block 1 has no champion
    assert set(estimated.index.get_level_values(1)) == {"accuracy", "balanced_accuracy", "f1", "roc_auc"}
    assert (estimated["ci_low"] <= estimated["value"]).all() and (estimated["value"] <= estimated["ci_high"]).all()
    for block in ("2", "3"):  # the estimate is near what the labels then say, before and after the shift
        for metric in ("accuracy", "balanced_accuracy", "f1"):
            assert abs(estimated.loc[(block, metric), "value"] - realized.loc[(block, metric), "value"]) < 0.08
    fall = estimated.loc[("2", "balanced_accuracy"), "value"] - estimated.loc[("3", "balanced_accuracy"), "value"]
    assert fall > 0.1  # the features crowded where the classes mix: estimated without a label
    assert not summary.loc["2", "retrain"]  # data drift alone calls for nothing under this rule
    assert summary.loc["3", "retrain"] and summary.loc["3", "performance_drop"]
    assert summary.loc["3", "reason"].startswith("estimated balanced_accuracy fell")
    block, meta = _latest_metadata(instance, spec, "drift_report")
    assert block == "3" and meta["estimated_f1"] == pytest.approx(estimated.loc[("3", "f1"), "value"], rel=5e-4)
    assert meta["estimated_roc_auc_lower"] < meta["estimated_roc_auc_upper"]
    assert meta["estimation"].startswith("calibrated on 520 labelled rows: v0001's outputs on the 120 rows of block 1 "
                                         "held out") and "not estimated" not in meta["estimation"]


def test_a_regression_champion_is_estimated_beside_its_realized_scores_and_retrains_on_an_estimated_rise(
        home, tmp_path, instance):
    spec, estimated, realized, summary = _run_blocks(
        home, tmp_path, "prices", regression_blocks(12), instance,
        model_spec={"module": "sklearn.linear_model", "class": "Ridge"}, performance={"metric": "mae"})
    assert sorted(estimated.index.get_level_values(0).unique()) == ["2", "3"]
    assert set(estimated.index.get_level_values(1)) == {"rmse", "mae"}
    assert set(realized.index.get_level_values(1)) == {"rmse", "mae", "r2"}
    for block in ("2", "3"):
        for metric in ("rmse", "mae"):
            est, real = estimated.loc[(block, metric)], realized.loc[(block, metric), "value"]
            assert abs(est["value"] - real) < 0.15 * real, (block, metric, est.to_dict(), real)
            assert est["ci_low"] < est["value"] < est["ci_high"]
    assert estimated.loc[("3", "rmse"), "value"] > 1.25 * estimated.loc[("2", "rmse"), "value"]
    assert not summary.loc["2", "retrain"]
    assert summary.loc["3", "retrain"] and summary.loc["3", "reason"].startswith("estimated mae rose")
    block, meta = _latest_metadata(instance, spec, "drift_report")
    assert block == "3" and meta["estimated_mae"] == pytest.approx(estimated.loc[("3", "mae"), "value"], rel=5e-4)
    assert "primary metric" not in meta["estimation"]
    assert list(home.estimation_dir("prices").glob("v0001-*.parquet"))  # out-of-fold predictions, kept


def test_a_binary_champion_is_estimated_on_the_predictions_it_made(home, tmp_path):
    """A champion that predicts the positive class from probability 0.1 on (FixedThresholdClassifier): its
    estimate counts those predictions, far from what ``proba >= 0.5`` would have scored."""
    frame = make_drifting_blocks(n_blocks=2, rows_per_block=3_000, drift_at=3, seed=4)
    train, block = frame[frame["block"] == 1], frame[frame["block"] == 2]
    spec = parse_spec(block_spec_dict("tuned", tmp_path), home.spec_path("tuned"))
    model = FixedThresholdClassifier(LogisticRegression(), threshold=0.1).fit(train[FEATURES], train["y"])
    store = ModelStore(home.models_dir("tuned"))
    version = store.save(model, reference=train, features=FEATURES)
    estimate = estimate_block(spec, store, version, model, block.drop(columns="y"), tmp_path).estimates["accuracy"]
    made = float((model.predict(block[FEATURES]) == block["y"]).mean())
    at_half = float(((model.predict_proba(block[FEATURES])[:, 1] >= 0.5) == block["y"]).mean())
    assert abs(made - at_half) > 0.05  # the two rules differ on this block
    assert abs(estimate.value - made) < 0.03 and estimate.lower <= made <= estimate.upper


def _champion_of_block_3(home, tmp_path, flipped_block: str = "1"):
    """Five kept blocks of one concept (block ``flipped_block`` with its labels flipped: an older concept) and
    a champion trained on block 3's training split, its manifest as the pipeline writes it."""
    frame = make_drifting_blocks(n_blocks=5, rows_per_block=400, drift_at=99, seed=5)
    frame.loc[frame["block"] == int(flipped_block), "y"] ^= 1
    blocks_dir = tmp_path / "blocks"
    blocks_dir.mkdir()
    for key, rows in frame.groupby("block"):
        rows.to_parquet(blocks_dir / f"{key}.parquet", index=False)
    spec = parse_spec(block_spec_dict("cal", tmp_path, model_spec={  # a tree whose fit can be made to fail
        "module": "calmops_dagster.learning.testing_models", "class": "ControlledTree",
        "params": {"max_depth": 4, "random_state": 0}}), home.spec_path("cal"))
    trained_on = frame[frame["block"] == 3].reset_index(drop=True)
    features = spec.feature_columns(trained_on.columns)
    split = evaluation_split(trained_on, spec, features)
    model = build_model(spec.model_spec, split.X_train).fit(split.X_train, split.y_train)
    store = ModelStore(home.models_dir("cal"))
    version = store.save(model, reference=split.X_train.assign(y=split.y_train), features=features,
                         trained_on_blocks=["3"], evaluated_on=f"block 3 held-out {len(split.X_eval)} rows")
    return spec, store, version, model, blocks_dir, frame


def test_a_classifier_is_calibrated_on_held_out_rows_and_labelled_blocks_it_did_not_train_on(home, tmp_path,
                                                                                           monkeypatch):
    spec, store, version, model, blocks_dir, frame = _champion_of_block_3(home, tmp_path)
    cache = tmp_path / "estimation"
    kept = KeptBlocks(blocks_dir, "5")
    result = estimate_block(spec, store, version, model, frame[frame["block"] == 5].drop(columns="y"), cache, kept)
    # 120 held-out rows of block 3, then blocks 4 (newer) and 2 (older, agreeing); block 1's flipped labels refused
    assert result.calibration_rows == 120 + 400 + 400
    assert result.note == (f"calibrated on 920 labelled rows: {version}'s outputs on the 120 rows of block 3 held "
                           "out from its training, and its outputs on the labelled blocks 4, 2 it did not train "
                           "on; older blocks 1 left out: the champion's accuracy there disagrees with its held-out "
                           "rows")
    monkeypatch.setattr(estimated_performance, "CALIBRATION_ROWS", 500)  # the newest rows first, until 500
    capped = estimate_block(spec, store, version, model, frame[frame["block"] == 5].drop(columns="y"), cache, kept)
    assert capped.calibration_rows == 520 and "labelled blocks 4 it did not" in capped.note
    assert all(r["calibration_rows"] == 520 for r in capped.rows(version))
    assert capped.metadata()["estimation_calibration_rows"] == 520


def test_a_promotion_prepares_the_calibration_without_fitting_the_champion_again(home, tmp_path, monkeypatch):
    """The held-out rows are scored by the champion itself: no clone is fitted (here fitting would fail)."""
    spec, store, version, _, blocks_dir, _ = _champion_of_block_3(home, tmp_path)
    monkeypatch.setenv("CALMOPS_TEST_FIT_FAIL", "1")
    cache = tmp_path / "estimation"
    note = prepare_calibration(spec, store, version, cache, blocks_dir)
    assert note == f"{version}'s outputs on the 120 rows of block 3 held out from its training"
    held_out = pd.read_parquet(cache / f"{version}-held-out.parquet")
    assert len(held_out) == 120 and list(held_out.columns) == ["y", "proba", "pred"]
    assert [p.name for p in cache.iterdir()] == [f"{version}-held-out.parquet"]  # no cross-fitted folds


def test_no_estimate_says_why(home, tmp_path):
    frame = three_class_blocks(1, n_blocks=1, rows=200)
    spec = parse_spec(block_spec_dict("svm", tmp_path), home.spec_path("svm"))
    model = LinearSVC().fit(frame[FEATURES], frame["y"])
    assert estimate_block(spec, None, "v0001", model, frame, tmp_path).note == (
        "no estimate: the champion has no predict_proba")
    small = regression_blocks(2, n_blocks=1, rows=60)
    spec = parse_spec(block_spec_dict("tiny", tmp_path, model_spec={"module": "sklearn.linear_model", "class": "Ridge"},
                                      performance={}), home.spec_path("tiny"))
    store = ModelStore(home.models_dir("tiny"))
    version = store.save(Ridge().fit(small[FEATURES], small["y"]), reference=small, features=FEATURES)
    result = estimate_block(spec, store, version, store.load(version, False), small, tmp_path)
    assert not result.estimates and result.note == (
        f"no estimate: the error model needs at least 100 labelled rows; {version} has 60 training rows")


def test_an_estimated_error_is_a_drop_when_its_interval_lies_above_the_reference(home, tmp_path):
    spec = parse_spec(block_spec_dict("reg", tmp_path, model_spec={"module": "sklearn.linear_model", "class": "Ridge"},
                                      performance={"metric": "mae", "max_relative_drop": 0.1}), home.spec_path("reg"))

    def drop(lower, value, upper):
        estimate = Estimate("mae", value, lower, upper, 0.1, value, 300, 0.95, 0.0)
        return estimated_drop(spec, BlockEstimates({"mae": estimate}, {"mae": 2.0}))

    assert drop(2.3, 2.5, 2.7).drifted  # all of it above 2.0 + 10%
    assert not drop(2.1, 2.5, 2.9).drifted and not drop(1.2, 1.4, 1.6).drifted  # straddling, or better


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
