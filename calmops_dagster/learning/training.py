"""Fitting challengers: the evaluation split and the ``full`` retrain mode.

The block is split once (seeded; stratified for classifiers) into training rows and evaluation rows. The
challenger learns from the training rows only; challenger and champion are then scored on the same
evaluation rows, which is what makes the promotion decision fair.
"""

from __future__ import annotations

import itertools
import math
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


def split_sizes(n: int, eval_fraction: float) -> tuple[int, int]:
    """(training rows, evaluation rows) of :func:`evaluation_split` for ``n`` rows (scikit-learn's rounding:
    the evaluation share rounded up).

    >>> split_sizes(5, 0.3), split_sizes(1, 0.3)
    ((3, 2), (0, 1))
    """
    n_eval = math.ceil(n * eval_fraction)
    return n - n_eval, n_eval


def too_few_rows_to_train(frame: pd.DataFrame, spec: PipelineSpec, alone: bool = True) -> str | None:
    """Why the labelled rows ``frame`` cannot train a challenger, or ``None`` when they can.

    The rows must split into at least one training and one evaluation row; a classifier trained on the
    block's rows ``alone`` (a first champion, retrain mode ``full``) needs two classes among the training
    rows. The reason starts with "too few rows to train", the words the decision records.
    """
    fraction = spec.performance.eval_fraction
    n = len(frame)
    if min(split_sizes(n, fraction)) < 1:
        needed = next(m for m in itertools.count(1) if min(split_sizes(m, fraction)) >= 1)
        return (f"too few rows to train: {n} row{'' if n == 1 else 's'} cannot be split into training and "
                f"evaluation rows (eval_fraction {fraction}); at least {needed} are needed")
    if alone and spec.task == "classification":
        y_train = evaluation_split(frame, spec, spec.feature_columns(frame.columns)).y_train
        if y_train.nunique() < 2:
            return (f"too few rows to train: the {len(y_train)} training rows of the block's {n} hold one class "
                    f"({y_train.iloc[0]}); a classifier needs two")
    return None


def fit_full(spec: PipelineSpec, X: pd.DataFrame, y: pd.Series):
    """Retrain mode ``full``: a fresh model of the spec's class fitted on ``(X, y)``."""
    if spec.task == "classification" and y.nunique() < 2:
        raise ValueError(f"cannot train a classifier on a single class ({y.iloc[0]!r}) in the training rows")
    model = build_model(spec.model_spec, X)
    return model.fit(X, np.asarray(y))
