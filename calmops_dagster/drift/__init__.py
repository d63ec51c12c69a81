"""The drift engine: univariate, multivariate and model drift, pure Python on numpy, scipy and frouros.
May import: numpy, scipy, pandas, frouros, lightgbm — never Dagster or another layer of the package.

>>> from calmops_dagster.drift import detect_drift, DriftConfig
>>> report = detect_drift(reference_df, current_df, config=DriftConfig())  # doctest: +SKIP
"""

from calmops_dagster.drift.config import DriftConfig
from calmops_dagster.drift.engine import detect_drift
from calmops_dagster.drift.errors import DriftError, DriftInputError, MissingFeatureError
from calmops_dagster.drift.report import DriftReport, MultivariateResult

__all__ = [
    "DriftConfig",
    "DriftError",
    "DriftInputError",
    "DriftReport",
    "MissingFeatureError",
    "MultivariateResult",
    "detect_drift",
]
