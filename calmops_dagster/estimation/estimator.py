"""PerformanceEstimator: a classifier's metric on a block whose labels have not arrived, with its interval."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from calmops_dagster.estimation.calibration import (
    calibration_pvalue,
    check_calibration_method,
    cross_calibrated,
    expected_calibration_error,
    make_calibrator,
)
from calmops_dagster.estimation.metrics import check_metric, expected_metric, realized_metric
from calmops_dagster.estimation.multiclass_metrics import (
    expected_multiclass_metric,
    realized_multiclass_metric,
)
from calmops_dagster.estimation.sampling import simulate_metric, simulate_multiclass_metric
from calmops_dagster.estimation.support import ProbabilitySupport, worst_class_support
from calmops_dagster.estimation.validation import (
    binary_classes,
    check_probabilities,
    check_probability_matrix,
    fitted_classes,
    to_binary,
    to_class_index,
)

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
    """Estimate a classifier's metric on data without labels, from its calibrated probabilities.

    Confidence-based performance estimation (CBPE, as in NannyML): a calibration map fitted on labelled
    reference data turns the model's probabilities into calibrated ones ``c``; on a block without labels,
    the expected confusion matrix is TP = sum of ``c`` over predicted positives, FP = sum of ``1 - c`` over
    them, FN and TN likewise over predicted negatives, and the metric is computed from it (ROC AUC: from
    the expected ROC curve). The interval is the block's sampling error: the realized metric over
    ``n_draws`` label vectors ``y_i ~ Bernoulli(c_i)``. It holds the realized value ``confidence`` of the
    time when the calibrated probabilities are right. It leaves out the error of the calibration map
    itself: with a reference only a few times larger than a block the interval is somewhat too narrow.

    **Binary or multiclass.** ``y`` with two labels and ``proba`` the positive class's probabilities (1-D):
    the model's predictions are ``y_pred`` when given (the labels ``predict`` returned: a model with its own
    threshold or rule), else the positive class where ``proba >= threshold``. ``y`` with more labels and ``proba``
    of shape (n, k), one column per class in the order of ``classes`` (``predict_proba``): each class gets
    its own calibration map (that class against the rest) and the calibrated rows are renormalized to sum
    to one (:class:`~calmops_dagster.estimation.calibration.ClassCalibrator`); the expected count of rows of
    true class i predicted j is the sum of ``c[:, i]`` over the rows predicted j, the interval comes from
    labels drawn as ``y_i ~ Categorical(c_i)``, and the model's predictions are ``y_pred`` (default: the most
    probable class). Multiclass ``precision``, ``recall`` and ``f1`` are macro averages over the classes,
    ``roc_auc`` the one-vs-rest macro average (:mod:`~calmops_dagster.estimation.multiclass_metrics`).

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
      the reference gave the map little evidence (outside its range, or in sparse bins; multiclass: in the
      class column that lacks it most).

    Parameters
    ----------
    metric : {"accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc"}, default "accuracy"
    threshold : float, default 0.5
        Binary, without ``y_pred``: the model predicts the positive class when its probability is
        ``>= threshold``.
    calibration : {"isotonic", "sigmoid"}, default "isotonic"
        The calibration map (see :class:`~calmops_dagster.estimation.calibration.Calibrator`).
    confidence_level : float, default 0.95
        Coverage of the interval.
    positive_label : object, optional
        Binary: the positive class; by default the larger of the two sorted labels (1 of 0/1, ``True``,
        ``"yes"``), or ``classes[1]`` when ``classes`` is given.
    n_draws : int, default 1000
        Label vectors drawn for the interval.
    random_state : None, int or numpy.random.Generator
        Seed of the draws; an int gives the same draws at every ``estimate`` call.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels: ``classes`` as passed to ``fit``, else sorted.
    positive_label_ : object
        Binary: the class whose probabilities are passed; ``None`` for a multiclass model.
    calibrator_ : Calibrator or ClassCalibrator
        The calibration map fitted on the reference.
    support_ : ProbabilitySupport or list of ProbabilitySupport
        Range and density of the reference's raw probabilities (multiclass: of each class's column).
    reference_value_ : float
        The realized metric on the reference (what "carry the reference score forward" would estimate).
    calibration_error_ : float
        Expected calibration error (10 equal-count bins) of the reference's calibrated probabilities, each
        fold mapped by a calibrator fitted on the other ``CALIBRATION_FOLDS - 1`` folds (multiclass: the
        mean over the classes, each class against the rest).
    raw_calibration_error_ : float
        Expected calibration error of the raw probabilities on the reference (multiclass: the class mean).
    raw_calibration_pvalue_ : float
        P-value that the raw probabilities are calibrated on the reference
        (:func:`~calmops_dagster.estimation.calibration.calibration_pvalue`; multiclass: the smallest of
        the classes' p-values times the number of classes, at most 1).
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

    Three classes, the model's probabilities one column per class:

    >>> proba_ref = rng.dirichlet([1, 1, 1], size=6000)
    >>> y_ref = np.array(["a", "b", "c"])[(rng.uniform(size=(6000, 1)) > proba_ref.cumsum(axis=1)).sum(axis=1)]
    >>> est = PerformanceEstimator(metric="f1", random_state=0).fit(y_ref, proba_ref)
    >>> e = est.estimate(rng.dirichlet([4, 1, 1], size=2000))  # a block surer of class "a"
    >>> est.classes_.tolist(), round(est.reference_value_, 2), round(e.value, 2), bool(e.lower < e.value < e.upper)
    (['a', 'b', 'c'], 0.61, 0.45, True)
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

    @property
    def multiclass_(self) -> bool:
        """Whether the fitted model has more than two classes."""
        check_is_fitted(self)
        return len(self.classes_) > 2

    def fit(self, y_true, proba, y_pred=None, classes=None) -> PerformanceEstimator:
        """Fit the calibration map and the reference checks on labelled reference data.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
            The reference's labels. Rows the model did not train on: see
            :func:`~calmops_dagster.estimation.crossfit.cross_fitted_probabilities` when there are none.
        proba : array-like of shape (n_samples,) or (n_samples, n_classes)
            Binary: the model's probabilities of ``positive_label``. Multiclass: ``predict_proba``, one column
            per class in the order of ``classes``, each row summing to one.
        y_pred : array-like of shape (n_samples,), optional
            The model's predicted labels (``predict(X)``), when they are not what ``proba`` implies (binary:
            ``proba >= threshold``; multiclass: the most probable class of each row). They set the realized
            reference metric; the calibration map depends on ``proba`` alone.
        classes : array-like, optional
            The labels of ``proba``'s columns (the model's ``classes_``); default: the sorted labels of
            ``y_true``. Every class needs reference rows.

        Returns
        -------
        self
        """
        self._check_params()
        proba = np.asarray(proba)
        self.classes_ = fitted_classes(y_true, classes)
        if len(self.classes_) > 2 or (proba.ndim == 2 and proba.shape[1] > 2):
            if proba.ndim != 2:
                raise ValueError(f"a 1-D proba is for binary classification only: y_true holds "
                                 f"{len(self.classes_)} classes {self.classes_[:10].tolist()}; pass "
                                 f"predict_proba(X), shape (n_samples, {len(self.classes_)})")
            return self._fit_multiclass(y_true, proba, y_pred)
        proba = check_probabilities(proba)
        if classes is None:
            self.classes_, self.positive_label_ = binary_classes(y_true, self.positive_label)
        else:
            binary_classes(y_true, self.positive_label)  # both classes on the reference
            self.positive_label_ = self.classes_[1] if self.positive_label is None else self.positive_label
            if self.positive_label_ not in self.classes_:
                raise ValueError(f"positive_label={self.positive_label!r} is not among classes "
                                 f"{self.classes_.tolist()}")
        y = to_binary(y_true, self.classes_, self.positive_label_)
        if len(y) != len(proba):
            raise ValueError(f"y_true has {len(y)} rows and proba {len(proba)}")
        self.support_ = ProbabilitySupport.from_reference(proba)
        reference_value = realized_metric(self.metric, y, proba, self.threshold, self._predicted_positive(proba, y_pred))
        self._fit_reference(y, proba, reference_value, [y], [proba])
        return self

    def _predicted_positive(self, proba: np.ndarray, y_pred) -> np.ndarray | None:
        """Binary predictions as a mask of the rows predicted ``positive_label_`` (``None`` without ``y_pred``:
        ``proba >= threshold``)."""
        if y_pred is None:
            return None
        predicted = to_binary(y_pred, self.classes_, self.positive_label_, "y_pred").astype(bool)
        if len(predicted) != len(proba):
            raise ValueError(f"y_pred has {len(predicted)} rows and proba {len(proba)}")
        return predicted

    def _fit_multiclass(self, y_true, proba, y_pred) -> PerformanceEstimator:
        if self.positive_label is not None or self.threshold != 0.5:
            raise ValueError("positive_label and threshold are for binary models: a multiclass model predicts "
                             "y_pred (default: the most probable class)")
        proba = check_probability_matrix(proba, len(self.classes_))
        y = to_class_index(y_true, self.classes_, "y_true")
        if len(y) != len(proba):
            raise ValueError(f"y_true has {len(y)} rows and proba {len(proba)}")
        missing = np.setdiff1d(np.arange(len(self.classes_)), y)
        if len(missing):
            raise ValueError(f"classes {self.classes_[missing].tolist()} have no reference rows: their "
                             f"calibration maps cannot be fitted")
        predicted = self._predicted(proba, y_pred)
        self.positive_label_ = None
        self.support_ = [ProbabilitySupport.from_reference(proba[:, k]) for k in range(len(self.classes_))]
        self._fit_reference(y, proba, realized_multiclass_metric(self.metric, y, proba, predicted),
                            [y == k for k in range(len(self.classes_))], list(proba.T))
        return self

    def _fit_reference(self, y, proba, reference_value, class_labels, class_proba) -> None:
        """The calibration map and the reference checks; ``class_labels``/``class_proba``: 0/1 labels and
        probabilities of each class against the rest (binary: the positive class only)."""
        self.calibrator_ = make_calibrator(self.calibration, proba).fit(proba, y)
        self.reference_value_ = float(reference_value)
        folds = min(CALIBRATION_FOLDS, int(np.bincount(y).min()))
        if folds >= 2:
            calibrated = cross_calibrated(proba, y, self.calibration, folds, 0)
            calibrated = [calibrated] if calibrated.ndim == 1 else list(calibrated.T)
            self.calibration_error_ = float(np.mean([expected_calibration_error(labels, c)
                                                     for labels, c in zip(class_labels, calibrated)]))
        else:
            self.calibration_error_ = float("nan")
        self.raw_calibration_error_ = float(np.mean([expected_calibration_error(labels, p)
                                                     for labels, p in zip(class_labels, class_proba)]))
        pvalues = [calibration_pvalue(labels, p) for labels, p in zip(class_labels, class_proba)]
        self.raw_calibration_pvalue_ = min(1.0, min(pvalues) * len(pvalues))
        self.raw_miscalibrated_ = self.raw_calibration_pvalue_ < MISCALIBRATION_ALPHA
        self.n_reference_ = len(y)

    def _predicted(self, proba: np.ndarray, y_pred) -> np.ndarray:
        """Multiclass predictions as class positions: ``y_pred``'s, else each row's most probable class."""
        if y_pred is None:
            return proba.argmax(axis=1)
        predicted = to_class_index(y_pred, self.classes_, "y_pred")
        if len(predicted) != len(proba):
            raise ValueError(f"y_pred has {len(predicted)} rows and proba {len(proba)}")
        return predicted

    def estimate(self, proba, y_pred=None) -> Estimate:
        """Estimate the metric on a block from the model's probabilities (and predictions) alone.

        Parameters
        ----------
        proba : array-like of shape (n_samples,) or (n_samples, n_classes)
            As at ``fit``: the probabilities of ``positive_label_``, or ``predict_proba`` in ``classes_`` order.
        y_pred : array-like of shape (n_samples,), optional
            The model's predicted labels (``predict(X)``): the expected confusion matrix counts these
            predictions (default: binary ``proba >= threshold``, multiclass the most probable class).

        Returns
        -------
        Estimate
        """
        check_is_fitted(self)
        if self.multiclass_:
            proba = check_probability_matrix(proba, len(self.classes_))
            predicted = self._predicted(proba, y_pred)
            calibrated = self.calibrator_.predict(proba)
            value = expected_multiclass_metric(self.metric, calibrated, proba, predicted)
            draws = simulate_multiclass_metric(self.metric, calibrated, proba, predicted, self.n_draws,
                                               self.random_state)
            unsupported, warnings = worst_class_support(self.support_, proba, self.classes_)
        else:
            proba = check_probabilities(proba)
            predicted = self._predicted_positive(proba, y_pred)
            calibrated = self.calibrator_.predict(proba)
            value = expected_metric(self.metric, calibrated, proba, self.threshold, predicted)
            draws = simulate_metric(self.metric, calibrated, proba, self.threshold, self.n_draws,
                                    self.random_state, predicted)
            outside, sparse = self.support_.unsupported_shares(proba)
            unsupported, warnings = outside + sparse, self.support_.warnings(outside, sparse)
        valid = draws[~np.isnan(draws)]
        if len(valid) < len(draws):
            lack = "lack a class" if self.multiclass_ else "hold one class only"
            warnings.append(f"{len(draws) - len(valid)} of {len(draws)} label draws {lack} (ROC AUC undefined): "
                            f"the interval is over the rest, NaN when none is left")
        tail = (1 - self.confidence_level) / 2
        lower, upper = np.quantile(valid, [tail, 1 - tail]) if len(valid) else (np.nan, np.nan)
        std, mc_mean = (valid.std(), valid.mean()) if len(valid) else (np.nan, np.nan)
        return Estimate(metric=self.metric, value=value, lower=float(lower), upper=float(upper),
                        std=float(std), mc_mean=float(mc_mean), n=len(proba), confidence=self.confidence_level,
                        unsupported_share=unsupported, warnings=tuple(warnings))

    def realized(self, y_true, proba, y_pred=None) -> float:
        """The metric realized on labels that have arrived (the classes fitted; predictions ``y_pred``, default
        binary ``proba >= threshold``, multiclass the most probable class)."""
        check_is_fitted(self)
        if self.multiclass_:
            proba = check_probability_matrix(proba, len(self.classes_))
            return float(realized_multiclass_metric(self.metric, to_class_index(y_true, self.classes_, "y_true"),
                                                    proba, self._predicted(proba, y_pred)))
        proba = check_probabilities(proba)
        y = to_binary(y_true, self.classes_, self.positive_label_)
        return float(realized_metric(self.metric, y, proba, self.threshold, self._predicted_positive(proba, y_pred)))
