"""Model drift: the champion's performance on a block against its reference, and where in the block it broke.

Two pure functions, numpy in and dataclasses out:

- :func:`performance_drift` bootstraps a confidence interval of the champion's metric on the block and
  calls it drift when the whole interval is worse than the reference score by more than ``tolerance``;
- :func:`stream_drift` runs streaming concept-drift detectors over the per-row error stream (0/1
  misclassification, or absolute error) and reports the row index where each one fired: by default DDM,
  HDDM-A and Page-Hinkley as O(n) numpy (:mod:`calmops_dagster.drift.stream_detectors`), calibrated to
  alarm on at most 5% of stable blocks; frouros' EDDM, ADWIN, HDDM-W and KSWIN on request.
"""

import warnings
from dataclasses import dataclass, field

import numpy as np

from calmops_dagster.drift.stream_detectors import ddm, hddm_a, page_hinkley

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro")
REGRESSION_METRICS = ("rmse", "mae", "r2")


def _confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Confusion counts ``cm[true, predicted]`` over the classes present in either array."""
    classes = np.union1d(y_true, y_pred)
    t, p = np.searchsorted(classes, y_true), np.searchsorted(classes, y_pred)
    k = classes.size
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def _confusion_scores(cm: np.ndarray, metric: str) -> np.ndarray:
    """The classification ``metric`` of each confusion matrix in ``cm`` (shape ``(..., k, k)``).

    A class counts in balanced accuracy when it has true rows, in macro F1 when it has true or predicted
    rows, as scikit-learn does for the classes it sees in ``y_true`` and ``y_pred``.
    """
    cm = cm.astype(float)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support, predicted = cm.sum(axis=-1), cm.sum(axis=-2)
    if metric == "accuracy":
        return tp.sum(axis=-1) / support.sum(axis=-1)
    if metric == "balanced_accuracy":
        present = support > 0
        return (np.where(present, tp / np.where(present, support, 1), 0.0).sum(axis=-1)
                / present.sum(axis=-1))
    denom = support + predicted
    seen = denom > 0
    return np.where(seen, 2 * tp / np.where(seen, denom, 1), 0.0).sum(axis=-1) / seen.sum(axis=-1)


def _regression_score(y_true: np.ndarray, y_pred: np.ndarray, metric: str) -> np.ndarray:
    """The regression ``metric`` along the last axis of ``y_true`` and ``y_pred``."""
    y_true, err = y_true.astype(float), y_true.astype(float) - y_pred.astype(float)
    if metric == "rmse":
        return np.sqrt(np.mean(err**2, axis=-1))
    if metric == "mae":
        return np.mean(np.abs(err), axis=-1)
    ss_tot = np.sum((y_true - y_true.mean(axis=-1, keepdims=True)) ** 2, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1 - np.sum(err**2, axis=-1) / ss_tot, np.nan)


def score(y_true: np.ndarray, y_pred: np.ndarray, metric: str) -> float:
    """The metric of predictions ``y_pred`` against ``y_true`` (values equal scikit-learn's).

    Classification: ``accuracy``, ``balanced_accuracy``, ``f1_macro``. Regression: ``rmse``, ``mae``, ``r2``.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if metric == "accuracy":
        return float(np.mean(y_true == y_pred))
    if metric in CLASSIFICATION_METRICS:
        return float(_confusion_scores(_confusion(y_true, y_pred), metric))
    if metric in REGRESSION_METRICS:
        return float(_regression_score(y_true, y_pred, metric))
    raise ValueError(f"unknown metric {metric!r}; valid: {CLASSIFICATION_METRICS + REGRESSION_METRICS}")


def bootstrap_scores(y_true: np.ndarray, y_pred: np.ndarray, metric: str, n_bootstrap: int,
                     rng: np.random.Generator, chunk_cells: int = 2_000_000) -> np.ndarray:
    """The metric on ``n_bootstrap`` resamples (with replacement) of the rows, all at once.

    A classification metric depends on the rows only through the confusion matrix, and the confusion
    matrix of ``n`` rows drawn with replacement is multinomial with the block's cell shares: drawing those
    counts is the same bootstrap at a cost of ``k^2`` per resample instead of ``n``. Regression metrics
    resample the rows, ``chunk_cells`` index cells at a time.
    """
    n = y_true.size
    if metric in CLASSIFICATION_METRICS:
        cm = _confusion(y_true, y_pred)
        counts = rng.multinomial(n, cm.ravel() / n, size=n_bootstrap).reshape(n_bootstrap, *cm.shape)
        return _confusion_scores(counts, metric)
    if metric not in REGRESSION_METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {CLASSIFICATION_METRICS + REGRESSION_METRICS}")
    per_chunk = max(1, chunk_cells // n)
    parts = []
    for start in range(0, n_bootstrap, per_chunk):
        rows = rng.integers(0, n, (min(per_chunk, n_bootstrap - start), n))
        parts.append(_regression_score(y_true[rows], y_pred[rows], metric))
    return np.concatenate(parts)


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is a better model."""
    return metric not in ("rmse", "mae")


@dataclass(frozen=True)
class PerformanceDrift:
    """The champion's metric on a block against its reference score.

    ``ci_low``/``ci_high`` bound the block's metric (percentile bootstrap). ``drifted`` is true when the
    whole interval is worse than ``reference`` by more than ``tolerance``.
    """

    metric: str
    reference: float
    current: float
    ci_low: float
    ci_high: float
    confidence: float
    tolerance: float
    n: int
    n_bootstrap: int
    drifted: bool
    note: str = ""


def performance_drift(y_true, y_pred, reference: float, metric: str = "accuracy", tolerance: float = 0.0,
                      confidence: float = 0.95, n_bootstrap: int = 500, seed: int = 0) -> PerformanceDrift:
    """Compare the champion's block metric with its reference score, with a bootstrap confidence interval.

    Parameters
    ----------
    y_true, y_pred : array-like
        Labels (or targets) of the block and the champion's predictions for it.
    reference : float
        The champion's score on its reference data (e.g. its validation score at promotion).
    metric : str
        See :func:`score`. Classification: accuracy, balanced_accuracy, f1_macro; regression: rmse, mae, r2.
    tolerance : float
        Degradation allowed before it counts (in the metric's units), e.g. 0.02 accuracy points.
    confidence : float
        Coverage of the percentile bootstrap interval.
    n_bootstrap : int
        Bootstrap resamples of the block's rows.
    seed : int

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 1000)
    >>> pred = np.where(rng.random(1000) < 0.7, y, 1 - y)   # 70% accurate
    >>> r = performance_drift(y, pred, reference=0.9)
    >>> r.drifted, round(r.current, 3), r.ci_high < 0.9
    (True, 0.696, True)
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length, got {y_true.shape} and {y_pred.shape}")
    n = y_true.size
    current = score(y_true, y_pred, metric)
    if n < 2:
        return PerformanceDrift(metric, reference, current, float("nan"), float("nan"), confidence, tolerance,
                                n, 0, False, "not tested: fewer than 2 labelled rows")
    boots = bootstrap_scores(y_true, y_pred, metric, n_bootstrap, np.random.default_rng(seed))
    lo, hi = np.nanquantile(boots, [(1 - confidence) / 2, (1 + confidence) / 2])
    worse = hi < reference - tolerance if higher_is_better(metric) else lo > reference + tolerance
    return PerformanceDrift(metric, float(reference), current, float(lo), float(hi), confidence, tolerance, n,
                            n_bootstrap, bool(worse))


def _standardized(errors: np.ndarray) -> np.ndarray:
    """Errors in units of their standard deviation over the block, so one threshold serves every error
    scale (0/1 misclassifications at any error rate, absolute errors in the target's units)."""
    spread = float(errors.std())
    return errors / spread if spread > 0 else errors


def _bounded(errors: np.ndarray) -> np.ndarray:
    """Errors in [0, 1] for the Hoeffding-bound detectors: 0/1 streams as they are, other errors divided by
    their 99th percentile and clipped to 1."""
    if np.isin(errors, (0.0, 1.0)).all():
        return errors
    scale = float(np.quantile(errors, 0.99)) if errors.size else 0.0
    return np.clip(errors / scale, 0.0, 1.0) if scale > 0 else errors


#: The default detectors: O(n) numpy versions of frouros' (``calmops_dagster.drift.stream_detectors``), with
#: settings calibrated on stable blocks (i.i.d. 0/1 errors at error rates 1% to 50%, 1,000 to 50,000 rows)
#: so that each alarms on at most 5% of them (``benchmarks/detector_bench.py``; frouros' own defaults
#: alarm on 10-80% of such blocks, the longer the block the more). DDM checks from row 1,000 on, with its
#: drift level at 5 standard deviations; HDDM-A's Hoeffding bound at alpha 1e-5; Page-Hinkley runs on errors
#: in standard deviations of the block (delta 0.02, lambda 100).
CALIBRATED = {
    "ddm": lambda e: ddm(e, warning_level=4.0, drift_level=5.0, min_num_instances=1000),
    "hddm_a": lambda e: hddm_a(_bounded(e), alpha_d=1e-5, alpha_w=1e-4),
    "page_hinkley": lambda e: page_hinkley(_standardized(e), delta=0.02, lambda_=100.0),
}
DEFAULT_DETECTORS = tuple(CALIBRATED)

#: On request only (``drift.error_detectors``), through frouros row by row (seconds per 10,000 rows; KSWIN
#: tens of seconds), and not calibrated: on stable blocks they alarm far more often than 5%
#: (``benchmarks/detector_bench.py``, README). Detector name -> (frouros class name, config factory).
FROUROS_ONLY = {
    "eddm": ("EDDM", lambda cd: cd.EDDMConfig(min_num_misclassified_instances=100)),
    "adwin": ("ADWIN", lambda cd: cd.ADWINConfig()),
    "hddm_w": ("HDDMW", lambda cd: cd.HDDMWConfig()),
    "kswin": ("KSWIN", lambda cd: cd.KSWINConfig(min_num_instances=600, num_test_instances=200, seed=0)),
}
DETECTORS = (*DEFAULT_DETECTORS, *FROUROS_ONLY)
#: Detectors that only make sense on a 0/1 error stream (they model a Bernoulli error rate).
BINARY_ONLY = frozenset({"ddm", "eddm"})


def _frouros():
    """frouros' concept-drift detectors, imported on first use. frouros calls ``logging.basicConfig(level=
    INFO)`` when imported, which would make every library in the process log at INFO (alembic's migration
    lines in Dagster's run workers): the root logger is put back as it was."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from frouros.detectors import concept_drift

    root.handlers[:], root.level = handlers, level
    return concept_drift


def _run_frouros(name: str, stream: np.ndarray) -> tuple[int | None, int | None]:
    """One frouros detector fed row by row until its first drift: ``(drift_index, warning_index)``."""
    cd = _frouros()
    class_name, make_config = FROUROS_ONLY[name]
    detector = getattr(cd, class_name)(config=make_config(cd))
    drift_at = warn_at = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # KSWIN's ks_2samp falls back to asymptotic
        for i, value in enumerate(stream):
            detector.update(value=float(value))
            status = detector.status
            if warn_at is None and status.get("warning"):
                warn_at = i
            if status.get("drift"):
                drift_at = i
                break
    return drift_at, warn_at


@dataclass(frozen=True)
class StreamDrift:
    """One streaming detector run over a block's error stream.

    ``drift_index`` is the 0-based row of the block where the detector first signalled drift (None if
    it never did); ``warning_index`` the first warning, for detectors that have a warning zone.
    """

    detector: str
    detected: bool
    drift_index: int | None
    warning_index: int | None
    n: int
    note: str = ""


@dataclass(frozen=True)
class StreamDriftSummary:
    """All detectors over one stream; ``first_drift_index`` is the earliest row any of them fired at."""

    results: list[StreamDrift] = field(default_factory=list)

    @property
    def detected(self) -> bool:
        return any(r.detected for r in self.results)

    @property
    def first_drift_index(self) -> int | None:
        hits = [r.drift_index for r in self.results if r.drift_index is not None]
        return min(hits) if hits else None


def error_stream(y_true, y_pred, task: str) -> np.ndarray:
    """Per-row errors: 0/1 misclassification for ``classification``, absolute error for ``regression``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if task == "classification":
        return (y_true != y_pred).astype(float)
    if task == "regression":
        return np.abs(y_true.astype(float) - y_pred.astype(float))
    raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")


def stream_drift(errors, detectors: tuple[str, ...] | None = None) -> StreamDriftSummary:
    """Run streaming concept-drift detectors over a per-row error stream, in row order.

    Parameters
    ----------
    errors : array-like of float
        From :func:`error_stream`. A stream of only 0s and 1s is treated as binary; otherwise the
        binary-only detectors (DDM, EDDM) are skipped with a note, and the detectors that need values in
        [0, 1] (HDDM-A/W) see the errors divided by their 99th percentile and clipped to 1.
    detectors : tuple of str, optional
        Names from :data:`DETECTORS`; default :data:`DEFAULT_DETECTORS`.

    Notes
    -----
    Each detector stops at its first drift: the question is *where* the block broke, not how often.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> errors = np.r_[rng.random(1500) < 0.1, rng.random(1500) < 0.4].astype(float)
    >>> [(r.detector, r.drift_index) for r in stream_drift(errors).results]
    [('ddm', 1656), ('hddm_a', 1567), ('page_hinkley', 1658)]
    """
    e = np.asarray(errors, dtype=float)
    unknown = [name for name in detectors or () if name not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown error-stream detector(s) {unknown}; valid: {list(DETECTORS)}")
    binary = bool(np.isin(e, (0.0, 1.0)).all())
    results = []
    for name in detectors or DEFAULT_DETECTORS:
        if name in BINARY_ONLY and not binary:
            results.append(StreamDrift(name, False, None, None, 0, "not run: needs a 0/1 error stream"))
            continue
        if name in CALIBRATED:
            drift_at, warn_at = CALIBRATED[name](e)
        else:
            drift_at, warn_at = _run_frouros(name, _bounded(e) if name.startswith("hddm") else e)
        results.append(StreamDrift(name, drift_at is not None, drift_at, warn_at, e.size))
    return StreamDriftSummary(results)
