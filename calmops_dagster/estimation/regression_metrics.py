"""Regression metrics as means of per-row losses, so that a model of the loss estimates them.

``mae`` is the mean absolute error, ``mse`` the mean squared error, ``rmse`` its square root and ``mape``
the mean absolute percentage error ``|y - pred| / max(|y|, eps)`` (as scikit-learn's, a share, not a
percent). Each is a function of the mean of one per-row loss (:func:`row_losses`, :func:`from_mean_loss`).
"""

from __future__ import annotations

import numpy as np

REGRESSION_METRICS = ("mae", "rmse", "mse", "mape")
#: scikit-learn's floor of ``|y|`` in the MAPE denominator.
MAPE_EPS = np.finfo(np.float64).eps


def check_regression_metric(metric: str) -> str:
    """``metric`` when it is one of :data:`REGRESSION_METRICS`, else a ValueError listing them."""
    if metric not in REGRESSION_METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(REGRESSION_METRICS)}")
    return metric


def row_losses(metric: str, y_true, y_pred) -> np.ndarray:
    """The per-row loss whose mean makes ``metric``: absolute error (mae), squared error (mse, rmse) or
    absolute percentage error (mape).

    Examples
    --------
    >>> row_losses("mape", [2.0, -4.0], [1.0, -5.0]).tolist()
    [0.5, 0.25]
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    error = y_true - y_pred
    if check_regression_metric(metric) == "mae":
        return np.abs(error)
    if metric in ("mse", "rmse"):
        return error**2
    return np.abs(error) / np.maximum(np.abs(y_true), MAPE_EPS)


def from_mean_loss(metric: str, mean_loss):
    """``metric`` from the mean of its per-row loss: the square root for rmse, the mean itself otherwise."""
    mean_loss = np.asarray(mean_loss, dtype=np.float64)
    return np.sqrt(mean_loss) if check_regression_metric(metric) == "rmse" else mean_loss


def realized_regression_metric(metric: str, y_true, y_pred) -> float:
    """The metric of predictions ``y_pred`` against known targets ``y_true`` (equal to scikit-learn's).

    Examples
    --------
    >>> round(realized_regression_metric("rmse", [1.0, 2.0, 3.0], [1.0, 2.0, 5.0]), 4)
    1.1547
    """
    return float(from_mean_loss(metric, row_losses(metric, y_true, y_pred).mean()))
