"""Label-free estimation for multiclass classifiers: metrics against scikit-learn, per-class calibration,
interval coverage, covariate shift, predictions other than the most probable class, and bad input."""

import numpy as np
import pytest
from scipy.special import softmax
from sklearn import metrics as skm
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from calmops_dagster.estimation import (
    METRICS,
    ClassCalibrator,
    PerformanceEstimator,
    cross_fitted_probabilities,
    expected_multiclass_metric,
    realized_multiclass_metric,
    simulate_multiclass_metric,
)

#: The true class log-odds of two features: four classes, unequal in size and separability.
WEIGHTS = np.array([[2.0, 0.0], [-1.0, 1.5], [-1.0, -1.5], [0.5, 0.5]])


def draw_labels(rng, proba):
    return (rng.uniform(size=(len(proba), 1)) > proba.cumsum(axis=1)).sum(axis=1)


def softmax_world(rng, n, shift=(0.0, 0.0), scale=1.0):
    """Labels from softmax(W x) whatever the features' distribution (``shift``, ``scale``), and the
    probabilities of an over-confident, biased model of them (a miscalibration per class)."""
    logits = (rng.normal(size=(n, 2)) * scale + shift) @ WEIGHTS.T
    return draw_labels(rng, softmax(logits, axis=1)), softmax(1.6 * logits + [0.3, 0.0, 0.0, -0.3], axis=1)


def sklearn_multiclass(metric, y, proba, predicted, sample_weight=None):
    labels = np.arange(proba.shape[1])
    if metric == "roc_auc":
        return skm.roc_auc_score(y, proba, multi_class="ovr", labels=labels, sample_weight=sample_weight)
    if metric == "accuracy":
        return skm.accuracy_score(y, predicted, sample_weight=sample_weight)
    if metric == "balanced_accuracy":
        return skm.balanced_accuracy_score(y, predicted, sample_weight=sample_weight)
    score = {"f1": skm.f1_score, "precision": skm.precision_score, "recall": skm.recall_score}[metric]
    return score(y, predicted, average="macro", labels=labels, zero_division=0, sample_weight=sample_weight)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("metric", METRICS)
def test_realized_metric_matches_sklearn_with_ties_draws_and_an_absent_class(metric):
    rng = np.random.default_rng(0)
    proba = softmax(np.round(rng.normal(size=(300, 4)), 1), axis=1)  # tied scores
    draws = draw_labels(rng, np.tile(proba, (6, 1))).reshape(6, 300)
    draws[-1][draws[-1] == 3] = 1  # class 3 absent: recall and F1 count it as 0, ROC AUC is undefined
    predicted = rng.integers(0, 4, 300)  # not the most probable class
    for predictions in (proba.argmax(axis=1), predicted):
        expected = [sklearn_multiclass(metric, y, proba, predictions) for y in draws[:-1]]
        values = realized_multiclass_metric(metric, draws, proba, predictions)
        np.testing.assert_allclose(values[:-1], expected, rtol=1e-12)
        if metric == "roc_auc":
            assert np.isnan(values[-1])
        else:
            assert values[-1] == pytest.approx(sklearn_multiclass(metric, draws[-1], proba, predictions), rel=1e-12)
        assert realized_multiclass_metric(metric, draws[0], proba, predictions) == pytest.approx(expected[0])


@pytest.mark.parametrize("metric", METRICS)
def test_expected_metric_is_sklearn_on_probability_weighted_rows(metric):
    """The expected confusion matrix (ROC curves) = every row once as each class i with weight c[:, i]."""
    rng = np.random.default_rng(1)
    proba = softmax(np.round(rng.normal(size=(400, 3)), 1), axis=1)
    calibrated = softmax(np.log(proba) + rng.normal(0, 0.3, size=(400, 3)), axis=1)
    predicted = proba.argmax(axis=1)
    rows = np.repeat(np.arange(400), 3)
    classes = np.tile(np.arange(3), 400)
    expected = sklearn_multiclass(metric, classes, proba[rows], predicted[rows], calibrated.ravel())
    assert expected_multiclass_metric(metric, calibrated, proba, predicted) == pytest.approx(expected, rel=1e-9)


def test_class_calibration_repairs_the_model_and_rows_sum_to_one():
    rng = np.random.default_rng(2)
    y, raw = softmax_world(rng, 20_000)
    calibrated = ClassCalibrator().fit(raw, y).predict(raw)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)
    est = PerformanceEstimator(random_state=0).fit(y, raw)
    assert est.raw_miscalibrated_ and est.raw_calibration_error_ > 0.04
    assert est.calibration_error_ < 0.01  # out of fold, each class against the rest

    def worst_gap(proba, k):
        bins = np.array_split(np.argsort(proba[:, k]), 10)
        return max(abs((y[b] == k).mean() - proba[b, k].mean()) for b in bins)

    for k in range(4):  # each class's probability nearer its frequency, bin by bin (renormalizing moves it a bit)
        assert worst_gap(calibrated, k) < min(0.05, worst_gap(raw, k) / 2)


@pytest.mark.parametrize("metric", ["accuracy", "f1", "roc_auc"])
def test_interval_covers_realized_value_95_percent_when_calibrated(metric):
    rng = np.random.default_rng(3)

    def block(n, concentration):
        proba = rng.dirichlet(concentration, size=n)
        return draw_labels(rng, proba), proba

    est = PerformanceEstimator(metric=metric, random_state=0, n_draws=400).fit(*block(20_000, [1, 1, 1]))
    hits = []
    for _ in range(150):  # blocks of 600 rows, each with other class shares
        y, proba = block(600, rng.uniform(0.5, 2, size=3))
        e = est.estimate(proba)
        hits.append(e.lower <= est.realized(y, proba) <= e.upper)
    assert 0.90 <= np.mean(hits) <= 0.99


@pytest.mark.parametrize("metric", METRICS)
def test_estimate_tracks_realized_value_under_covariate_shift(metric):
    """P(y | x) fixed, the features shifted and narrowed: the metric moves and the estimate follows it."""
    rng = np.random.default_rng(4)
    est = PerformanceEstimator(metric=metric, random_state=0).fit(*softmax_world(rng, 30_000))
    errors, moved = [], []
    for shift in [(0.5, 0.0), (0.0, 0.7), (-0.5, -0.5)]:
        y, proba = softmax_world(rng, 5_000, shift, scale=0.7)
        e, realized = est.estimate(proba), est.realized(y, proba)
        errors.append(abs(e.value - realized))
        moved.append(abs(est.reference_value_ - realized))
        assert e.warnings == () and e.lower < e.value < e.upper
    assert max(errors) < 0.025 and sum(errors) < 0.35 * sum(moved), (metric, errors, moved)


def test_predictions_other_than_the_most_probable_class():
    """A model that predicts class 0 only when it is very sure (a cost-sensitive rule): the estimate uses
    the predictions it is given, at fit and at estimate."""
    rng = np.random.default_rng(5)

    def rule(proba):
        cautious = proba.copy()
        cautious[:, 0] = np.where(proba[:, 0] > 0.95, proba[:, 0], 0)
        return cautious.argmax(axis=1)

    y, proba = softmax_world(rng, 20_000)
    plain = PerformanceEstimator(metric="recall", random_state=0).fit(y, proba)
    est = PerformanceEstimator(metric="recall", random_state=0).fit(y, proba, y_pred=rule(proba))
    assert est.reference_value_ == pytest.approx(
        skm.recall_score(y, rule(proba), average="macro", labels=range(4), zero_division=0))
    y_cur, proba_cur = softmax_world(rng, 5_000)
    e = est.estimate(proba_cur, y_pred=rule(proba_cur))
    realized = est.realized(y_cur, proba_cur, y_pred=rule(proba_cur))
    assert abs(e.value - realized) < 2 * e.std
    plain_realized = plain.realized(y_cur, proba_cur)  # the most probable class scores otherwise
    assert abs(plain.estimate(proba_cur).value - plain_realized) < 2 * e.std
    assert abs(plain_realized - realized) > 5 * e.std


def test_labels_of_any_type_and_columns_in_the_order_of_classes():
    rng = np.random.default_rng(6)
    y, proba = softmax_world(rng, 6_000)
    names = np.array(["red", "green", "blue", "amber"])[y]  # sorted: amber, blue, green, red
    order = ["red", "green", "blue", "amber"]
    numeric = PerformanceEstimator(metric="f1", random_state=0).fit(y, proba)
    given = PerformanceEstimator(metric="f1", random_state=0).fit(names, proba, classes=order)
    assert given.classes_.tolist() == order and given.positive_label_ is None
    sorted_columns = proba[:, [3, 2, 1, 0]]
    default = PerformanceEstimator(metric="f1", random_state=0).fit(names, sorted_columns)
    assert default.classes_.tolist() == sorted(order)
    block = proba[:800]
    assert given.estimate(block) == numeric.estimate(block)
    assert default.estimate(sorted_columns[:800]).value == pytest.approx(numeric.estimate(block).value)
    assert given.estimate(block, y_pred=np.array(order)[block.argmax(axis=1)]) == numeric.estimate(block)


def test_simulated_draws_match_the_realized_metric_of_labels_drawn_the_same_way():
    rng = np.random.default_rng(7)
    calibrated = rng.dirichlet([2, 1, 1], size=500)
    predicted = calibrated.argmax(axis=1)
    draws = simulate_multiclass_metric("balanced_accuracy", calibrated, calibrated, predicted, 2_000, 0)
    direct = [realized_multiclass_metric("balanced_accuracy", draw_labels(rng, calibrated), calibrated, predicted)
              for _ in range(2_000)]
    assert np.mean(draws) == pytest.approx(np.mean(direct), abs=0.003)
    assert np.std(draws) == pytest.approx(np.std(direct), rel=0.1)


def test_warns_when_a_class_column_leaves_the_reference_range():
    rng = np.random.default_rng(8)
    est = PerformanceEstimator(random_state=0).fit(*softmax_world(rng, 5_000, scale=0.5))
    assert est.estimate(softmax_world(rng, 1_000, scale=0.5)[1]).warnings == ()
    shifted = est.estimate(softmax_world(rng, 1_000, shift=(3.0, 0.0), scale=0.5)[1])
    assert shifted.unsupported_share > 0.3
    assert len(shifted.warnings) == 1 and "outside the reference range" in shifted.warnings[0]
    assert shifted.warnings[0].startswith("class ")


def test_cross_fitted_probabilities_of_more_classes_are_the_out_of_fold_matrix():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(900, 2))
    y = np.array(["a", "b", "c"])[draw_labels(rng, softmax(x @ WEIGHTS[:3].T, axis=1))]
    proba = cross_fitted_probabilities(LogisticRegression(), x, y, cv=3, random_state=0)
    manual = np.empty((900, 3))
    for train, test in StratifiedKFold(3, shuffle=True, random_state=0).split(x, y):
        manual[test] = clone(LogisticRegression()).fit(x[train], y[train]).predict_proba(x[test])
    np.testing.assert_allclose(proba, manual)
    with pytest.raises(ValueError, match="positive_label is for two classes"):
        cross_fitted_probabilities(LogisticRegression(), x, y, positive_label="a")


def test_bad_input_is_a_value_error_naming_the_problem():
    rng = np.random.default_rng(10)
    y, proba = softmax_world(rng, 400)
    cases = [
        ({}, (y, np.c_[proba[:, :3], proba[:, 3] + 0.2]), {}, "rows of proba do not sum to one"),
        ({}, (y, proba / 2), {}, "sums to 0.5"),
        ({}, (y, proba), {"y_pred": np.where(y == 0, 7, y)}, r"y_pred holds classes \[7\]"),
        ({}, (y, proba[:, 0]), {}, "1-D proba is for binary classification only"),
        ({}, (y, proba[:, :3]), {}, "proba has 3 columns for 4 classes"),
        ({}, (np.where(y == 3, 0, y), proba), {}, "proba has 4 columns for 3 classes"),
        ({}, (np.where(y == 3, 0, y), proba), {"classes": [0, 1, 2, 3]}, r"classes \[3\] have no reference rows"),
        ({}, (y, proba), {"classes": [0, 1, 2, 5]}, r"labels \[3\] that are not among classes"),
        ({}, (y, proba), {"classes": [0, 1, 1, 2]}, "distinct labels"),
        ({"threshold": 0.3}, (y, proba), {}, "threshold are for binary models"),
        ({"positive_label": 1}, (y, proba), {}, "positive_label and threshold are for binary models"),
        ({}, (y, proba), {"y_pred": y[:10]}, "y_pred has 10 rows and proba 400"),
        ({}, (y, proba[:10]), {}, "y_true has 400 rows and proba 10"),
        ({}, (y % 2, proba[:, 0]), {"y_pred": np.where(y == 0, 5, 1)}, r"y_pred holds labels \[5\] that are not among the fitted"),
        ({}, (y % 2, proba[:, 0]), {"y_pred": y[:10] % 2}, "y_pred has 10 rows and proba 400"),
    ]
    for params, args, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            PerformanceEstimator(**params).fit(*args, **kwargs)
    fitted = PerformanceEstimator().fit(y, proba)
    with pytest.raises(ValueError, match=r"y_pred holds classes \['x'\]"):
        fitted.estimate(proba, y_pred=np.full(400, "x"))
    with pytest.raises(ValueError, match="do not sum to one"):
        fitted.estimate(proba * 0.99)
    with pytest.raises(ValueError, match=r"y_true holds classes \[9\]"):
        fitted.realized(np.full(400, 9), proba)
