"""Input checks: labels to 0/1 or class positions, probabilities to a float vector or a row-stochastic matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_array, column_or_1d


def binary_classes(y, positive_label=None) -> tuple[np.ndarray, object]:
    """The two classes of ``y`` (sorted) and the positive one.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Labels with exactly two distinct values, of any type (0/1, -1/1, strings, booleans).
    positive_label : object, optional
        The positive class; by default the larger of the two sorted labels (1 of 0/1, ``True``,
        ``"yes"`` of ``"no"``/``"yes"``).

    Returns
    -------
    classes : ndarray of shape (2,)
    positive_label : object

    Raises
    ------
    ValueError
        ``y`` does not hold exactly two classes, or ``positive_label`` is not one of them.

    Examples
    --------
    >>> binary_classes(["no", "yes", "no"])
    (array(['no', 'yes'], dtype='<U3'), np.str_('yes'))
    """
    classes = np.unique(column_or_1d(y, warn=True))
    if len(classes) != 2:
        raise ValueError(f"binary classification only: y holds {len(classes)} classes "
                         f"{classes[:10].tolist()}, estimation needs exactly two")
    if positive_label is None:
        return classes, classes[1]
    if positive_label not in classes:
        raise ValueError(f"positive_label={positive_label!r} is not a class of y; classes: {classes.tolist()}")
    return classes, positive_label


def to_binary(y, classes: np.ndarray, positive_label, name: str = "y_true") -> np.ndarray:
    """``y`` as 0/1 integers (1 = ``positive_label``); a label outside ``classes`` is a ValueError naming
    ``name``."""
    y = column_or_1d(y, warn=True)
    unknown = np.setdiff1d(np.unique(y), classes)
    if len(unknown):
        raise ValueError(f"{name} holds labels {unknown[:10].tolist()} that are not among the fitted classes "
                         f"{classes.tolist()}")
    return (y == positive_label).astype(np.int8)


def check_probabilities(proba) -> np.ndarray:
    """Positive-class probabilities as a 1-D float64 array; finite, within [0, 1], at least one row.

    A 2-D array is refused: pass the positive class's column, e.g. ``model.predict_proba(X)[:, 1]``.
    """
    proba = np.asarray(proba)
    if proba.ndim == 2:
        detail = ("binary classification only" if proba.shape[1] > 2
                  else "pass the positive class's column, e.g. model.predict_proba(X)[:, 1]")
        raise ValueError(f"expected a 1-D array of positive-class probabilities, got shape {proba.shape}: "
                         f"{detail}")
    proba = check_array(proba, ensure_2d=False, dtype=np.float64, input_name="proba")
    if proba.ndim != 1:
        raise ValueError(f"expected a 1-D array of positive-class probabilities, got shape {proba.shape}")
    if proba.min() < 0 or proba.max() > 1:
        raise ValueError(f"probabilities must lie in [0, 1]; got values in [{proba.min()}, {proba.max()}]")
    return proba


#: A row of class probabilities may miss summing to one by this much (float32 models, printed values).
ROW_SUM_TOLERANCE = 1e-3


def fitted_classes(y, classes=None) -> np.ndarray:
    """The classes a model's probability columns stand for: ``classes`` as given (their order is the columns'),
    else the sorted labels of ``y``. A label of ``y`` outside ``classes`` is a ValueError."""
    labels = np.unique(column_or_1d(y, warn=True))
    if classes is None:
        return labels
    classes = np.asarray(classes)
    if classes.ndim != 1 or len(np.unique(classes)) != len(classes):
        raise ValueError(f"classes must be a list of distinct labels, got {classes.tolist()}")
    unknown = np.setdiff1d(labels, classes)
    if len(unknown):
        raise ValueError(f"y_true holds labels {unknown[:10].tolist()} that are not among classes {classes.tolist()}")
    return classes


def to_class_index(y, classes: np.ndarray, name: str) -> np.ndarray:
    """Each label of ``y`` as its position in ``classes``; a label outside ``classes`` is a ValueError naming
    ``name`` (``y_true``, ``y_pred``)."""
    y = column_or_1d(y, warn=True)
    position = pd.Index(classes).get_indexer(y)
    if (position < 0).any():
        unknown = pd.unique(y[position < 0])[:10].tolist()
        raise ValueError(f"{name} holds classes {unknown} that are not among classes {classes.tolist()}")
    return position.astype(np.intp)


def check_probability_matrix(proba, n_classes: int) -> np.ndarray:
    """Class probabilities as an ``(n_samples, n_classes)`` float64 array: finite, within [0, 1], each row
    summing to one within :data:`ROW_SUM_TOLERANCE` (one-vs-rest scores or logits are refused)."""
    proba = check_array(proba, dtype=np.float64, input_name="proba")
    if proba.shape[1] != n_classes:
        raise ValueError(f"proba has {proba.shape[1]} columns for {n_classes} classes: pass predict_proba(X), one "
                         f"column per class, and classes= (the model's classes_) when a class has no labelled row")
    if proba.min() < 0 or proba.max() > 1:
        raise ValueError(f"probabilities must lie in [0, 1]; got values in [{proba.min()}, {proba.max()}]")
    gap = np.abs(proba.sum(axis=1) - 1)
    if gap.max() > ROW_SUM_TOLERANCE:
        worst = int(gap.argmax())
        raise ValueError(f"{int((gap > ROW_SUM_TOLERANCE).sum())} rows of proba do not sum to one (row {worst} "
                         f"sums to {proba[worst].sum():.6g}): pass predict_proba(X), not one-vs-rest scores")
    return proba
