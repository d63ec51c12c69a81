"""The metrics: realized from labels (one label vector or many draws at once) and expected from probabilities.

Every metric is a function of two label sums, ``y @ W`` for a weight matrix ``W`` of shape (n, 2) that
depends only on the model's probabilities (:func:`label_weights`): the true positives and the false
negatives for the threshold metrics, the rank sum of the positives and their count for ROC AUC. So the
realized metric of a thousand simulated label vectors is one matrix product, and every metric is the
same as scikit-learn's (``zero_division=0``; ROC AUC with tied scores counting one half).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

THRESHOLD_METRICS = ("accuracy", "balanced_accuracy", "f1", "precision", "recall")
METRICS = (*THRESHOLD_METRICS, "roc_auc")


def check_metric(metric: str) -> str:
    """``metric`` when it is one of :data:`METRICS`, else a ValueError listing them."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")
    return metric


def _ratio(num, den):
    """``num / den`` elementwise, 0 where ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    return np.divide(num, den, out=np.zeros(num.shape), where=den != 0)


def from_confusion(metric: str, tp, fp, fn, tn):
    """A threshold metric from confusion-matrix entries (counts or expected counts, scalars or arrays).

    ``balanced_accuracy`` averages the recalls of the classes present, as scikit-learn does.
    """
    tp, fp, fn, tn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn, tn))
    if metric == "accuracy":
        return (tp + tn) / (tp + fp + fn + tn)
    if metric == "precision":
        return _ratio(tp, tp + fp)
    if metric == "recall":
        return _ratio(tp, tp + fn)
    if metric == "f1":
        return _ratio(2 * tp, 2 * tp + fp + fn)
    if metric == "balanced_accuracy":
        present = (tp + fn > 0).astype(float) + (tn + fp > 0)
        return _ratio(_ratio(tp, tp + fn) + _ratio(tn, tn + fp), present)
    raise ValueError(f"{metric!r} is not a threshold metric; threshold metrics: {', '.join(THRESHOLD_METRICS)}")


def predicted_positive(proba: np.ndarray, threshold: float, predicted=None) -> np.ndarray:
    """The rows the model predicts positive: ``predicted`` (a boolean mask of the predictions it made) when
    given, else ``proba >= threshold``."""
    if predicted is None:
        return proba >= threshold
    predicted = np.asarray(predicted, dtype=bool)
    if predicted.shape != proba.shape:
        raise ValueError(f"predicted of shape {predicted.shape} does not match proba of shape {proba.shape}")
    return predicted


def label_weights(metric: str, proba: np.ndarray, threshold: float, predicted=None) -> np.ndarray:
    """The (n, 2) matrix ``W`` such that ``y @ W`` holds every label sum the metric needs.

    Threshold metrics: the predicted-positive and predicted-negative masks (:func:`predicted_positive`), so
    ``y @ W`` is (TP, FN). ROC AUC: the average ranks of ``proba`` and ones, so ``y @ W`` is the rank sum
    of the positives and their count.
    """
    if check_metric(metric) == "roc_auc":
        return np.column_stack([rankdata(proba), np.ones(len(proba))])
    positive = predicted_positive(proba, threshold, predicted)
    return np.column_stack([positive, ~positive]).astype(np.float64)


def from_label_sums(metric: str, sums: np.ndarray, totals: np.ndarray):
    """The metric from ``sums = y @ W`` (shape (..., 2)) and ``totals = W.sum(axis=0)``.

    ROC AUC is NaN where the labels hold one class only.
    """
    sums = np.asarray(sums, dtype=np.float64)
    if metric == "roc_auc":
        rank_sum, n_pos = sums[..., 0], sums[..., 1]
        n_neg = totals[1] - n_pos
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        return np.where(n_pos * n_neg > 0, auc, np.nan)
    tp, fn = sums[..., 0], sums[..., 1]
    return from_confusion(metric, tp, totals[0] - tp, fn, totals[1] - fn)


def realized_metric(metric: str, y_true, proba, threshold: float = 0.5, predicted=None):
    """The metric the model reaches on known 0/1 labels.

    Parameters
    ----------
    metric : str
        One of :data:`METRICS`.
    y_true : array-like of shape (n_samples,) or (n_draws, n_samples)
        0/1 labels (1 = positive); a 2-D array gives one value per row (per draw).
    proba : array-like of shape (n_samples,)
        The model's positive-class probabilities; predictions are ``proba >= threshold``.
    threshold : float, default 0.5
    predicted : array-like of bool, shape (n_samples,), optional
        The rows the model predicted positive, when its predictions are not ``proba >= threshold``.

    Returns
    -------
    float or ndarray of shape (n_draws,)

    Examples
    --------
    >>> y = [0, 0, 1, 1, 1]
    >>> p = [0.1, 0.6, 0.4, 0.8, 0.9]
    >>> float(realized_metric("accuracy", y, p)), float(realized_metric("roc_auc", y, p))
    (0.6, 0.8333333333333334)
    """
    proba, y_true = np.asarray(proba, dtype=np.float64), np.asarray(y_true, dtype=np.float64)
    if y_true.shape[-1:] != proba.shape:
        raise ValueError(f"y_true of shape {y_true.shape} does not match proba of shape {proba.shape}")
    weights = label_weights(metric, proba, threshold, predicted)
    value = from_label_sums(metric, y_true @ weights, weights.sum(axis=0))
    return value[()] if value.ndim == 0 else value


def expected_metric(metric: str, calibrated, proba, threshold: float = 0.5, predicted=None) -> float:
    """The CBPE point estimate: the metric of the expected confusion matrix (or expected ROC curve).

    With calibrated probabilities ``c``, the expected TP is the sum of ``c`` over the predicted positives
    (``predicted`` when given: the predictions the model made; else ``proba >= threshold``),
    FP the sum of ``1 - c`` over them, FN and TN the same over the predicted negatives. ROC AUC is the area
    under the expected ROC curve: at each distinct raw score, expected TPR = cumulated ``c`` / sum ``c``
    and expected FPR = cumulated ``1 - c`` / sum ``1 - c`` (the trapezoid rule joins tied scores, as
    scikit-learn's ``roc_curve`` does). Equivalently: scikit-learn's metric on every row counted once as a
    positive with weight ``c`` and once as a negative with weight ``1 - c``.

    Parameters
    ----------
    metric : str
        One of :data:`METRICS`.
    calibrated : array-like of shape (n_samples,)
        Calibrated probabilities of the positive class.
    proba : array-like of shape (n_samples,)
        The model's raw probabilities: they make the predictions (unless ``predicted`` is given) and order
        the ROC curve.
    threshold : float, default 0.5
    predicted : array-like of bool, shape (n_samples,), optional
        The rows the model predicted positive.

    Examples
    --------
    >>> round(expected_metric("accuracy", [0.1, 0.7, 0.9], [0.2, 0.6, 0.8]), 4)
    0.8333
    >>> round(expected_metric("accuracy", [0.1, 0.7, 0.9], [0.2, 0.6, 0.8], predicted=[False, False, True]), 4)
    0.7
    """
    calibrated = np.asarray(calibrated, dtype=np.float64)
    proba = np.asarray(proba, dtype=np.float64)
    if check_metric(metric) != "roc_auc":
        positive = predicted_positive(proba, threshold, predicted)
        return float(from_confusion(metric, calibrated[positive].sum(), (1 - calibrated[positive]).sum(),
                                    calibrated[~positive].sum(), (1 - calibrated[~positive]).sum()))
    order = np.argsort(-proba, kind="stable")
    tps, fps = np.cumsum(calibrated[order]), np.cumsum(1 - calibrated[order])
    if tps[-1] <= 0 or fps[-1] <= 0:
        return float("nan")
    group_ends = np.r_[np.flatnonzero(np.diff(proba[order])), len(proba) - 1]
    tpr = np.r_[0.0, tps[group_ends] / tps[-1]]
    fpr = np.r_[0.0, fps[group_ends] / fps[-1]]
    return float(np.trapezoid(tpr, fpr))
