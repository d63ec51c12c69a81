"""Label-free performance estimation: metrics against scikit-learn, interval coverage, covariate shift,
the reference checks and the estimator contract."""

import doctest
import importlib
import pkgutil
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import expit
from sklearn import metrics as skm
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from calmops_dagster import estimation
from calmops_dagster.estimation import (
    METRICS,
    PerformanceEstimator,
    cross_fitted_probabilities,
    expected_metric,
    realized_metric,
)

SKLEARN = {
    "accuracy": skm.accuracy_score,
    "balanced_accuracy": skm.balanced_accuracy_score,
    "f1": lambda y, pred, **kw: skm.f1_score(y, pred, zero_division=0, **kw),
    "precision": lambda y, pred, **kw: skm.precision_score(y, pred, zero_division=0, **kw),
    "recall": lambda y, pred, **kw: skm.recall_score(y, pred, zero_division=0, **kw),
}


def sklearn_metric(metric, y, proba, threshold=0.5, sample_weight=None):
    if metric == "roc_auc":
        return skm.roc_auc_score(y, proba, sample_weight=sample_weight)
    return SKLEARN[metric](y, (proba >= threshold).astype(int), sample_weight=sample_weight)


def logistic_world(rng, n, shift=0.0, scale=1.0):
    """Two features, P(y | x) = expit(2 x1 - x2) whatever the features' distribution (``shift`` moves x1,
    ``scale`` narrows both)."""
    x = rng.normal(size=(n, 2)) * scale + [shift, 0.0]
    return x, (rng.uniform(size=n) < expit(2 * x[:, 0] - x[:, 1])).astype(int)


@pytest.mark.parametrize("metric", METRICS)
def test_realized_metric_matches_sklearn_with_ties_and_draws(metric):
    rng = np.random.default_rng(0)
    proba = np.round(rng.uniform(size=300), 2)  # tied scores
    draws = (rng.uniform(size=(5, 300)) < proba).astype(int)
    for threshold in (0.5, 0.8):
        expected = [sklearn_metric(metric, y, proba, threshold) for y in draws]
        np.testing.assert_allclose(realized_metric(metric, draws, proba, threshold), expected, rtol=1e-12)
        assert realized_metric(metric, draws[0], proba, threshold) == pytest.approx(expected[0], rel=1e-12)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("metric", ["precision", "recall", "f1", "balanced_accuracy"])
def test_realized_metric_degenerate_cases_match_sklearn(metric):
    proba = np.array([0.1, 0.2, 0.3, 0.7])
    for y in ([0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0]):
        for threshold in (0.5, 0.9):
            assert realized_metric(metric, y, proba, threshold) == pytest.approx(
                sklearn_metric(metric, np.array(y), proba, threshold))


def test_realized_roc_auc_of_one_class_is_nan():
    assert np.isnan(realized_metric("roc_auc", [1, 1, 1], [0.2, 0.5, 0.9]))


@pytest.mark.parametrize("metric", METRICS)
def test_expected_metric_is_sklearn_on_probability_weighted_rows(metric):
    """CBPE's expected confusion matrix (ROC curve) = every row once as a positive with weight c and once
    as a negative with weight 1 - c."""
    rng = np.random.default_rng(1)
    proba = np.round(rng.uniform(size=400), 2)
    calibrated = np.clip(proba + rng.normal(0, 0.1, size=400), 0, 1)
    y = np.r_[np.ones(400), np.zeros(400)]
    expected = sklearn_metric(metric, y, np.r_[proba, proba], 0.5, np.r_[calibrated, 1 - calibrated])
    assert expected_metric(metric, calibrated, proba) == pytest.approx(expected, rel=1e-9)


#: Calibrated probabilities, raw probabilities and the predictions of a model with its own rule (not proba >= 0.5).
CM_CALIBRATED = np.array([0.9, 0.8, 0.6, 0.3, 0.2])
CM_PROBA = np.array([0.7, 0.55, 0.45, 0.4, 0.1])
CM_PREDICTED = np.array([1, 0, 1, 1, 0])
# By hand: predicted positive rows 0, 2, 3: TP = .9 + .6 + .3 = 1.8, FP = .1 + .4 + .7 = 1.2; predicted negative
# rows 1, 4: FN = .8 + .2 = 1.0, TN = .2 + .8 = 1.0. With proba >= 0.5 (rows 0, 1): TP 1.7, FP .3, FN 1.1, TN 1.9.
CM_BY_HAND = {"accuracy": (1.8 + 1.0) / 5, "precision": 1.8 / 3, "recall": 1.8 / 2.8, "f1": 3.6 / 5.8,
              "balanced_accuracy": (1.8 / 2.8 + 1.0 / 2.2) / 2}
CM_BY_THRESHOLD = {"accuracy": 3.6 / 5, "precision": 1.7 / 2, "recall": 1.7 / 2.8, "f1": 3.4 / 4.8,
                   "balanced_accuracy": (1.7 / 2.8 + 1.9 / 2.2) / 2}


@pytest.mark.parametrize("metric", sorted(CM_BY_HAND))
def test_expected_metric_counts_the_predictions_the_model_made(metric):
    by_prediction = expected_metric(metric, CM_CALIBRATED, CM_PROBA, predicted=CM_PREDICTED.astype(bool))
    assert by_prediction == pytest.approx(CM_BY_HAND[metric], rel=1e-12)
    assert expected_metric(metric, CM_CALIBRATED, CM_PROBA) == pytest.approx(CM_BY_THRESHOLD[metric], rel=1e-12)


@pytest.mark.parametrize("metric", sorted(CM_BY_HAND))
def test_estimator_with_y_pred_estimates_the_predictions_the_model_made(metric):
    """The reference: ten rows at each raw probability with 2, 3, 6, 8 and 9 positives, so the isotonic map
    sends 0.1, 0.4, 0.45, 0.55, 0.7 to 0.2, 0.3, 0.6, 0.8, 0.9 exactly (CM_CALIBRATED of CM_PROBA)."""
    proba_ref = np.repeat(CM_PROBA, 10)
    y_ref = np.concatenate([np.arange(10) < round(10 * c) for c in CM_CALIBRATED]).astype(int)
    labels = np.array(["stay", "leave"])  # the positive class is the larger label, "stay"
    est = PerformanceEstimator(metric=metric, positive_label="leave", random_state=0).fit(labels[y_ref], proba_ref)
    block, predicted = np.tile(CM_PROBA, 2_000), np.tile(labels[CM_PREDICTED], 2_000)
    e = est.estimate(block, y_pred=predicted)
    assert e.value == pytest.approx(CM_BY_HAND[metric], rel=1e-9)
    assert est.estimate(block).value == pytest.approx(CM_BY_THRESHOLD[metric], rel=1e-9)
    assert abs(e.mc_mean - e.value) < 2 * e.std / np.sqrt(1_000) + 1e-3 and e.lower < e.value < e.upper
    assert est.estimate(block, y_pred=np.where(block >= 0.5, "leave", "stay")) == est.estimate(block)
    y_block = np.tile(labels[(np.arange(5) < 3).astype(int)], 2_000)  # any labels: realized counts y_pred too
    assert est.realized(y_block, block, y_pred=predicted) == pytest.approx(
        SKLEARN[metric](y_block == "leave", predicted == "leave"))


@pytest.fixture(scope="module")
def calibrated_world():
    """A monotone distortion of the true probability: isotonic calibration on the reference undoes it."""
    rng = np.random.default_rng(2)

    def block(n, mean=0.0):
        p = expit(1.5 * rng.normal(mean, 1.0, size=n))
        return (rng.uniform(size=n) < p).astype(int), p**0.6

    return rng, block


@pytest.mark.parametrize("metric", ["accuracy", "roc_auc"])
def test_interval_covers_realized_value_95_percent_when_calibrated(calibrated_world, metric):
    rng, block = calibrated_world
    est = PerformanceEstimator(metric=metric, random_state=0, n_draws=500).fit(*block(20_000))
    hits = []
    for _ in range(200):  # blocks of 1,000 rows, each from a shifted feature distribution
        y, proba = block(1_000, mean=rng.uniform(-0.5, 0.5))
        e = est.estimate(proba)
        hits.append(e.lower <= est.realized(y, proba) <= e.upper)
    assert 0.90 <= np.mean(hits) <= 0.99


def test_estimate_tracks_realized_value_under_covariate_shift():
    """P(y | x) fixed, the features shifted and narrowed; the model's probability is a monotone (miscalibrated)
    function of the true log-odds, so P(y | probability) stays fixed as well."""
    rng = np.random.default_rng(3)

    def model(x):
        return expit(1.5 * (2 * x[:, 0] - x[:, 1]) + 0.5)

    x_ref, y_ref = logistic_world(rng, 50_000)
    x_cur, y_cur = logistic_world(rng, 5_000, shift=0.5, scale=0.5)
    proba_ref, proba_cur = model(x_ref), model(x_cur)
    for metric in ("accuracy", "roc_auc", "f1"):
        est = PerformanceEstimator(metric=metric, random_state=0).fit(y_ref, proba_ref)
        e, realized = est.estimate(proba_cur), est.realized(y_cur, proba_cur)
        assert abs(e.value - realized) <= 2 * e.std, (metric, e, realized)
        assert abs(est.reference_value_ - realized) > 2 * e.std  # the shift moved the metric
        assert e.warnings == () and abs(e.mc_mean - e.value) < e.std


def test_labels_of_any_type_with_default_and_explicit_positive_label(calibrated_world):
    _, block = calibrated_world
    y, proba = block(3_000)
    words = np.where(y == 1, "yes", "no")
    numeric = PerformanceEstimator(metric="f1", random_state=0).fit(y, proba)
    named = PerformanceEstimator(metric="f1", random_state=0).fit(words, proba)
    assert named.positive_label_ == "yes" and list(named.classes_) == ["no", "yes"]
    assert named.estimate(proba[:500]) == numeric.estimate(proba[:500])
    flipped = PerformanceEstimator(metric="f1", positive_label="no", random_state=0).fit(words, 1 - proba)
    predicted = np.where(1 - proba >= 0.5, "no", "yes")
    assert flipped.realized(words, 1 - proba) == pytest.approx(skm.f1_score(words, predicted, pos_label="no"))


def test_reference_checks_flag_a_miscalibrated_raw_model(calibrated_world):
    _, block = calibrated_world
    y, distorted = block(20_000)
    p_true = distorted ** (1 / 0.6)
    calibrated = PerformanceEstimator().fit(y, p_true)
    miscalibrated = PerformanceEstimator().fit(y, distorted)
    assert not calibrated.raw_miscalibrated_ and calibrated.raw_calibration_error_ < 0.02
    assert miscalibrated.raw_miscalibrated_ and miscalibrated.raw_calibration_error_ > 0.05
    assert miscalibrated.calibration_error_ < 0.02  # the map repairs it out of fold


def test_sigmoid_calibration_agrees_with_isotonic_on_a_logistic_distortion():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=20_000)
    y = (rng.uniform(size=20_000) < expit(logits)).astype(int)
    raw = expit(2 * logits + 0.5)  # over-confident and shifted: Platt scaling on the log-odds undoes it
    values = {method: PerformanceEstimator(calibration=method, random_state=0).fit(y, raw).estimate(raw[:2_000])
              for method in ("isotonic", "sigmoid")}
    assert values["sigmoid"].value == pytest.approx(values["isotonic"].value, abs=0.01)


def test_warns_when_block_probabilities_leave_the_reference_range():
    rng = np.random.default_rng(5)
    proba_ref = expit(rng.normal(0, 0.5, size=5_000))
    est = PerformanceEstimator(random_state=0).fit(rng.uniform(size=5_000) < proba_ref, proba_ref)
    assert est.estimate(expit(rng.normal(0, 0.5, size=1_000))).warnings == ()
    shifted = est.estimate(expit(rng.normal(3, 0.5, size=1_000)))
    assert shifted.unsupported_share > 0.5
    assert len(shifted.warnings) == 1 and "outside the reference range" in shifted.warnings[0]


def test_warns_when_roc_auc_draws_hold_one_class():
    rng = np.random.default_rng(6)
    proba_ref = rng.uniform(size=2_000)
    est = PerformanceEstimator(metric="roc_auc", random_state=0).fit(rng.uniform(size=2_000) < proba_ref,
                                                                     proba_ref)
    e = est.estimate([0.01, 0.02, 0.03, 0.05])
    assert any("one class only" in w for w in e.warnings)


def test_cross_fitted_probabilities_are_out_of_fold_predictions():
    rng = np.random.default_rng(7)
    x, y = logistic_world(rng, 1_000)
    labels = np.where(y == 1, "pos", "neg")
    proba = cross_fitted_probabilities(LogisticRegression(), x, labels, cv=4, random_state=0)
    manual = np.empty(len(y))
    for train, test in StratifiedKFold(4, shuffle=True, random_state=0).split(x, labels):
        manual[test] = clone(LogisticRegression()).fit(x[train], labels[train]).predict_proba(x[test])[:, 1]
    np.testing.assert_allclose(proba, manual)
    negative = cross_fitted_probabilities(LogisticRegression(), x, labels, cv=4, positive_label="neg",
                                          random_state=0)
    np.testing.assert_allclose(negative, 1 - manual)
    est = PerformanceEstimator(random_state=0).fit(labels, proba)
    assert est.positive_label_ == "pos" and 0.5 < est.estimate(proba).value < 1


def test_estimator_contract_and_validation_errors():
    est = PerformanceEstimator(metric="bogus", threshold=7)  # __init__ only stores
    assert est.get_params()["metric"] == "bogus" and clone(est).threshold == 7
    y, proba = np.array([0, 1, 1, 0]), np.array([0.2, 0.8, 0.6, 0.3])
    with pytest.raises(ValueError, match="valid metrics: accuracy, balanced_accuracy, f1, precision, recall, "
                                         "roc_auc"):
        est.fit(y, proba)
    with pytest.raises(NotFittedError):
        PerformanceEstimator().estimate(proba)
    bad = [
        ({"calibration": "beta"}, y, proba, "valid: isotonic, sigmoid"),
        ({"threshold": 1.5}, y, proba, "threshold"),
        ({"confidence_level": 1.0}, y, proba, "confidence_level"),
        ({"n_draws": 10}, y, proba, "n_draws"),
        ({}, [0, 1, 2, 0], proba, "binary classification only"),
        ({}, [1, 1, 1, 1], proba, "binary classification only"),
        ({"positive_label": "yes"}, y, proba, "not a class of y"),
        ({}, y, np.column_stack([1 - proba, proba]), r"predict_proba\(X\)\[:, 1\]"),
        ({}, y, proba + 0.5, r"in \[0, 1\]"),
        ({}, y, [0.2, np.nan, 0.6, 0.3], "NaN"),
        ({}, y, proba[:3], "rows"),
    ]
    for params, y_bad, proba_bad, message in bad:
        with pytest.raises(ValueError, match=message):
            PerformanceEstimator(**params).fit(y_bad, proba_bad)
    fitted = PerformanceEstimator().fit(y, proba)
    assert fitted.fit(y, proba) is fitted
    with pytest.raises(ValueError, match="not among the fitted classes"):
        fitted.realized([0, 1, 5, 0], proba)


def test_package_does_not_import_dagster():
    code = "import sys, calmops_dagster.estimation; assert 'dagster' not in sys.modules, 'dagster imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", [m.name for m in pkgutil.iter_modules(estimation.__path__)] + ["__init__"])
def test_doctests(name):
    module = estimation if name == "__init__" else importlib.import_module(f"{estimation.__name__}.{name}")
    assert doctest.testmod(module).failed == 0
