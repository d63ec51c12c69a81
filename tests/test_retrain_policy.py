"""The retrain decision (drift OR a statistically supported performance drop) and block assessment."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from calmops_dagster.drift.model_drift import performance_drift
from calmops_dagster.learning.block_assessment import (
    ERROR_STREAM_ROW,
    PERFORMANCE_ROW,
    assess_block,
    assessment_rows,
)
from calmops_dagster.learning.evaluation import threshold_failures
from calmops_dagster.learning.retrain_policy import decide_retrain
from calmops_dagster.spec import parse_spec
from tests.conftest import block_spec_dict


def drifted_perf(current_accuracy: float, reference: float = 0.9, n: int = 1000):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    predicted = np.where(rng.random(n) < current_accuracy, y, 1 - y)
    return performance_drift(y, predicted, reference=reference, metric="accuracy", tolerance=0.1 * reference)


def test_first_block_always_trains():
    decision = decide_retrain(False, False, [], None, None, {})
    assert decision.retrain and "first" in decision.reason


def test_no_drift_no_drop_keeps_champion():
    decision = decide_retrain(True, False, [], drifted_perf(0.9), {"accuracy": 0.9}, {})
    assert not decision.retrain and not decision.performance_drop


def test_drift_alone_or_a_confident_drop_alone_calls_for_retraining():
    drift = decide_retrain(True, True, ["a", "b"], drifted_perf(0.9), {"accuracy": 0.9}, {})
    assert drift.retrain and not drift.performance_drop and "a, b" in drift.reason
    drop = decide_retrain(True, False, [], drifted_perf(0.6), {"accuracy": 0.6}, {})
    assert drop.retrain and drop.performance_drop and "95% CI" in drop.reason


def test_decision_rule_restricts_what_triggers():
    drift_only = decide_retrain(True, True, ["a"], drifted_perf(0.6), {"accuracy": 0.6}, {}, "drift")
    assert drift_only.retrain and not drift_only.performance_drop and "CI" not in drift_only.reason
    performance_only = decide_retrain(True, True, ["a"], drifted_perf(0.9), {"accuracy": 0.9}, {}, "performance")
    assert not performance_only.retrain
    below_bar = decide_retrain(True, False, [], None, {"accuracy": 0.5}, {"accuracy": 0.7}, "drift")
    assert below_bar.retrain


def test_a_drop_within_the_allowed_share_is_not_a_drop():
    # 0.85 vs 0.90: a 5.6% drop, inside max_relative_drop = 10%
    decision = decide_retrain(True, False, [], drifted_perf(0.85), {"accuracy": 0.85}, {})
    assert not decision.performance_drop and not decision.retrain


def test_champion_below_absolute_threshold_calls_for_retraining():
    decision = decide_retrain(True, False, [], drifted_perf(0.88), {"accuracy": 0.70}, {"accuracy": 0.75})
    assert decision.retrain and decision.performance_drop and "accuracy 0.7000 < 0.75" in decision.reason


def test_unlabelled_block_decides_on_drift_only():
    assert not decide_retrain(True, False, [], None, None, {"accuracy": 0.99}).retrain


def test_threshold_failures_directions_and_missing_metric():
    assert threshold_failures({"accuracy": 0.8, "rmse": 2.0}, {"accuracy": 0.7, "rmse": 3.0}) == []
    assert threshold_failures({"rmse": 4.0}, {"rmse": 3.0}) == ["rmse 4.0000 > 3.0"]
    assert threshold_failures({}, {"roc_auc": 0.5}) == ["roc_auc not available"]


def test_assessment_finds_where_the_error_stream_changed(tmp_path):
    spec = parse_spec(block_spec_dict("p", str(tmp_path)), tmp_path / "p" / "pipeline.yaml")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1600, 2))
    y = (x[:, 0] > 0).astype(int)
    y[800:] = 1 - y[800:]  # the concept flips half way through the block
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": y, "block": 2})
    reference = pd.DataFrame({"a": x[:800, 0], "b": x[:800, 1], "y": y[:800]})
    champion = LogisticRegression().fit(reference[["a", "b"]], reference["y"])
    manifest = {"features": ["a", "b"], "metrics": {"balanced_accuracy": 0.98}}
    assessment = assess_block(spec, frame, champion, manifest, reference)

    assert assessment.performance.drifted and assessment.decision.performance_drop
    assert 800 <= assessment.stream.first_drift_index < 1000
    rows = assessment_rows(assessment)
    assert rows.loc[rows["feature"] == PERFORMANCE_ROW, "drifted"].item()
    assert rows.loc[rows["feature"] == ERROR_STREAM_ROW, "drifted"].any()
    assert {"__dataset__", "a", "b"} <= set(rows["feature"])
