"""The six retrain modes: how a challenger is made from the block (and the champion, and the past).

Each mode is a function ``(spec, X, y, champion, history) -> Trained``: ``X, y`` are the block's training
rows, ``champion`` the fitted champion (``None`` before the first one), ``history`` the rows of earlier
blocks in block order (features and target). A mode that needs a champion trains ``full`` when there is
none yet, and says so in ``note``.

- ``full``: a fresh model on the block's training rows.
- ``incremental``: a copy of the champion continues learning (``partial_fit``; river models through
  :mod:`calmops_dagster.learning.river_models`). The champion's fitted encoder is kept: categories unseen at its first fit are encoded
  as all-zeros (``handle_unknown="ignore"``).
- ``window``: a fresh model on the last ``retrain.window_blocks`` blocks (or ``window_rows`` rows).
- ``stacking``: a logistic / linear meta-model over the champion's and a new model's outputs, the new model
  fitted on 70% of the training rows and the meta-model on the other 30%.
- ``replay_mix``: a fresh model on the block plus a stratified sample of earlier rows, so that replayed rows
  are ``retrain.replay_fraction`` of the training set.
- ``recalibration``: the champion, frozen, with probabilities recalibrated on the block (classifiers).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted

from calmops_dagster.learning.training import fit_full
from calmops_dagster.spec import PipelineSpec


@dataclass
class Trained:
    model: object
    rows: pd.DataFrame  # the rows it learned from (features + target): its drift reference as champion
    note: str


def _rows(X: pd.DataFrame, y: pd.Series, target: str) -> pd.DataFrame:
    return X.assign(**{target: np.asarray(y)})


def _stratify(y: pd.Series):
    counts = y.value_counts()
    return y if len(counts) > 1 and counts.min() >= 2 else None


def full(spec, X, y, champion, history) -> Trained:
    return Trained(fit_full(spec, X, y), _rows(X, y, spec.target), "fresh model on the block")


def incremental(spec, X, y, champion, history) -> Trained:
    if champion is None:
        return Trained(fit_full(spec, X, y), _rows(X, y, spec.target), "no champion yet: trained full")
    model = copy.deepcopy(champion)
    learner = model.named_steps["model"]
    unknown = set(np.unique(y)) - set(getattr(learner, "classes_", np.unique(y)))
    if unknown:
        raise ValueError(f"incremental training cannot add classes {sorted(unknown)} to the champion")
    learner.partial_fit(model[:-1].transform(X), np.asarray(y))
    return Trained(model, _rows(X, y, spec.target), "champion updated with partial_fit on the block")


def window_rows(spec, X, y, history) -> tuple[pd.DataFrame, str]:
    """``window``'s rows: the earlier blocks' and the block's, or the last ``retrain.window_rows`` of them."""
    current = _rows(X, y, spec.target)
    rows = pd.concat([history[current.columns], current], ignore_index=True) if len(history) else current
    if spec.retrain.window_rows:
        rows = rows.tail(spec.retrain.window_rows)
    return rows, f"the last {len(rows)} rows"


def replay_mix_rows(spec, X, y, history) -> tuple[pd.DataFrame, str]:
    """``replay_mix``'s rows: the block's plus a stratified replay of earlier rows, ``replay_fraction`` of all."""
    current = _rows(X, y, spec.target)
    if not len(history):
        return current, "the block (no earlier blocks to replay)"
    share = spec.retrain.replay_fraction
    wanted = min(len(history), round(share * len(current) / (1 - share)))
    if wanted < len(history):
        stratify = _stratify(history[spec.target]) if spec.task == "classification" else None
        replay, _ = train_test_split(history, train_size=wanted, random_state=spec.seed, stratify=stratify)
    else:
        replay = history
    rows = pd.concat([current, replay[current.columns]], ignore_index=True)
    return rows, f"the block plus {len(replay)} replayed rows ({len(replay) / len(rows):.0%})"


def window(spec, X, y, champion, history) -> Trained:
    rows, what = window_rows(spec, X, y, history)
    return Trained(fit_full(spec, rows[X.columns], rows[spec.target]), rows, f"fresh model on {what}")


def replay_mix(spec, X, y, champion, history) -> Trained:
    rows, what = replay_mix_rows(spec, X, y, history)
    return Trained(fit_full(spec, rows[X.columns], rows[spec.target]), rows, f"fresh model on {what}")


class StackedModel(BaseEstimator):
    """A meta-model over the outputs of already fitted base models (the champion and a new model).

    Classifiers stack class probabilities into a logistic regression; regressors stack predictions into a
    linear regression. ``fit(X, y)`` fits only the meta-model.
    """

    def __init__(self, base_models=(), task="classification"):
        self.base_models = base_models
        self.task = task

    def _base_outputs(self, X) -> np.ndarray:
        if self.task == "classification":
            return np.hstack([model.predict_proba(X) for model in self.base_models])
        return np.column_stack([model.predict(X) for model in self.base_models])

    def fit(self, X, y):
        if self.task == "classification":
            classes = [list(model.classes_) for model in self.base_models]
            if any(c != classes[0] for c in classes):
                raise ValueError(f"stacked models disagree on the classes: {classes}")
            self.meta_ = LogisticRegression(max_iter=1000).fit(self._base_outputs(X), y)
            self.classes_ = self.meta_.classes_
        else:
            self.meta_ = LinearRegression().fit(self._base_outputs(X), y)
        return self

    def predict(self, X):
        check_is_fitted(self, "meta_")
        return self.meta_.predict(self._base_outputs(X))

    def predict_proba(self, X):
        check_is_fitted(self, "meta_")
        return self.meta_.predict_proba(self._base_outputs(X))


def stacking(spec, X, y, champion, history) -> Trained:
    if champion is None:
        return Trained(fit_full(spec, X, y), _rows(X, y, spec.target), "no champion yet: trained full")
    stratify = _stratify(y) if spec.task == "classification" else None
    X_new, X_meta, y_new, y_meta = train_test_split(X, y, test_size=0.3, random_state=spec.seed,
                                                    stratify=stratify)
    new_model = fit_full(spec, X_new, y_new)
    stacked = StackedModel(base_models=[champion, new_model], task=spec.task).fit(X_meta, np.asarray(y_meta))
    return Trained(stacked, _rows(X, y, spec.target), "meta-model over the champion and a new model")


def recalibration(spec, X, y, champion, history) -> Trained:
    if champion is None:
        return Trained(fit_full(spec, X, y), _rows(X, y, spec.target), "no champion yet: trained full")
    calibrated = CalibratedClassifierCV(FrozenEstimator(champion), method=spec.retrain.calibration)
    calibrated.fit(X, np.asarray(y))
    return Trained(calibrated, _rows(X, y, spec.target),
                   f"champion recalibrated on the block ({spec.retrain.calibration})")


RETRAIN_MODES = {
    "full": full,
    "incremental": incremental,
    "window": window,
    "stacking": stacking,
    "replay_mix": replay_mix,
    "recalibration": recalibration,
}


def history_needed(spec: PipelineSpec) -> tuple[bool, int | None]:
    """Whether the spec's mode learns from earlier blocks, and how many of them (``None``: all)."""
    if spec.retrain_mode == "replay_mix" or (spec.retrain_mode == "window" and spec.retrain.window_rows):
        return True, None
    if spec.retrain_mode == "window":
        return True, spec.retrain.window_blocks - 1
    return False, 0


def selected_rows(spec: PipelineSpec, X: pd.DataFrame, y: pd.Series,
                  history: pd.DataFrame | None = None) -> tuple[pd.DataFrame, str]:
    """The rows (features and target) the spec's mode learns from, and what they are: ``window`` and
    ``replay_mix`` add earlier blocks' rows, every other mode takes the block's training rows. A custom
    function (``custom_functions``) learns from these."""
    history = history if history is not None else pd.DataFrame()
    if spec.retrain_mode == "window":
        return window_rows(spec, X, y, history)
    if spec.retrain_mode == "replay_mix":
        return replay_mix_rows(spec, X, y, history)
    return _rows(X, y, spec.target), "the block's training rows"


def train_challenger(spec: PipelineSpec, X: pd.DataFrame, y: pd.Series, champion=None,
                     history: pd.DataFrame | None = None) -> Trained:
    """Train a challenger with the spec's ``retrain_mode``."""
    mode = RETRAIN_MODES.get(spec.retrain_mode)
    if mode is None:
        raise ValueError(f"unknown retrain_mode {spec.retrain_mode!r}; valid: {sorted(RETRAIN_MODES)}")
    history = history if history is not None else pd.DataFrame()
    return mode(spec, X, y, champion, history)
