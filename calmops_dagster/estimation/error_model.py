"""The error model of direct loss estimation: a regressor's expected per-row loss from the row's features and
its prediction.

A gradient-boosted tree model (scikit-learn's ``HistGradientBoostingRegressor``) with the Poisson loss: it
estimates a conditional mean, as the loss's mean is what the metric needs, and its log link keeps every
predicted loss positive and lets the error grow multiplicatively with the features. Text, boolean and
pandas category columns are encoded here (the most frequent categories each get a code, the rest share one;
a category first seen after ``fit`` counts as missing), so callers pass the model's features as they are.
It runs on one OpenMP thread: the model is small, and on a busy machine a thread pool waits on its threads
far longer than it gains from them.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import KFold
from sklearn.preprocessing import OrdinalEncoder
from threadpoolctl import ThreadpoolController

#: Codes per categorical column: the tree model's bins (255) less one.
MAX_CATEGORIES = 254


@functools.cache
def _thread_pools() -> ThreadpoolController:
    """The process's thread pools, found once: ``threadpool_limits`` scans the loaded libraries on every call,
    and this runs on every block's estimate."""
    return ThreadpoolController()


def as_frame(X, name: str = "X") -> pd.DataFrame:
    """``X`` as a DataFrame with string column names (a 2-D array's columns become ``x0``, ``x1``, ...)."""
    if isinstance(X, pd.DataFrame):
        return X.rename(columns=str)
    array = np.asarray(X)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows by features), got shape {array.shape}")
    return pd.DataFrame(array, columns=[f"x{i}" for i in range(array.shape[1])])


def is_categorical(column: pd.Series) -> bool:
    """Text, boolean and category columns are categorical; numeric ones are not."""
    return is_bool_dtype(column) or not is_numeric_dtype(column)


class ErrorModel:
    """Expected per-row loss of a regressor from its features and prediction, fitted on every reference row
    and, out of fold, on each fold's complement.

    Parameters
    ----------
    folds : int, default 5
        Folds of a shuffled :class:`~sklearn.model_selection.KFold` (seed 0) for the out-of-fold models.
    random_state : int, optional
        Seed of the tree models (they draw nothing with the settings used here; kept for reproducibility).

    Attributes
    ----------
    features_ : list of str
    categorical_ : list of str
        The columns encoded as categories.
    encoder_ : OrdinalEncoder or None
    model_ : HistGradientBoostingRegressor
        Fitted on every row.
    fold_models_ : list of HistGradientBoostingRegressor
        Fold k's model, fitted on the other folds.
    out_of_fold_ : ndarray
        Each row's loss as predicted by the model of its fold, which did not see it.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame({"size": rng.uniform(1, 3, 2000), "city": rng.choice(["a", "b"], 2000)})
    >>> scale = X["size"] * np.where(X["city"] == "a", 1.0, 3.0)
    >>> loss = np.abs(rng.normal(0, scale))                   # errors grow with size, three times in city b
    >>> model = ErrorModel(random_state=0).fit(X, np.zeros(2000), loss)
    >>> new = pd.DataFrame({"size": [2.0, 2.0], "city": ["a", "b"]})
    >>> expected = 2 * np.array([1.0, 3.0]) * np.sqrt(2 / np.pi)  # E|N(0, s)| = s * sqrt(2 / pi)
    >>> bool(np.all(np.abs(model.predict(new, np.zeros(2)) / expected - 1) < 0.2))
    True
    """

    def __init__(self, folds: int = 5, random_state=None):
        self.folds = folds
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y_pred: np.ndarray, loss: np.ndarray) -> ErrorModel:
        """Fit on the reference's features ``X``, the model's predictions and their per-row losses."""
        self.features_ = list(X.columns)
        self.categorical_ = [c for c in self.features_ if is_categorical(X[c])]
        self.encoder_ = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                                       encoded_missing_value=np.nan, max_categories=MAX_CATEGORIES,
                                       dtype=np.float64) if self.categorical_ else None
        if self.encoder_ is not None:
            self.encoder_.fit(self._text(X))
        inputs = self._inputs(X, y_pred)
        self.out_of_fold_ = np.empty(len(loss))
        self.fold_models_ = []
        with _thread_pools().limit(limits=1, user_api="openmp"):
            for train, held_out in KFold(self.folds, shuffle=True, random_state=0).split(inputs):
                self.fold_models_.append(self._tree_model().fit(inputs[train], loss[train]))
                self.out_of_fold_[held_out] = self.fold_models_[-1].predict(inputs[held_out])
            self.model_ = self._tree_model().fit(inputs, loss)
        return self

    def predict(self, X: pd.DataFrame, y_pred: np.ndarray) -> np.ndarray:
        """The expected loss of each row."""
        return self.predict_with_folds(X, y_pred)[0]

    def predict_with_folds(self, X: pd.DataFrame, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The expected loss of each row from the full model, and (folds, rows) from each fold's model."""
        inputs = self._inputs(X, y_pred)
        with _thread_pools().limit(limits=1, user_api="openmp"):
            return self.model_.predict(inputs), np.array([m.predict(inputs) for m in self.fold_models_])

    def _tree_model(self) -> HistGradientBoostingRegressor:
        categorical = np.arange(len(self.features_) + 1) < len(self.categorical_)  # codes come first
        return HistGradientBoostingRegressor(
            loss="poisson", learning_rate=0.1, max_iter=100, max_leaf_nodes=15, min_samples_leaf=20,
            l2_regularization=1.0, early_stopping=False, categorical_features=categorical,
            random_state=self.random_state)

    def _text(self, X: pd.DataFrame) -> pd.DataFrame:
        """The categorical columns as text (missing values stay missing), one type per column."""
        text = X[self.categorical_].astype(object)
        return text.where(text.isna(), text.astype(str))

    def _inputs(self, X: pd.DataFrame, y_pred: np.ndarray) -> np.ndarray:
        """Categorical codes first, then the numeric features and the prediction, as one float matrix."""
        numeric = [c for c in self.features_ if c not in self.categorical_]
        parts = [self.encoder_.transform(self._text(X))] if self.encoder_ is not None else []
        parts += [X[numeric].to_numpy(dtype=np.float64), np.asarray(y_pred, dtype=np.float64).reshape(-1, 1)]
        return np.hstack(parts)
