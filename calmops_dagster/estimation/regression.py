"""RegressionPerformanceEstimator: a regressor's error on a block whose targets have not arrived, with its
interval (direct loss estimation, as NannyML's DLE)."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, column_or_1d

from calmops_dagster.estimation.error_model import ErrorModel, as_frame
from calmops_dagster.estimation.estimator import Estimate
from calmops_dagster.estimation.regression_metrics import (
    check_regression_metric,
    from_mean_loss,
    realized_regression_metric,
    row_losses,
)
from calmops_dagster.estimation.sampling import CHUNK_ELEMENTS
from calmops_dagster.estimation.support import MAX_UNSUPPORTED_SHARE

#: Folds of the out-of-fold error model whose residuals make the interval.
ERROR_MODEL_FOLDS = 5
#: Fewest labelled reference rows: each of the folds' error models then learns from 80 rows or more.
MIN_REFERENCE_ROWS = 100
#: Predicted losses are floored at this share of the reference's mean loss (a residual ratio needs a
#: positive denominator).
LOSS_FLOOR_SHARE = 1e-3


def check_target(values, name: str) -> np.ndarray:
    """``values`` as a finite 1-D float64 array; NaN or infinite values are a ValueError naming ``name``."""
    values = np.asarray(column_or_1d(values, warn=True), dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"{name} holds {int(bad.sum())} NaN or infinite values (first at row "
                         f"{int(np.flatnonzero(bad)[0])}): estimation needs a number in every row")
    return values


class RegressionPerformanceEstimator(BaseEstimator):
    """Estimate a regressor's error on data without targets, from a model of its per-row loss.

    Direct loss estimation (DLE, as in NannyML): an error model (:class:`~calmops_dagster.estimation.
    error_model.ErrorModel`, gradient-boosted trees) learns the monitored model's per-row loss (absolute,
    squared or absolute percentage error) from the row's features and prediction on labelled reference rows;
    on a block without targets its mean predicted loss (levelled out of fold: ``loss_scale_``) is the
    estimate (``rmse``: its square root). The
    interval adds two errors. The block's sampling error: the error model, fitted out of fold on the
    reference, leaves residual ratios ``loss / predicted loss``, and a block's losses are drawn as its
    predicted losses times ratios drawn from those. The error model's own error: the spread of the
    estimate over the fold models (delete-a-group jackknife), added as normal noise to each draw. The
    interval holds the middle ``confidence_level`` of ``n_draws`` such draws. What neither sees is the
    error model's bias where the reference had few rows like the block's.

    The reference rows must be ones the monitored model did not train on (its errors there are too small):
    held-out rows, or its training rows with out-of-fold predictions
    (:func:`~calmops_dagster.estimation.crossfit.cross_fitted_predictions`).

    **What it sees.** A block whose features move to where the model errs more (or less) than on average,
    as far as the reference showed how the error depends on them. **What it cannot see.** A change of
    P(y | x) (concept drift): the error model of the reference no longer holds. A warning in
    :attr:`Estimate.warnings` says when the block's predictions leave the range the reference covered.

    Parameters
    ----------
    metric : {"mae", "rmse", "mse", "mape"}, default "mae"
        ``mape`` is a share (0.1 = 10%), as scikit-learn's.
    random_state : None, int or numpy.random.Generator
        Seed of the draws; an int gives the same draws at every ``estimate`` call.
    confidence_level : float, default 0.95
    n_draws : int, default 1000

    Attributes
    ----------
    feature_names_in_ : list of str
        Columns of ``X_ref`` (``x0``, ``x1``, ... for an array).
    error_model_ : ErrorModel
        Fitted on every reference row, and out of fold (its ``fold_models_``, ``out_of_fold_``).
    residual_ratios_ : ndarray
        ``loss / out-of-fold predicted loss`` of each reference row, scaled to a mean of one.
    reference_value_ : float
        The realized metric on the reference (what "carry the reference score forward" would estimate).
    out_of_fold_value_ : float
        The estimate of the reference's metric from the out-of-fold error models, before ``loss_scale_``:
        near ``reference_value_`` when the error model carries to rows it was not fitted on.
    loss_scale_ : float
        Mean reference loss over mean out-of-fold predicted loss; every predicted loss is multiplied by it.
        A tree model fitted to heavy-tailed losses (squared errors above all) learns its few large ones where
        they happened to be, and predicts less on new rows than it saw; the scale measured out of fold puts
        its level back.
    prediction_range_ : tuple of float
        Smallest and largest reference prediction.
    loss_floor_ : float
        Predicted losses below this are raised to it.
    n_reference_ : int

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> def rows(n, low, high):
    ...     X = pd.DataFrame({"x": rng.uniform(low, high, n), "shop": rng.choice(["a", "b"], n)})
    ...     return X, 2 * X["x"] + rng.normal(0, X["x"]), 2 * X["x"]     # noise grows with x
    >>> X_ref, y_ref, pred_ref = rows(3000, 0, 2)
    >>> est = RegressionPerformanceEstimator(metric="mae", random_state=0).fit(X_ref, y_ref, pred_ref)
    >>> X, y, pred = rows(1000, 1, 2)                                    # a block of larger x
    >>> e = est.estimate(X, pred)
    >>> realized = est.realized(y, pred)
    >>> round(est.reference_value_, 2), round(e.value, 2), round(realized, 2), bool(e.lower < realized < e.upper)
    (0.78, 1.15, 1.18, True)
    """

    def __init__(self, metric="mae", random_state=None, confidence_level=0.95, n_draws=1000):
        self.metric = metric
        self.random_state = random_state
        self.confidence_level = confidence_level
        self.n_draws = n_draws

    def _check_params(self) -> None:
        check_regression_metric(self.metric)
        if not isinstance(self.confidence_level, numbers.Real) or not 0 < self.confidence_level < 1:
            raise ValueError(f"confidence_level must be a number in (0, 1), got {self.confidence_level!r}")
        if not isinstance(self.n_draws, numbers.Integral) or self.n_draws < 100:
            raise ValueError(f"n_draws must be an integer >= 100, got {self.n_draws!r}")

    def fit(self, X_ref, y_true, y_pred) -> RegressionPerformanceEstimator:
        """Fit the error model on labelled reference rows.

        Parameters
        ----------
        X_ref : DataFrame or array-like of shape (n_samples, n_features)
            The monitored model's features; text, boolean and category columns are encoded here.
        y_true : array-like of shape (n_samples,)
            The targets; NaN is refused.
        y_pred : array-like of shape (n_samples,)
            The monitored model's predictions on rows it did not train on.

        Returns
        -------
        self
        """
        self._check_params()
        X = as_frame(X_ref, "X_ref")
        y, predicted = check_target(y_true, "y_true"), check_target(y_pred, "y_pred")
        if not len(X) == len(y) == len(predicted):
            raise ValueError(f"X_ref has {len(X)} rows, y_true {len(y)} and y_pred {len(predicted)}")
        if len(y) < MIN_REFERENCE_ROWS:
            raise ValueError(f"the error model needs at least {MIN_REFERENCE_ROWS} labelled reference rows, "
                             f"got {len(y)}")
        loss = row_losses(self.metric, y, predicted)
        if not loss.any():
            raise ValueError(f"every reference row has a {self.metric} loss of zero: there is no error to model")
        self.feature_names_in_ = list(X.columns)
        self.loss_floor_ = LOSS_FLOOR_SHARE * float(loss.mean())
        self.error_model_ = ErrorModel(ERROR_MODEL_FOLDS, random_state=0).fit(X, predicted, loss)
        out_of_fold = np.maximum(self.error_model_.out_of_fold_, self.loss_floor_)
        self.out_of_fold_value_ = float(from_mean_loss(self.metric, out_of_fold.mean()))
        self.loss_scale_ = float(loss.mean() / out_of_fold.mean())
        ratios = loss / (self.loss_scale_ * out_of_fold)
        self.residual_ratios_ = ratios / ratios.mean()  # the draws centre on the point estimate
        self.reference_value_ = realized_regression_metric(self.metric, y, predicted)
        self.prediction_range_ = (float(predicted.min()), float(predicted.max()))
        self.n_reference_ = len(y)
        return self

    def _inputs(self, X, y_pred) -> tuple:
        X = as_frame(X)
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"X lacks the columns {missing[:10]} the estimator was fitted on")
        predicted = check_target(y_pred, "y_pred")
        if len(X) != len(predicted):
            raise ValueError(f"X has {len(X)} rows and y_pred {len(predicted)}")
        return X[self.feature_names_in_], predicted

    def estimate(self, X, y_pred) -> Estimate:
        """Estimate the metric on a block from its features and the model's predictions alone.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            The columns of ``X_ref`` (more are ignored).
        y_pred : array-like of shape (n_samples,)

        Returns
        -------
        Estimate
        """
        check_is_fitted(self)
        X, predicted = self._inputs(X, y_pred)
        expected_loss, fold_losses = (np.maximum(self.loss_scale_ * losses, self.loss_floor_)
                                      for losses in self.error_model_.predict_with_folds(X, predicted))
        value = float(from_mean_loss(self.metric, expected_loss.mean()))
        rng = np.random.default_rng(self.random_state)
        draws = self._draws(expected_loss, rng) + rng.normal(0.0, self._error_model_std(fold_losses), self.n_draws)
        tail = (1 - self.confidence_level) / 2
        lower, upper = np.quantile(draws, [tail, 1 - tail])
        low, high = self.prediction_range_
        outside = float(np.mean((predicted < low) | (predicted > high)))
        warnings = () if outside <= MAX_UNSUPPORTED_SHARE else ((
            f"{outside:.1%} of the block's predictions lie outside the reference's range [{low:.4g}, {high:.4g}]: "
            "the error model is extrapolated there and the estimate may be off by more than its interval"),)
        return Estimate(metric=self.metric, value=value, lower=float(lower), upper=float(upper),
                        std=float(draws.std()), mc_mean=float(draws.mean()), n=len(predicted),
                        confidence=self.confidence_level, unsupported_share=outside, warnings=warnings)

    def _error_model_std(self, fold_losses: np.ndarray) -> float:
        """Standard error of the estimate from the error model's own uncertainty: the delete-a-group jackknife
        over the fold models' estimates (each model fitted without one fold of the reference)."""
        values = from_mean_loss(self.metric, fold_losses.mean(axis=1))
        return float(np.sqrt((len(values) - 1) / len(values) * np.sum((values - values.mean()) ** 2)))

    def _draws(self, expected_loss: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The metric of ``n_draws`` loss vectors ``expected_loss * ratio``, ratios drawn from the reference's."""
        n = len(expected_loss)
        chunk = max(1, CHUNK_ELEMENTS // n)
        means = [(expected_loss * self.residual_ratios_[rng.integers(0, len(self.residual_ratios_),
                                                                     (min(chunk, self.n_draws - start), n))]).mean(axis=1)
                 for start in range(0, self.n_draws, chunk)]
        return from_mean_loss(self.metric, np.concatenate(means))

    def realized(self, y_true, y_pred) -> float:
        """The metric realized on targets that have arrived."""
        check_is_fitted(self)
        return realized_regression_metric(self.metric, check_target(y_true, "y_true"), check_target(y_pred, "y_pred"))
