"""Calibration: the map from a model's raw probabilities to calibrated ones, and how calibrated they are.

A binary model's positive-class probability gets one map; a multiclass model's probabilities get one map
per class, renormalized row by row.

The map is fitted on labelled data the model did not train on (the reference). Isotonic regression is
the default (monotone, no shape assumed; it needs a few thousand rows); ``sigmoid`` is Platt scaling on the
log-odds, ``sigmoid(a * logit(p) + b)``, which holds the identity and suits small references.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logit
from scipy.stats import chi2
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

CALIBRATION_METHODS = ("isotonic", "sigmoid")
#: Equal-count bins of the calibration checks.
N_BINS = 10
#: Raw probabilities are clipped this far from 0 and 1 before their log-odds are taken.
LOGIT_EPS = 1e-6


def check_calibration_method(method: str) -> str:
    """``method`` when it is one of :data:`CALIBRATION_METHODS`, else a ValueError listing them."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration {method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    return method


class Calibrator:
    """A monotone map from raw positive-class probabilities to calibrated ones.

    Parameters
    ----------
    method : {"isotonic", "sigmoid"}, default "isotonic"

    Attributes
    ----------
    model_ : IsotonicRegression or LogisticRegression
        The fitted map (isotonic: clipped outside the fitted range; sigmoid: on the log-odds).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> raw = rng.uniform(size=4000)
    >>> y = rng.uniform(size=4000) < raw ** 2          # the model is over-confident about positives
    >>> calibrated = Calibrator("isotonic").fit(raw, y).predict(np.array([0.5, 0.9]))
    >>> bool(np.abs(calibrated - [0.5 ** 2, 0.9 ** 2]).max() < 0.05)
    True
    """

    def __init__(self, method: str = "isotonic"):
        self.method = method

    def fit(self, proba, y) -> Calibrator:
        """Fit the map on raw probabilities ``proba`` and 0/1 labels ``y``."""
        check_calibration_method(self.method)
        proba, y = np.asarray(proba, dtype=np.float64), np.asarray(y)
        if self.method == "isotonic":
            self.model_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(proba, y)
        else:
            self.model_ = LogisticRegression(C=np.inf).fit(self._log_odds(proba), y)
        return self

    def predict(self, proba) -> np.ndarray:
        """Calibrated probabilities of the positive class."""
        proba = np.asarray(proba, dtype=np.float64)
        if self.method == "isotonic":
            return self.model_.predict(proba)
        return self.model_.predict_proba(self._log_odds(proba))[:, 1]

    @staticmethod
    def _log_odds(proba: np.ndarray) -> np.ndarray:
        return logit(np.clip(proba, LOGIT_EPS, 1 - LOGIT_EPS)).reshape(-1, 1)


class ClassCalibrator:
    """One :class:`Calibrator` per class of a multiclass model (class k against the rest), its outputs
    renormalized so that each row sums to one, as NannyML's multiclass CBPE does.

    A row the maps send to zero for every class (possible with isotonic maps at the edges of the reference)
    keeps its raw probabilities.

    Parameters
    ----------
    method : {"isotonic", "sigmoid"}, default "isotonic"

    Attributes
    ----------
    calibrators_ : list of Calibrator
        Class k's map, fitted on column k of the probabilities and the labels ``y == k``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> true = rng.dirichlet([1, 1, 1], size=6000)
    >>> y = (rng.uniform(size=(6000, 1)) > true.cumsum(axis=1)).sum(axis=1)   # labels drawn from ``true``
    >>> raw = true ** 2 / (true ** 2).sum(axis=1, keepdims=True)                # an over-confident model
    >>> calibrated = ClassCalibrator().fit(raw, y).predict(raw)
    >>> bool(np.abs(calibrated - true).mean() < np.abs(raw - true).mean() / 2), bool(np.ptp(calibrated.sum(axis=1)) < 1e-12)
    (True, True)
    """

    def __init__(self, method: str = "isotonic"):
        self.method = method

    def fit(self, proba, y) -> ClassCalibrator:
        """Fit the maps on probabilities ``proba`` of shape (n, k) and class positions ``y`` in 0..k-1."""
        proba, y = np.asarray(proba, dtype=np.float64), np.asarray(y)
        self.calibrators_ = [Calibrator(self.method).fit(proba[:, k], y == k) for k in range(proba.shape[1])]
        return self

    def predict(self, proba) -> np.ndarray:
        """Calibrated class probabilities, each row summing to one."""
        proba = np.asarray(proba, dtype=np.float64)
        mapped = np.column_stack([c.predict(proba[:, k]) for k, c in enumerate(self.calibrators_)])
        total = mapped.sum(axis=1, keepdims=True)
        return np.where(total > 0, mapped / np.where(total > 0, total, 1), proba)


def make_calibrator(method: str, proba: np.ndarray) -> Calibrator | ClassCalibrator:
    """A :class:`Calibrator` for positive-class probabilities (1-D), a :class:`ClassCalibrator` for a matrix."""
    return ClassCalibrator(method) if proba.ndim == 2 else Calibrator(method)


def cross_calibrated(proba, y, method: str = "isotonic", cv: int = 5, random_state=None) -> np.ndarray:
    """Out-of-fold calibrated probabilities: each fold mapped by a calibrator fitted on the other folds.

    ``proba`` is 1-D with 0/1 labels ``y``, or (n, k) with class positions ``y``. They show how well the
    map carries to rows it was not fitted on (an in-sample isotonic fit is calibrated by construction, so
    its own error says nothing).
    """
    proba, y = np.asarray(proba, dtype=np.float64), np.asarray(y)
    out = np.empty_like(proba)
    for fit_rows, held_out in StratifiedKFold(cv, shuffle=True, random_state=random_state).split(proba, y):
        out[held_out] = make_calibrator(method, proba).fit(proba[fit_rows], y[fit_rows]).predict(proba[held_out])
    return out


def _bins(y, prob, n_bins: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(labels, probabilities) of ``n_bins`` equal-count bins of rows sorted by probability."""
    prob = np.asarray(prob, dtype=np.float64)
    order = np.argsort(prob, kind="stable")
    y, prob = np.asarray(y, dtype=np.float64)[order], prob[order]
    return [(y[rows], prob[rows]) for rows in np.array_split(np.arange(len(prob)), n_bins) if len(rows)]


def expected_calibration_error(y, prob, n_bins: int = N_BINS) -> float:
    """Expected calibration error: the row-weighted mean over equal-count bins of |mean label - mean prob|.

    Examples
    --------
    >>> round(expected_calibration_error([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.8], n_bins=2), 3)
    0.25
    """
    n = len(prob)
    return float(sum(len(yb) / n * abs(yb.mean() - pb.mean()) for yb, pb in _bins(y, prob, n_bins)))


def calibration_pvalue(y, prob, n_bins: int = N_BINS) -> float:
    """P-value of the hypothesis that ``prob`` is calibrated for ``y`` (0/1 labels).

    A Hosmer-Lemeshow-type test for probabilities that were not fitted on these rows: over equal-count
    bins, the sum of (observed positives - expected positives)^2 / sum p(1-p) against chi-squared with
    as many degrees of freedom as bins. On large samples it flags small miscalibration as well: read the size
    in :func:`expected_calibration_error`.
    """
    bins = _bins(y, prob, n_bins)
    statistic = 0.0
    for yb, pb in bins:
        gap, variance = yb.sum() - pb.sum(), (pb * (1 - pb)).sum()
        if gap != 0:
            statistic += gap**2 / variance if variance > 0 else np.inf
    return float(chi2.sf(statistic, len(bins)))
