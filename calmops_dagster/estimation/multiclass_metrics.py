"""Multiclass metrics: realized from labels (one label vector or many draws at once) and expected from
calibrated probabilities.

Classes are positions 0..k-1 in the model's ``classes`` (the columns of its probabilities). Every threshold
metric is a function of the confusion matrix ``cm[true, predicted]``; ``precision``, ``recall`` and ``f1``
are macro averages over all k classes (scikit-learn's ``average="macro", labels=classes, zero_division=0``),
``balanced_accuracy`` the mean recall over the classes present in the labels (scikit-learn's
``balanced_accuracy_score``) and ``roc_auc`` the one-vs-rest macro average (``roc_auc_score(...,
multi_class="ovr", labels=classes)``), NaN when a class is absent from the labels.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from calmops_dagster.estimation.metrics import _ratio, check_metric, expected_metric


def from_confusion_matrix(metric: str, cm) -> np.ndarray:
    """The threshold ``metric`` of each confusion matrix ``cm[..., true, predicted]`` (counts or expected counts).

    Examples
    --------
    >>> cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 4]])
    >>> float(from_confusion_matrix("accuracy", cm)), round(float(from_confusion_matrix("recall", cm)), 4)
    (0.8, 0.8111)
    """
    cm = np.asarray(cm, dtype=np.float64)
    hits = np.diagonal(cm, axis1=-2, axis2=-1)
    actual, predicted = cm.sum(axis=-1), cm.sum(axis=-2)
    if metric == "accuracy":
        return hits.sum(axis=-1) / actual.sum(axis=-1)
    if metric == "precision":
        return _ratio(hits, predicted).mean(axis=-1)
    if metric == "recall":
        return _ratio(hits, actual).mean(axis=-1)
    if metric == "f1":
        return _ratio(2 * hits, actual + predicted).mean(axis=-1)
    if metric == "balanced_accuracy":
        return _ratio(_ratio(hits, actual).sum(axis=-1), (actual > 0).sum(axis=-1))
    raise ValueError(f"{metric!r} is not a threshold metric")


def confusion_matrices(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """``cm[d, true, predicted]`` of each row ``d`` of the (draws, n) class positions ``labels``."""
    draws = labels.shape[0]
    cells = (np.arange(draws)[:, None] * n_classes + labels) * n_classes + predicted
    return np.bincount(cells.ravel(), minlength=draws * n_classes**2).reshape(draws, n_classes, n_classes)


def roc_auc_from_labels(labels: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """One-vs-rest macro ROC AUC of each row of the (draws, n) class positions ``labels``.

    ``ranks[:, k]`` are the average ranks of class k's probabilities; class k's AUC is the Mann-Whitney
    statistic of the rank sum of its rows. NaN for a draw in which a class has no row or every row.
    """
    draws, n = labels.shape
    k = ranks.shape[1]
    slots = (np.arange(draws)[:, None] * k + labels).ravel()
    rank_sums = np.bincount(slots, weights=ranks[np.arange(n), labels].ravel(), minlength=draws * k)
    positives = np.bincount(slots, minlength=draws * k).astype(np.float64)
    rank_sums, positives = rank_sums.reshape(draws, k), positives.reshape(draws, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sums - positives * (positives + 1) / 2) / (positives * (n - positives))
    return np.where((positives * (n - positives) > 0).all(axis=1), auc.mean(axis=1), np.nan)


def class_ranks(proba: np.ndarray) -> np.ndarray:
    """Average ranks of each class's probabilities over the rows (ties share their mean rank)."""
    return rankdata(proba, axis=0)


def realized_multiclass_metric(metric: str, labels, proba, predicted):
    """The metric the model reaches on known labels.

    Parameters
    ----------
    metric : str
        One of :data:`~calmops_dagster.estimation.metrics.METRICS`.
    labels : array-like of int, shape (n_samples,) or (n_draws, n_samples)
        True class positions; a 2-D array gives one value per row (per draw).
    proba : array-like of shape (n_samples, n_classes)
        The model's probabilities (they order the ROC curves).
    predicted : array-like of int, shape (n_samples,)
        The model's predicted class positions.

    Returns
    -------
    float or ndarray of shape (n_draws,)

    Examples
    --------
    >>> proba = np.array([[.7, .2, .1], [.2, .5, .3], [.1, .3, .6], [.4, .4, .2]])
    >>> float(realized_multiclass_metric("accuracy", [0, 1, 2, 1], proba, proba.argmax(axis=1)))
    0.75
    """
    proba = np.asarray(proba, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.intp)
    single = labels.ndim == 1
    labels = np.atleast_2d(labels)
    if labels.shape[-1] != proba.shape[0]:
        raise ValueError(f"labels of shape {labels.shape} do not match proba of shape {proba.shape}")
    if check_metric(metric) == "roc_auc":
        value = roc_auc_from_labels(labels, class_ranks(proba))
    else:
        value = from_confusion_matrix(metric, confusion_matrices(labels, np.asarray(predicted), proba.shape[1]))
    return value[0] if single else value


def expected_multiclass_metric(metric: str, calibrated, proba, predicted) -> float:
    """The CBPE point estimate: the metric of the expected confusion matrix (ROC AUC: the mean of the expected
    one-vs-rest ROC curves' areas).

    With calibrated probabilities ``c`` (rows summing to one), the expected count of rows of true class i
    predicted as j is the sum of ``c[:, i]`` over the rows predicted j. Class k's expected ROC curve is the
    binary one (:func:`~calmops_dagster.estimation.metrics.expected_metric`) of ``c[:, k]`` ordered by the raw
    ``proba[:, k]``.

    Examples
    --------
    >>> c = np.array([[.8, .1, .1], [.1, .8, .1], [.2, .2, .6]])
    >>> round(expected_multiclass_metric("accuracy", c, c, c.argmax(axis=1)), 4)
    0.7333
    """
    calibrated = np.asarray(calibrated, dtype=np.float64)
    proba = np.asarray(proba, dtype=np.float64)
    n_classes = calibrated.shape[1]
    if check_metric(metric) == "roc_auc":
        return float(np.mean([expected_metric("roc_auc", calibrated[:, k], proba[:, k]) for k in range(n_classes)]))
    by_prediction = np.zeros((n_classes, n_classes))
    np.add.at(by_prediction, np.asarray(predicted), calibrated)  # [predicted, true]
    return float(from_confusion_matrix(metric, by_prediction.T))
