"""Out-of-fold probabilities: calibration data for a model when only its training rows have labels."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from calmops_dagster.estimation.validation import binary_classes


def cross_fitted_probabilities(estimator, X, y, cv: int = 5, positive_label=None, random_state=None,
                               n_jobs=None) -> np.ndarray:
    """Positive-class probabilities of every row from a clone of ``estimator`` fitted on the other folds.

    A model's probabilities on its own training rows are over-confident; fit a
    :class:`~calmops_dagster.estimation.estimator.PerformanceEstimator` on these instead when no held-out
    reference exists. They approximate the deployed model, which is fitted on all rows and so a little
    surer than the fold models: a held-out reference is better when there is one.

    Parameters
    ----------
    estimator : scikit-learn classifier with ``predict_proba``
        Not fitted itself: each fold fits a :func:`sklearn.base.clone`.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
        Two classes, of any type.
    cv : int, default 5
        Folds of a shuffled :class:`~sklearn.model_selection.StratifiedKFold`.
    positive_label : object, optional
        Default: the larger of the two sorted labels.
    random_state : int, optional
        Seed of the fold shuffle.
    n_jobs : int, optional
        Folds fitted in parallel (:func:`~sklearn.model_selection.cross_val_predict`).

    Returns
    -------
    ndarray of shape (n_samples,)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(600, 2))
    >>> y = np.where(X[:, 0] + rng.normal(size=600) > 0, "yes", "no")
    >>> p = cross_fitted_probabilities(LogisticRegression(), X, y, random_state=0)
    >>> p.shape, bool(p[y == "yes"].mean() > p[y == "no"].mean())
    ((600,), True)
    """
    classes, positive = binary_classes(y, positive_label)
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
    proba = cross_val_predict(estimator, X, y, cv=folds, method="predict_proba", n_jobs=n_jobs)
    return proba[:, int(np.searchsorted(classes, positive))]
