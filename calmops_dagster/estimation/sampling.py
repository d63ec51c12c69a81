"""The sampling distribution of a block's realized metric when its labels are drawn from the calibrated
probabilities (Bernoulli for a binary model, categorical for a multiclass one).

If the calibrated probabilities are right, the block's true labels are one draw of independent
``y_i ~ Bernoulli(c_i)`` (``Categorical(c_i)``); the realized metric of many such draws is the distribution
the block's own realized value comes from, so its quantiles make an interval that holds it as often as
they say.
"""

from __future__ import annotations

import numpy as np

from calmops_dagster.estimation.metrics import from_label_sums, label_weights
from calmops_dagster.estimation.multiclass_metrics import (
    class_ranks,
    confusion_matrices,
    from_confusion_matrix,
    roc_auc_from_labels,
)

#: Uniform draws generated at once (float32, 8 MiB): bounds memory whatever the block's size.
CHUNK_ELEMENTS = 1 << 21


def simulate_metric(metric: str, calibrated, proba, threshold: float = 0.5, n_draws: int = 1000,
                    random_state=None) -> np.ndarray:
    """Realized metric of ``n_draws`` label vectors drawn as ``y_i ~ Bernoulli(calibrated_i)``.

    Each chunk of draws is a boolean matrix (uniforms below ``calibrated``) reduced to the metric's label
    sums (:func:`~calmops_dagster.estimation.metrics.label_weights`): counts over the predicted positives
    and negatives for the threshold metrics, the rank sum and count of the positives for ROC AUC. Most of
    the time goes into drawing the uniforms.

    Parameters
    ----------
    metric : str
        One of :data:`~calmops_dagster.estimation.metrics.METRICS`.
    calibrated : array-like of shape (n_samples,)
        Calibrated positive-class probabilities: the labels' distribution.
    proba : array-like of shape (n_samples,)
        The model's raw probabilities: its predictions (``proba >= threshold``) and ROC ordering.
    threshold : float, default 0.5
    n_draws : int, default 1000
    random_state : None, int or numpy.random.Generator
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    ndarray of shape (n_draws,)
        NaN for a ROC AUC draw whose labels hold one class only.

    Examples
    --------
    >>> import numpy as np
    >>> draws = simulate_metric("accuracy", np.full(1000, 0.9), np.full(1000, 0.8), random_state=0)
    >>> round(float(draws.mean()), 2), round(float(draws.std()), 2)
    (0.9, 0.01)
    """
    rng = np.random.default_rng(random_state)
    calibrated = np.asarray(calibrated, dtype=np.float32)
    weights = label_weights(metric, np.asarray(proba, dtype=np.float64), threshold)
    if metric != "roc_auc":  # predicted positives first, for _label_sums
        calibrated = calibrated[np.argsort(weights[:, 1], kind="stable")]
    chunk = max(1, CHUNK_ELEMENTS // len(calibrated))
    sums = np.concatenate([
        _label_sums(metric, rng.random((min(chunk, n_draws - start), len(calibrated)), dtype=np.float32) < calibrated,
                    weights)
        for start in range(0, n_draws, chunk)
    ])
    return from_label_sums(metric, sums, weights.sum(axis=0))


def _label_sums(metric: str, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``labels @ weights`` for a boolean (draws, n) matrix, without a float copy of it.

    Threshold metrics: counts over two slices, the columns being ordered predicted positives first. ROC AUC:
    ``einsum`` casts the booleans as it goes (exact float64 rank sums, no BLAS threads) and counts.
    """
    if metric == "roc_auc":
        return np.column_stack([np.einsum("ij,j->i", labels, weights[:, 0], dtype=np.float64, casting="unsafe"),
                                np.count_nonzero(labels, axis=1)])
    n_positive = int(weights[:, 0].sum())
    return np.column_stack([np.count_nonzero(labels[:, :n_positive], axis=1),
                            np.count_nonzero(labels[:, n_positive:], axis=1)])


def draw_classes(cumulative: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Class positions drawn from each row's probabilities: row i's label is the number of entries of its
    cumulative probabilities (all classes but the last) at or below the uniform ``uniforms[d, i]``."""
    labels = np.zeros(uniforms.shape, dtype=np.intp)
    for k in range(cumulative.shape[1] - 1):
        labels += uniforms >= cumulative[:, k]
    return labels


def simulate_multiclass_metric(metric: str, calibrated, proba, predicted, n_draws: int = 1000,
                               random_state=None) -> np.ndarray:
    """Realized metric of ``n_draws`` label vectors drawn as ``y_i ~ Categorical(calibrated_i)``.

    Each chunk of draws is reduced to its confusion matrices (threshold metrics) or to the rank sums and
    counts of every class (ROC AUC) with :func:`numpy.bincount`, so a draw costs O(n) whatever the classes.

    Parameters
    ----------
    metric : str
        One of :data:`~calmops_dagster.estimation.metrics.METRICS`.
    calibrated : array-like of shape (n_samples, n_classes)
        Calibrated class probabilities (rows summing to one): the labels' distribution.
    proba : array-like of shape (n_samples, n_classes)
        The model's raw probabilities: they order the ROC curves.
    predicted : array-like of int, shape (n_samples,)
        The model's predicted class positions.
    n_draws : int, default 1000
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    ndarray of shape (n_draws,)
        NaN for a ROC AUC draw in which a class has no row.

    Examples
    --------
    >>> import numpy as np
    >>> c = np.tile([0.8, 0.15, 0.05], (1000, 1))
    >>> draws = simulate_multiclass_metric("accuracy", c, c, np.zeros(1000, dtype=int), random_state=0)
    >>> round(float(draws.mean()), 2), round(float(draws.std()), 2)
    (0.8, 0.01)
    """
    rng = np.random.default_rng(random_state)
    calibrated = np.asarray(calibrated, dtype=np.float64)
    proba = np.asarray(proba, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.intp)
    n, n_classes = calibrated.shape
    cumulative = np.cumsum(calibrated, axis=1).astype(np.float32)
    ranks = class_ranks(proba) if metric == "roc_auc" else None
    chunk = max(1, CHUNK_ELEMENTS // (4 * n))  # a float32 and an intp matrix per chunk
    values = []
    for start in range(0, n_draws, chunk):
        labels = draw_classes(cumulative, rng.random((min(chunk, n_draws - start), n), dtype=np.float32))
        if metric == "roc_auc":
            values.append(roc_auc_from_labels(labels, ranks))
        else:
            values.append(from_confusion_matrix(metric, confusion_matrices(labels, predicted, n_classes)))
    return np.concatenate(values)
