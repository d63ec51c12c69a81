"""River models as scikit-learn estimators, so a spec may name one and ``incremental`` can continue it.

``river.compat`` (river 0.23) calls ``check_X_y(force_all_finite=...)``, which scikit-learn 1.9 removed, so
it cannot fit at all here; these thin adapters replace it. ``fit`` starts from a fresh clone of the river
model, ``partial_fit`` continues it with ``learn_one`` row by row, in row order (the online semantics river models are
built for; ``learn_many`` would be a single mini-batch step per block for linear models). Predictions use
``predict_proba_many``/``predict_many`` when the model has them. Binary river classifiers learn ``bool`` targets; the adapter
maps them to the block's two labels (``classes_``), so any two labels work.

>>> import numpy as np
>>> from river.linear_model import LogisticRegression
>>> X = np.array([[0.0], [1.0], [2.0], [3.0]] * 25)
>>> y = np.array(["no", "no", "yes", "yes"] * 25)
>>> model = wrap_river(LogisticRegression()).fit(X, y)
>>> model.predict(np.array([[0.0], [3.0]])).tolist()
['no', 'yes']
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted


def wrap_river(model):
    """The scikit-learn adapter for a river classifier or regressor."""
    from river import base

    if isinstance(model, base.Classifier):
        return RiverClassifier(model)
    if isinstance(model, base.Regressor):
        return RiverRegressor(model)
    raise ValueError(f"{type(model).__name__} is neither a river Classifier nor a river Regressor")


class _RiverEstimator(BaseEstimator):
    def __init__(self, river_model=None):
        self.river_model = river_model

    def _frame(self, X) -> pd.DataFrame:
        X = np.asarray(X, dtype=float)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-d array of features, got shape {X.shape}")
        if hasattr(self, "n_features_in_") and X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the model was trained on {self.n_features_in_}")
        return pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])

    def _learn(self, frame: pd.DataFrame, y) -> None:
        for row, target in zip(frame.to_dict("records"), np.asarray(y).tolist(), strict=True):
            self.model_.learn_one(row, target)

    def fit(self, X, y):
        for attribute in ("model_", "classes_", "n_features_in_"):
            self.__dict__.pop(attribute, None)
        return self.partial_fit(X, y)


class RiverClassifier(ClassifierMixin, _RiverEstimator):
    """A river classifier behind ``fit``/``partial_fit``/``predict``/``predict_proba``."""

    def partial_fit(self, X, y, classes=None):
        frame, y = self._frame(X), np.asarray(y)
        if not hasattr(self, "model_"):
            self.model_ = self.river_model.clone()
            self.classes_ = np.unique(y if classes is None else classes)
            self.n_features_in_ = frame.shape[1]
            self._binary = not self.model_._multiclass
            if self._binary and len(self.classes_) != 2:
                raise ValueError(f"{type(self.river_model).__name__} is a binary classifier; "
                                 f"got classes {self.classes_.tolist()}")
        unknown = sorted(set(y.tolist()) - set(self.classes_.tolist()))
        if unknown:
            raise ValueError(f"labels {unknown} were not among the classes {self.classes_.tolist()} of the first fit")
        self._learn(frame, y == self.classes_[1] if self._binary else y)
        return self

    def predict_proba(self, X):
        check_is_fitted(self, "model_")
        frame = self._frame(X)
        if hasattr(self.model_, "predict_proba_many"):
            proba = self.model_.predict_proba_many(frame)
        else:
            proba = pd.DataFrame([self.model_.predict_proba_one(row) for row in frame.to_dict("records")])
        keys = [False, True] if self._binary else list(self.classes_)
        proba = proba.reindex(columns=keys, fill_value=0.0).fillna(0.0).to_numpy(dtype=float)
        total = proba.sum(axis=1, keepdims=True)
        return np.divide(proba, total, out=np.full_like(proba, 1 / len(keys)), where=total > 0)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class RiverRegressor(RegressorMixin, _RiverEstimator):
    """A river regressor behind ``fit``/``partial_fit``/``predict``."""

    def partial_fit(self, X, y):
        frame = self._frame(X)
        if not hasattr(self, "model_"):
            self.model_ = self.river_model.clone()
            self.n_features_in_ = frame.shape[1]
        self._learn(frame, np.asarray(y, dtype=float))
        return self

    def predict(self, X):
        check_is_fitted(self, "model_")
        frame = self._frame(X)
        if hasattr(self.model_, "predict_many"):
            return np.asarray(self.model_.predict_many(frame), dtype=float)
        return np.array([self.model_.predict_one(row) for row in frame.to_dict("records")], dtype=float)
