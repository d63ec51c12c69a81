"""Your own training code, as tutorial 6 hands it to a pipeline (``custom_functions`` in its spec).

``train`` adds a feature (the product of x1 and x2) inside a scikit-learn Pipeline, so the served model
computes it too; ``fallback`` returns a simpler model when training fails. Both are plain functions with the
signatures the pipeline calls them with; ``context`` says which pipeline, block and rows
(``calmops_dagster.learning.training_context.TrainingContext``). The models are built from scikit-learn
parts only, so the model store keeps them as skops files (a model holding your own classes or functions
would be a pickle, which needs ``trust_pickle: true``).
"""

import os

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures


def _features() -> ColumnTransformer:
    """One-hot ``segment``; x1, x2 and their product x1*x2 (the added feature); the other columns as they are."""
    return ColumnTransformer(
        [("segment", OneHotEncoder(handle_unknown="ignore"), ["segment"]),
         ("x1_x2", PolynomialFeatures(degree=2, interaction_only=True, include_bias=False), ["x1", "x2"])],
        remainder="passthrough")


def train(X, y, context):
    """A forest over the features plus x1*x2."""
    if os.environ.get("TUTORIAL_BREAK_TRAINING"):  # the tutorial's stand-in for a real outage
        raise ConnectionError("feature store unreachable")
    context.logger.info(f"my_training.train: block {context.block}, {len(X)} rows from blocks "
                        f"{list(context.source_blocks)}")
    forest = RandomForestClassifier(n_estimators=30, random_state=context.random_state)
    return Pipeline([("features", _features()), ("model", forest)]).fit(X, y)


def fallback(error, X, y, context):
    """A logistic regression on the same features: simpler, and enough to keep the pipeline learning."""
    context.logger.warning(f"my_training.fallback: train failed ({error!r}); fitting a logistic regression")
    return Pipeline([("features", _features()), ("model", LogisticRegression(max_iter=1000))]).fit(X, y)
