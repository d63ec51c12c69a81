"""PerformanceEstimator: a binary classifier's metric on a block whose labels have not arrived, with its interval."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from calmops_dagster.estimation.calibration import (
    Calibrator,
    calibration_pvalue,
    check_calibration_method,
    cross_calibrated,
    expected_calibration_error,
)
from calmops_dagster.estimation.metrics import check_metric, expected_metric, realized_metric
from calmops_dagster.estimation.sampling import simulate_metric
from calmops_dagster.estimation.support import ProbabilitySupport
from calmops_dagster.estimation.validation import binary_classes, check_probabilities, to_binary

#: ``raw_miscalibrated_`` is set when the raw probabilities fail the calibration test at this level.
MISCALIBRATION_ALPHA = 0.01
#: Folds of the out-of-fold check of the calibration map.
CALIBRATION_FOLDS = 5


@dataclass(frozen=True)
class Estimate:
    """One block's estimated metric.

    Attributes
    ----------
    metric : str
    value : float
        The point estimate: the metric of the expected confusion matrix (ROC AUC: of the expected ROC curve).
    lower, upper : float
        The ``confidence`` interval of the block's realized metric: quantiles of the metric over label
        vectors drawn from the calibrated probabilities (the block's sampling error).
    std : float
        Standard deviation of those draws: the sampling error of the block's realized metric.
    mc_mean : float
        Mean of the draws; differs from ``value`` by the (small) bias of a ratio of sums.
    n : int
        Rows in the block.
    confidence : float
    unsupported_share : float
        Share of the block's probabilities outside the reference range or in sparse reference bins.
    warnings : tuple of str
        Why this estimate may be off by more than its interval; empty when nothing was seen.
    """

    metric: str
    value: float
    lower: float
    upper: float
    std: float
    mc_mean: float
    n: int
    confidence: float
    unsupported_share: float
    warnings: tuple[str, ...] = ()


class PerformanceEstimator(BaseEstimator):
    """Estimate a binary classifier's metric on data without labels, from its calibrated probabilities.

    Confidence-based performance estimation (CBPE, as in NannyML): a calibration map fitted on labelled
    reference data turns the model's probabilities into calibrated ones ``c``; on a block without labels,
    the expected confusion matrix is TP = sum of ``c`` over predicted positives, FP = sum of ``1 - c`` over
    them, FN and TN likewise over predicted negatives, and the metric is computed from it (ROC AUC: from
    the expected ROC curve). The interval is the block's sampling error: the realized metric over
    ``n_draws`` label vectors ``y_i ~ Bernoulli(c_i)``. It holds the realized value ``confidence`` of the
    time when the calibrated probabilities are right. It leaves out the error of the calibration map
    itself: with a reference only a few times larger than a block the interval is somewhat too narrow.

    **What it sees.** A change of the feature distribution with P(y | x) unchanged (covariate shift): the
    block's probabilities move and the estimate follows, as long as P(y | probability) stays what it was on
    the reference, which holds when the model's probability carries what x says about y (a misspecified
    model under covariate shift can break it). **What it cannot see.** A change of P(y | x) with the
    probabilities unchanged (concept drift): the calibration map of the reference no longer holds and the
    estimate stays where it was. Two checks show where it is on thin ice:

    * at ``fit``, how calibrated the raw model is on the reference (``raw_calibration_error_``,
      ``raw_miscalibrated_``): a model badly calibrated on data it did not train on has met a different
      P(y | x) (or over-fits), which may happen again after the reference; and how well the map carries
      to rows it was not fitted on (``calibration_error_``, out of fold);
    * at ``estimate``, a warning in :attr:`Estimate.warnings` when the block's raw probabilities fall where
      the reference gave the map little evidence (outside its range, or in sparse bins).

    Binary classification only: ``y`` with exactly two labels, of any type. More classes are refused:
    one-vs-rest calibrated probabilities do not sum to one, so their expected confusion matrix is no honest
    estimate.

    Parameters
    ----------
    metric : {"accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc"}, default "accuracy"
    threshold : float, default 0.5
        The model predicts the positive class when its probability is ``>= threshold``.
    calibration : {"isotonic", "sigmoid"}, default "isotonic"
        The calibration map (see :class:`~calmops_dagster.estimation.calibration.Calibrator`).
    confidence_level : float, default 0.95
        Coverage of the interval.
    positive_label : object, optional
        The positive class; by default the larger of the two sorted labels (1 of 0/1, ``True``, ``"yes"``).
    n_draws : int, default 1000
        Label vectors drawn for the interval.
    random_state : None, int or numpy.random.Generator
        Seed of the draws; an int gives the same draws at every ``estimate`` call.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        The two labels, sorted.
    positive_label_ : object
        The class whose probabilities are passed.
    calibrator_ : Calibrator
        The calibration map fitted on the reference.
    support_ : ProbabilitySupport
        Range and density of the reference's raw probabilities.
    reference_value_ : float
        The realized metric on the reference (what "carry the reference score forward" would estimate).
    calibration_error_ : float
        Expected calibration error (10 equal-count bins) of the reference's calibrated probabilities, each
        fold mapped by a calibrator fitted on the other ``CALIBRATION_FOLDS - 1`` folds.
    raw_calibration_error_ : float
        Expected calibration error of the raw probabilities on the reference.
    raw_calibration_pvalue_ : float
        P-value that the raw probabilities are calibrated on the reference
        (:func:`~calmops_dagster.estimation.calibration.calibration_pvalue`).
    raw_miscalibrated_ : bool
        ``raw_calibration_pvalue_ < MISCALIBRATION_ALPHA``.
    n_reference_ : int

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> proba_ref = rng.uniform(size=5000)
    >>> y_ref = rng.uniform(size=5000) < proba_ref            # a calibrated model
    >>> est = PerformanceEstimator(metric="accuracy", random_state=0).fit(y_ref, proba_ref)
    >>> round(est.reference_value_, 2)
    0.75
    >>> e = est.estimate(rng.beta(4, 1, size=2000))            # a block where the model is surer
    >>> round(e.value, 2), bool(e.lower < e.value < e.upper), e.warnings
    (0.81, True, ())
    """

    def __init__(self, metric="accuracy", threshold=0.5, calibration="isotonic", confidence_level=0.95,
                 positive_label=None, n_draws=1000, random_state=None):
        self.metric = metric
        self.threshold = threshold
        self.calibration = calibration
        self.confidence_level = confidence_level
        self.positive_label = positive_label
        self.n_draws = n_draws
        self.random_state = random_state

    def _check_params(self) -> None:
        check_metric(self.metric)
        check_calibration_method(self.calibration)
        if not isinstance(self.threshold, numbers.Real) or not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be a number in [0, 1], got {self.threshold!r}")
        if not isinstance(self.confidence_level, numbers.Real) or not 0 < self.confidence_level < 1:
            raise ValueError(f"confidence_level must be a number in (0, 1), got {self.confidence_level!r}")
        if not isinstance(self.n_draws, numbers.Integral) or self.n_draws < 100:
            raise ValueError(f"n_draws must be an integer >= 100, got {self.n_draws!r}")

    def fit(self, y_true, proba) -> PerformanceEstimator:
        """Fit the calibration map and the reference checks on labelled reference data.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
            The reference's labels (two classes). Rows the model did not train on: see
            :func:`~calmops_dagster.estimation.crossfit.cross_fitted_probabilities` when there are none.
        proba : array-like of shape (n_samples,)
            The model's probabilities of ``positive_label`` on those rows.

        Returns
        -------
        self
        """
        self._check_params()
        proba = check_probabilities(proba)
        self.classes_, self.positive_label_ = binary_classes(y_true, self.positive_label)
        y = to_binary(y_true, self.classes_, self.positive_label_)
        if len(y) != len(proba):
            raise ValueError(f"y_true has {len(y)} rows and proba {len(proba)}")
        self.calibrator_ = Calibrator(self.calibration).fit(proba, y)
        self.support_ = ProbabilitySupport.from_reference(proba)
        self.reference_value_ = float(realized_metric(self.metric, y, proba, self.threshold))
        folds = min(CALIBRATION_FOLDS, int(np.bincount(y).min()))
        self.calibration_error_ = (
            expected_calibration_error(y, cross_calibrated(proba, y, self.calibration, folds, 0))
            if folds >= 2 else float("nan"))
        self.raw_calibration_error_ = expected_calibration_error(y, proba)
        self.raw_calibration_pvalue_ = calibration_pvalue(y, proba)
        self.raw_miscalibrated_ = self.raw_calibration_pvalue_ < MISCALIBRATION_ALPHA
        self.n_reference_ = len(y)
        return self

    def estimate(self, proba) -> Estimate:
        """Estimate the metric on a block from the model's probabilities alone.

        Parameters
        ----------
        proba : array-like of shape (n_samples,)
            The model's probabilities of ``positive_label_`` on the block's rows.

        Returns
        -------
        Estimate
        """
        check_is_fitted(self)
        proba = check_probabilities(proba)
        calibrated = self.calibrator_.predict(proba)
        value = expected_metric(self.metric, calibrated, proba, self.threshold)
        draws = simulate_metric(self.metric, calibrated, proba, self.threshold, self.n_draws, self.random_state)
        outside, sparse = self.support_.unsupported_shares(proba)
        warnings = self.support_.warnings(outside, sparse)
        valid = draws[~np.isnan(draws)]
        if len(valid) < len(draws):
            warnings.append(f"{len(draws) - len(valid)} of {len(draws)} label draws hold one class only "
                            f"(ROC AUC undefined): the interval is over the rest, NaN when none is left")
        tail = (1 - self.confidence_level) / 2
        lower, upper = np.quantile(valid, [tail, 1 - tail]) if len(valid) else (np.nan, np.nan)
        std, mc_mean = (valid.std(), valid.mean()) if len(valid) else (np.nan, np.nan)
        return Estimate(metric=self.metric, value=value, lower=float(lower), upper=float(upper),
                        std=float(std), mc_mean=float(mc_mean), n=len(proba), confidence=self.confidence_level,
                        unsupported_share=outside + sparse, warnings=tuple(warnings))

    def realized(self, y_true, proba) -> float:
        """The metric realized on labels that have arrived (the classes fitted, ``threshold`` as set)."""
        check_is_fitted(self)
        proba = check_probabilities(proba)
        y = to_binary(y_true, self.classes_, self.positive_label_)
        return float(realized_metric(self.metric, y, proba, self.threshold))
