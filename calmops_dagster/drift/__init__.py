"""The drift engine: univariate, multivariate and model drift, pure Python on numpy, scipy and frouros.
May import: numpy, scipy, pandas, frouros, lightgbm — never Dagster or another layer of the package.

>>> from calmops_dagster.drift import detect_drift, DriftConfig
>>> report = detect_drift(reference_df, current_df, config=DriftConfig())  # doctest: +SKIP
"""

from calmops_dagster.drift.config import DriftConfig
from calmops_dagster.drift.errors import DriftError, DriftInputError, MissingFeatureError

#: Imported on first use (PEP 562): the engine pulls in scipy.stats and pandas (about a second), while
#: the pipeline spec, which every command and process reads, needs only :class:`DriftConfig`.
_LAZY = {"detect_drift": "calmops_dagster.drift.engine", "DriftReport": "calmops_dagster.drift.report",
         "MultivariateResult": "calmops_dagster.drift.report", "ReferenceProfile": "calmops_dagster.drift.profile"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DriftConfig",
    "DriftError",
    "DriftInputError",
    "DriftReport",
    "MissingFeatureError",
    "MultivariateResult",
    "ReferenceProfile",
    "detect_drift",
]
