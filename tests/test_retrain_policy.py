"""The retrain decision (drift OR performance drop) and the metric helpers it relies on."""

from __future__ import annotations

import pytest

from calmops_dagster.evaluation import threshold_failures
from calmops_dagster.retrain_policy import decide_retrain, performance_dropped


@pytest.mark.parametrize(
    "metric, current, reference, drop, expected",
    [
        ("balanced_accuracy", 0.80, 0.90, 0.10, True),  # 0.80 < 0.90 * (1 - 0.10) = 0.81
        ("balanced_accuracy", 0.82, 0.90, 0.10, False),
        ("rmse", 1.20, 1.00, 0.10, True),
        ("rmse", 1.05, 1.00, 0.10, False),
    ],
)
def test_performance_dropped(metric, current, reference, drop, expected):
    assert performance_dropped(metric, current, reference, drop) is expected


def test_first_block_always_trains():
    decision = decide_retrain(False, False, [], "accuracy", None, None, {}, 0.1)
    assert decision.retrain and "first" in decision.reason


def test_no_drift_no_drop_keeps_champion():
    decision = decide_retrain(True, False, [], "accuracy", {"accuracy": 0.9}, {"accuracy": 0.9}, {}, 0.1)
    assert not decision.retrain and not decision.performance_drop


def test_drift_alone_or_drop_alone_calls_for_retraining():
    drift = decide_retrain(True, True, ["a", "b"], "accuracy", {"accuracy": 0.9}, {"accuracy": 0.9}, {}, 0.1)
    assert drift.retrain and not drift.performance_drop and "a, b" in drift.reason
    drop = decide_retrain(True, False, [], "accuracy", {"accuracy": 0.6}, {"accuracy": 0.9}, {}, 0.1)
    assert drop.retrain and drop.performance_drop and "fell from 0.9000 to 0.6000" in drop.reason


def test_champion_below_absolute_threshold_calls_for_retraining():
    decision = decide_retrain(True, False, [], "accuracy", {"accuracy": 0.70}, {"accuracy": 0.72},
                              {"accuracy": 0.75}, 0.5)
    assert decision.retrain and decision.performance_drop and "accuracy 0.7000 < 0.75" in decision.reason


def test_unlabelled_block_decides_on_drift_only():
    decision = decide_retrain(True, False, [], "accuracy", None, {"accuracy": 0.9}, {"accuracy": 0.99}, 0.1)
    assert not decision.retrain


def test_threshold_failures_directions_and_missing_metric():
    assert threshold_failures({"accuracy": 0.8, "rmse": 2.0}, {"accuracy": 0.7, "rmse": 3.0}) == []
    assert threshold_failures({"rmse": 4.0}, {"rmse": 3.0}) == ["rmse 4.0000 > 3.0"]
    assert threshold_failures({}, {"roc_auc": 0.5}) == ["roc_auc not available"]
