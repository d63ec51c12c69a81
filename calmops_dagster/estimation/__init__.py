"""Label-free performance estimation (confidence-based, as NannyML's CBPE) for binary classifiers.
May import: numpy, scipy, pandas, scikit-learn — never Dagster or another module of the package.

A model's probabilities, calibrated on reference data whose labels are known, give the expected confusion
matrix of a block whose labels have not arrived yet; labels drawn from them give the block's sampling
interval. See :class:`PerformanceEstimator` for what it can and cannot see.

>>> from calmops_dagster.estimation import PerformanceEstimator
>>> estimate = PerformanceEstimator(metric="roc_auc").fit(y_ref, proba_ref).estimate(proba_cur)  # doctest: +SKIP
"""

from calmops_dagster.estimation.calibration import (
    CALIBRATION_METHODS,
    Calibrator,
    calibration_pvalue,
    expected_calibration_error,
)
from calmops_dagster.estimation.crossfit import cross_fitted_probabilities
from calmops_dagster.estimation.estimator import Estimate, PerformanceEstimator
from calmops_dagster.estimation.metrics import METRICS, expected_metric, realized_metric
from calmops_dagster.estimation.sampling import simulate_metric

__all__ = [
    "CALIBRATION_METHODS",
    "METRICS",
    "Calibrator",
    "Estimate",
    "PerformanceEstimator",
    "calibration_pvalue",
    "cross_fitted_probabilities",
    "expected_calibration_error",
    "expected_metric",
    "realized_metric",
    "simulate_metric",
]
