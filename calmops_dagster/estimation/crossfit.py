"""Out-of-fold probabilities and predictions: calibration data for a classifier, and error-model data for a
regressor, when only the model's training rows have labels."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

from calmops_dagster.estimation.validation import binary_classes


def cross_fitted_probabilities(estimator, X, y, cv: int = 5, positive_label=None, random_state=None,
                               n_jobs=None) -> np.ndarray:
    """Probabilities of every row from a clone of ``estimator`` fitted on the other folds: the positive
    class's for two classes, every class's (columns in sorted label order, as ``classes_``) for more.

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
        Two or more classes, of any type.
    cv : int, default 5
        Folds of a shuffled :class:`~sklearn.model_selection.StratifiedKFold`.
    positive_label : object, optional
        Two classes: default the larger of the two sorted labels. Not for more classes.
    random_state : int, optional
        Seed of the fold shuffle.
    n_jobs : int, optional
        Folds fitted in parallel (:func:`~sklearn.model_selection.cross_val_predict`).

    Returns
    -------
    ndarray of shape (n_samples,) or (n_samples, n_classes)

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
    multiclass = len(np.unique(y)) > 2
    if multiclass and positive_label is not None:
        raise ValueError(f"positive_label is for two classes; y holds {len(np.unique(y))}")
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
    if multiclass:
        return cross_val_predict(estimator, X, y, cv=folds, method="predict_proba", n_jobs=n_jobs)
    classes, positive = binary_classes(y, positive_label)
    proba = cross_val_predict(estimator, X, y, cv=folds, method="predict_proba", n_jobs=n_jobs)
    return proba[:, int(np.searchsorted(classes, positive))]


def cross_fitted_predictions(estimator, X, y, cv: int = 5, random_state=None, n_jobs=None) -> np.ndarray:
    """Predictions of every row from a clone of the regressor ``estimator`` fitted on the other folds.

    A model's errors on its own training rows are too small; fit a
    :class:`~calmops_dagster.estimation.regression.RegressionPerformanceEstimator` on these predictions
    when no held-out reference exists (they approximate the deployed model, fitted on all rows).

    Parameters
    ----------
    estimator : scikit-learn regressor
        Not fitted itself: each fold fits a :func:`sklearn.base.clone`.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    cv : int, default 5
        Folds of a shuffled :class:`~sklearn.model_selection.KFold`.
    random_state : int, optional
        Seed of the fold shuffle.
    n_jobs : int, optional

    Returns
    -------
    ndarray of shape (n_samples,)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 2))
    >>> y = X @ [2.0, -1.0] + rng.normal(size=300)
    >>> pred = cross_fitted_predictions(LinearRegression(), X, y, random_state=0)
    >>> pred.shape, bool(np.abs(y - pred).mean() > np.abs(y - LinearRegression().fit(X, y).predict(X)).mean())
    ((300,), True)
    """
    folds = KFold(n_splits=cv, shuffle=True, random_state=random_state)
    return np.asarray(cross_val_predict(estimator, X, y, cv=folds, n_jobs=n_jobs), dtype=np.float64)
