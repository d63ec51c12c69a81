"""Label-free estimation for regressors (direct loss estimation): metrics against scikit-learn, covariate
shift, categorical features, interval coverage, cross-fitted reference predictions and bad input."""

import numpy as np
import pandas as pd
import pytest
import threadpoolctl
from sklearn import metrics as skm
from sklearn.base import clone
from sklearn.ensemble import RandomForestRegressor
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import KFold

from calmops_dagster.estimation import (
    REGRESSION_METRICS,
    RegressionPerformanceEstimator,
    cross_fitted_predictions,
    realized_regression_metric,
)

SKLEARN = {
    "mae": skm.mean_absolute_error,
    "mse": skm.mean_squared_error,
    "rmse": skm.root_mean_squared_error,
    "mape": skm.mean_absolute_percentage_error,
}
#: Noise of the target in each shop: the model errs three times more in shop "c" than in shop "a".
SHOP_NOISE = {"a": 0.5, "b": 1.0, "c": 1.5}


def shop_world(rng, n, shops=("a", "b", "c"), x_scale=1.0):
    """Features (a text column, a pandas category, two numbers), targets and the predictions of a model
    that knows the mean: its error grows with |x1| and with the shop's noise, kept away from y = 0."""
    X = pd.DataFrame({
        "x1": rng.normal(0, x_scale, n),
        "x2": rng.uniform(0, 1, n),
        "shop": rng.choice(shops, n),
        "region": pd.Categorical(rng.choice(["north", "south"], n), categories=["north", "south"]),
    })
    mean = 20 + 3 * X["x1"] + 2 * X["x2"] + np.where(X["region"] == "north", 1.0, -1.0)
    noise = X["shop"].map(SHOP_NOISE).to_numpy() * (1 + 0.5 * np.abs(X["x1"]))
    return X, (mean + rng.normal(0, 1, n) * noise).to_numpy(), mean.to_numpy()


@pytest.mark.parametrize("metric", REGRESSION_METRICS)
def test_realized_metric_matches_sklearn(metric):
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    y[:3] = 0.0  # MAPE's floor of |y|, as scikit-learn's
    pred = y + rng.normal(size=200)
    assert realized_regression_metric(metric, y, pred) == pytest.approx(SKLEARN[metric](y, pred), rel=1e-12)


@pytest.mark.parametrize("metric", REGRESSION_METRICS)
def test_estimate_follows_the_error_to_where_the_block_lies(metric):
    """The block holds only the noisiest shop with a wider x1: the error grows and the estimate follows it;
    the reference's metric carried forward stays behind."""
    rng = np.random.default_rng(1)
    est = RegressionPerformanceEstimator(metric=metric, random_state=0).fit(*shop_world(rng, 4_000))
    assert est.out_of_fold_value_ == pytest.approx(est.reference_value_, rel=0.05)
    for shops, x_scale in [(("c",), 1.2), (("a",), 0.7), (("a", "b"), 1.0)]:
        X, y, pred = shop_world(rng, 2_000, shops, x_scale)
        e, realized = est.estimate(X, pred), SKLEARN[metric](y, pred)
        assert est.realized(y, pred) == pytest.approx(realized, rel=1e-12)
        assert abs(e.value - realized) < 0.2 * abs(est.reference_value_ - realized), (metric, shops, e, realized)
        assert e.lower < e.value < e.upper and e.warnings == ()


@pytest.mark.parametrize("metric", ["mae", "rmse"])
def test_interval_covers_realized_value_about_95_percent(metric):
    rng = np.random.default_rng(2)
    est = RegressionPerformanceEstimator(metric=metric, random_state=0, n_draws=500).fit(*shop_world(rng, 3_000))
    hits = []
    for _ in range(60):  # blocks of 400 rows, each with its own shop mix and spread of x1
        shops = rng.choice(["a", "b", "c"], size=rng.integers(1, 4), replace=False)
        X, y, pred = shop_world(rng, 400, tuple(shops), rng.uniform(0.5, 1.5))
        e = est.estimate(X, pred)
        hits.append(e.lower <= est.realized(y, pred) <= e.upper)
    assert 0.88 <= np.mean(hits) <= 1.0


def test_categorical_features_need_no_encoding_and_new_categories_count_as_missing():
    rng = np.random.default_rng(3)
    est = RegressionPerformanceEstimator(random_state=0).fit(*shop_world(rng, 3_000))
    assert est.error_model_.categorical_ == ["shop", "region"]
    X, _, pred = shop_world(rng, 1_000, ("c",))
    by_code = X.assign(shop=pd.Categorical(X["shop"]), region=X["region"].astype(str))  # other dtypes, same values
    assert est.estimate(by_code, pred) == est.estimate(X, pred)
    unseen = est.estimate(X.assign(shop="z"), pred)  # a shop the reference never saw: no error, a middling estimate
    assert est.estimate(shop_world(rng, 1_000, ("a",))[0], pred).value < unseen.value < est.estimate(X, pred).value
    assert est.estimate(X[["region", "shop", "x2", "x1"]].assign(extra=1.0), pred) == est.estimate(X, pred)


def test_cross_fitted_predictions_keep_training_rows_from_teaching_the_error_model():
    """A forest's errors on its own training rows are a fraction of its errors on new rows: fitted on them the
    estimate is far too low, fitted on out-of-fold predictions it is near the held-out truth."""
    rng = np.random.default_rng(4)
    X, y, _ = shop_world(rng, 2_000)
    X_new, y_new, _ = shop_world(rng, 2_000)
    encoded, encoded_new = (pd.get_dummies(frame, dtype=float) for frame in (X, X_new))
    forest = RandomForestRegressor(n_estimators=30, min_samples_leaf=2, random_state=0, n_jobs=1)
    model = clone(forest).fit(encoded, y)
    pred_new = model.predict(encoded_new)
    truth = skm.mean_absolute_error(y_new, pred_new)
    in_sample = RegressionPerformanceEstimator(random_state=0).fit(X, y, model.predict(encoded))
    out_of_fold = cross_fitted_predictions(forest, encoded, y, random_state=0)
    crossfit = RegressionPerformanceEstimator(random_state=0).fit(X, y, out_of_fold)
    assert in_sample.estimate(X_new, pred_new).value < 0.7 * truth
    assert crossfit.estimate(X_new, pred_new).value == pytest.approx(truth, rel=0.1)
    manual = np.empty(len(y))
    for train, test in KFold(5, shuffle=True, random_state=0).split(encoded):
        manual[test] = clone(forest).fit(encoded.iloc[train], y[train]).predict(encoded.iloc[test])
    np.testing.assert_allclose(out_of_fold, manual)


def test_arrays_warnings_and_the_estimator_contract():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(1_000, 2))
    y = X @ [1.0, -1.0] + rng.normal(0, 1 + np.abs(X[:, 0]))
    pred = LinearRegression().fit(X, y).predict(X)
    est = RegressionPerformanceEstimator(metric="rmse", random_state=0)
    assert est.get_params() == {"metric": "rmse", "random_state": 0, "confidence_level": 0.95, "n_draws": 1000}
    with pytest.raises(NotFittedError):
        est.estimate(X, pred)
    assert est.fit(X, y, pred) is est and est.feature_names_in_ == ["x0", "x1"]
    assert est.estimate(X[:300], pred[:300]) == est.estimate(X[:300], pred[:300])  # seeded draws
    far = est.estimate(X[:300] * 10, pred[:300] * 10)
    assert far.unsupported_share > 0.5 and "outside the reference's range" in far.warnings[0]


def test_bad_input_is_a_value_error_naming_the_problem():
    rng = np.random.default_rng(6)
    X, y, pred = shop_world(rng, 300)
    nan_y = y.copy()
    nan_y[[4, 9]] = np.nan
    cases = [
        ({}, (X, nan_y, pred), r"y_true holds 2 NaN or infinite values \(first at row 4\)"),
        ({}, (X, y, np.r_[pred[:-1], np.inf]), "y_pred holds 1 NaN or infinite"),
        ({}, (X[:99], y[:99], pred[:99]), "needs at least 100 labelled reference rows, got 99"),
        ({}, (X, y[:200], pred), "X_ref has 300 rows, y_true 200 and y_pred 300"),
        ({}, (X, y, y), "every reference row has a mae loss of zero"),
        ({}, (X["x1"].to_numpy(), y, pred), r"X_ref must be 2-D"),
        ({"metric": "r2"}, (X, y, pred), "valid metrics: mae, rmse, mse, mape"),
        ({"confidence_level": 95}, (X, y, pred), "confidence_level"),
        ({"n_draws": 5}, (X, y, pred), "n_draws"),
    ]
    for params, args, message in cases:
        with pytest.raises(ValueError, match=message):
            RegressionPerformanceEstimator(**params).fit(*args)
    fitted = RegressionPerformanceEstimator(random_state=0).fit(X, y, pred)
    with pytest.raises(ValueError, match=r"X lacks the columns \['shop'\]"):
        fitted.estimate(X.drop(columns="shop"), pred)
    with pytest.raises(ValueError, match="X has 300 rows and y_pred 10"):
        fitted.estimate(X, pred[:10])
    with pytest.raises(ValueError, match="y_true holds 2 NaN"):
        fitted.realized(nan_y, pred)


def test_an_estimate_does_not_scan_the_loaded_libraries_again(monkeypatch):
    """The one-thread limit reuses the thread pools found once (each scan costs ~3 ms of CPU per block)."""
    rng = np.random.default_rng(5)
    X, y, _ = shop_world(rng, 500)
    estimator = RegressionPerformanceEstimator(random_state=0).fit(X, y, y + rng.normal(0, 1, len(y)))
    estimator.estimate(X, y)
    scans, real = [], threadpoolctl.ThreadpoolController._load_libraries

    def counted(self):
        scans.append(1)
        return real(self)

    monkeypatch.setattr(threadpoolctl.ThreadpoolController, "_load_libraries", counted)
    estimator.estimate(X, y)
    RegressionPerformanceEstimator(random_state=0).fit(X, y, y + rng.normal(0, 1, len(y))).estimate(X, y)
    assert scans == []
