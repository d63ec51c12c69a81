"""Build an untrained model from a spec's ``model_spec``.

The estimator named by ``{module, class, params}`` is wrapped in a scikit-learn ``Pipeline`` whose first
step one-hot encodes categorical features (text, category, bool), so any sklearn-style estimator can be
trained on mixed tables. The spec loader has already refused modules outside the trusted packages.
"""

from __future__ import annotations

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from calmops_dagster.spec import ModelSpec, column_kinds


def build_model(model_spec: ModelSpec, X: pd.DataFrame) -> Pipeline:
    """A fresh, unfitted ``Pipeline(encode, model)`` for the columns of ``X``."""
    kinds = column_kinds(X, X.columns)
    categorical = [c for c, kind in kinds.items() if kind == "categorical"]
    encode = ColumnTransformer(
        [("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical)],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    return Pipeline([("encode", encode), ("model", model_spec.make_estimator())])
