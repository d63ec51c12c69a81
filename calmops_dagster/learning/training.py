"""Fitting challengers: the evaluation split and the ``full`` retrain mode.

The block is split once (seeded; stratified for classifiers) into training rows and evaluation rows. The
challenger learns from the training rows only; challenger and champion are then scored on the same
evaluation rows, which is what makes the promotion decision fair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from calmops_dagster.learning.model_factory import build_model
from calmops_dagster.spec import PipelineSpec


@dataclass
class Split:
    X_train: pd.DataFrame
    y_train: pd.Series
    X_eval: pd.DataFrame
    y_eval: pd.Series


def evaluation_split(frame: pd.DataFrame, spec: PipelineSpec, features: list[str]) -> Split:
    """Hold out ``performance.eval_fraction`` of the block, stratified when every class has 2+ rows."""
    y = frame[spec.target]
    stratify = None
    if spec.task == "classification":
        counts = y.value_counts()
        if counts.min() >= 2 and len(counts) > 1:
            stratify = y
    X_train, X_eval, y_train, y_eval = train_test_split(
        frame[features],
        y,
        test_size=spec.performance.eval_fraction,
        random_state=spec.seed,
        stratify=stratify,
    )
    return Split(X_train, y_train, X_eval, y_eval)


def fit_full(spec: PipelineSpec, X: pd.DataFrame, y: pd.Series):
    """Retrain mode ``full``: a fresh model of the spec's class fitted on ``(X, y)``."""
    if spec.task == "classification" and y.nunique() < 2:
        raise ValueError(f"cannot train a classifier on a single class ({y.iloc[0]!r}) in the training rows")
    model = build_model(spec.model_spec, X)
    return model.fit(X, np.asarray(y))
