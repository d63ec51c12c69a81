"""Model drift: bootstrap performance drift and streaming detectors over the error stream."""

import numpy as np
import pytest
from sklearn import metrics

from calmops_dagster.drift import model_drift as md
from calmops_dagster.drift.model_drift import (
    DEFAULT_DETECTORS,
    bootstrap_scores,
    error_stream,
    performance_drift,
    score,
    stream_drift,
)


@pytest.fixture(scope="module")
def labels():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 500)
    pred = np.where(rng.random(500) < 0.7, y, rng.integers(0, 3, 500))
    target = rng.normal(size=500)
    return y, pred, target, target + rng.normal(0, 0.5, 500)


def test_scores_match_scikit_learn(labels):
    y, pred, t, tp = labels
    assert score(y, pred, "accuracy") == pytest.approx(metrics.accuracy_score(y, pred))
    assert score(y, pred, "balanced_accuracy") == pytest.approx(metrics.balanced_accuracy_score(y, pred))
    assert score(y, pred, "f1_macro") == pytest.approx(metrics.f1_score(y, pred, average="macro"))
    assert score(t, tp, "rmse") == pytest.approx(np.sqrt(metrics.mean_squared_error(t, tp)))
    assert score(t, tp, "mae") == pytest.approx(metrics.mean_absolute_error(t, tp))
    assert score(t, tp, "r2") == pytest.approx(metrics.r2_score(t, tp))
    with pytest.raises(ValueError, match="valid"):
        score(y, pred, "auc")


@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy", "f1_macro", "rmse", "r2"])
def test_the_vectorised_bootstrap_has_the_distribution_of_resampled_rows(labels, metric):
    """Multinomial confusion counts (classification) and index matrices (regression) against the plain
    loop over resampled rows: the same mean and spread, and each resample is a valid score."""
    y, pred, t, tp = labels
    truth, guess = (y, pred) if metric in ("accuracy", "balanced_accuracy", "f1_macro") else (t, tp)
    fast = bootstrap_scores(truth, guess, metric, 4_000, np.random.default_rng(1), chunk_cells=100_000)
    rng = np.random.default_rng(2)
    loop = np.array([score(truth[i], guess[i], metric) for i in (rng.integers(0, 500, 500) for _ in range(4_000))])
    assert fast.shape == (4_000,)
    assert fast.mean() == pytest.approx(loop.mean(), abs=0.1 * loop.std())
    assert fast.std() == pytest.approx(loop.std(), rel=0.08)


@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy", "f1_macro"])
def test_a_resample_scored_from_its_confusion_counts_equals_its_rows_scored(metric):
    """Classes missing from a resample (here 2, then 0) count as scikit-learn counts them on the rows."""
    y, pred = np.array([0, 0, 1, 2, 2, 1]), np.array([0, 1, 1, 1, 2, 0])
    for rows in ([0, 1, 1, 2, 5, 5], [2, 2, 3, 3, 4, 5], [0, 1, 2, 3, 4, 5]):
        t, p = y[rows], pred[rows]
        cm = np.bincount(t * 3 + p, minlength=9).reshape(3, 3)
        assert md._confusion_scores(cm, metric) == pytest.approx(score(t, p, metric))


def test_classification_performance_drift_and_no_drift(labels):
    y, pred, _, _ = labels
    acc = score(y, pred, "accuracy")
    ok = performance_drift(y, pred, reference=acc, metric="accuracy")
    assert not ok.drifted and ok.ci_low < acc < ok.ci_high and ok.ci_high - ok.ci_low < 0.1
    bad = performance_drift(y, pred, reference=acc + 0.15)
    assert bad.drifted and bad.ci_high < acc + 0.15
    assert not performance_drift(y, pred, reference=acc + 0.15, tolerance=0.2).drifted


def test_regression_performance_drift_uses_the_right_direction(labels):
    _, _, t, tp = labels
    rmse = score(t, tp, "rmse")
    assert performance_drift(t, tp, reference=rmse * 0.7, metric="rmse").drifted      # error grew
    assert not performance_drift(t, tp, reference=rmse * 1.3, metric="rmse").drifted  # error shrank
    assert performance_drift(t, tp, reference=0.95, metric="r2").drifted


def test_performance_bad_input():
    with pytest.raises(ValueError, match="same length"):
        performance_drift([1, 0], [1], reference=0.5)
    single = performance_drift([1], [1], reference=0.5)
    assert not single.drifted and "not tested" in single.note


def test_stream_detectors_find_the_change_in_a_classification_error_stream():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 3000)
    wrong = np.r_[rng.random(1500) < 0.1, rng.random(1500) < 0.4]
    errors = error_stream(y, np.where(wrong, 1 - y, y), "classification")
    summary = stream_drift(errors)
    assert [r.detector for r in summary.results] == list(DEFAULT_DETECTORS)
    for r in summary.results:
        assert r.detected and 1500 <= r.drift_index < 2000, r
    assert 1500 <= summary.first_drift_index < 1700


def test_stream_detectors_stay_quiet_on_a_stationary_stream():
    rng = np.random.default_rng(4)
    summary = stream_drift((rng.random(3000) < 0.1).astype(float))
    assert not summary.detected and summary.first_drift_index is None


def test_regression_stream_skips_binary_detectors_and_finds_the_change():
    rng = np.random.default_rng(5)
    t = rng.normal(size=3000)
    pred = t + np.r_[rng.normal(0, 1, 1500), rng.normal(0, 2.5, 1500)]
    summary = stream_drift(error_stream(t, pred, "regression"))
    by = {r.detector: r for r in summary.results}
    assert "needs a 0/1 error stream" in by["ddm"].note and not by["ddm"].detected
    for name in ("hddm_a", "page_hinkley"):
        assert by[name].detected and by[name].drift_index >= 1500, by[name]
    with pytest.raises(ValueError, match="task"):
        error_stream(t, pred, "ranking")
