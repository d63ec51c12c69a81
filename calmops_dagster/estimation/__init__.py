"""Label-free performance estimation: classifiers (confidence-based, as NannyML's CBPE; binary and
multiclass) and regressors (direct loss estimation, as NannyML's DLE).
May import: numpy, scipy, pandas, scikit-learn (and its threadpoolctl) — never Dagster or another module of
the package.

A classifier's probabilities, calibrated on reference data whose labels are known, give the expected
confusion matrix of a block whose labels have not arrived yet; labels drawn from them give the block's
sampling interval. A regressor's per-row loss, learnt from its features and predictions on the reference,
gives its expected error. See :class:`PerformanceEstimator` and :class:`RegressionPerformanceEstimator` for
what they can and cannot see.

>>> from calmops_dagster.estimation import PerformanceEstimator, RegressionPerformanceEstimator
>>> estimate = PerformanceEstimator(metric="roc_auc").fit(y_ref, proba_ref).estimate(proba_cur)  # doctest: +SKIP
>>> estimate = RegressionPerformanceEstimator("mae").fit(X_ref, y_ref, pred_ref).estimate(X, pred)  # doctest: +SKIP
"""

from calmops_dagster.estimation.calibration import (
    CALIBRATION_METHODS,
    Calibrator,
    ClassCalibrator,
    calibration_pvalue,
    expected_calibration_error,
)
from calmops_dagster.estimation.crossfit import cross_fitted_predictions, cross_fitted_probabilities
from calmops_dagster.estimation.estimator import Estimate, PerformanceEstimator
from calmops_dagster.estimation.metrics import METRICS, expected_metric, realized_metric
from calmops_dagster.estimation.multiclass_metrics import (
    expected_multiclass_metric,
    realized_multiclass_metric,
)
from calmops_dagster.estimation.regression import RegressionPerformanceEstimator
from calmops_dagster.estimation.regression_metrics import REGRESSION_METRICS, realized_regression_metric
from calmops_dagster.estimation.sampling import simulate_metric, simulate_multiclass_metric

__all__ = [
    "CALIBRATION_METHODS",
    "METRICS",
    "REGRESSION_METRICS",
    "Calibrator",
    "ClassCalibrator",
    "Estimate",
    "PerformanceEstimator",
    "RegressionPerformanceEstimator",
    "calibration_pvalue",
    "cross_fitted_predictions",
    "cross_fitted_probabilities",
    "expected_calibration_error",
    "expected_metric",
    "expected_multiclass_metric",
    "realized_metric",
    "realized_multiclass_metric",
    "realized_regression_metric",
    "simulate_metric",
    "simulate_multiclass_metric",
]
