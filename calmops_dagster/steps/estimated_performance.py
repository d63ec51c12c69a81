"""The champion's estimated performance on a block before its labels arrive (label-free).

Between the model store and the estimators of :mod:`calmops_dagster.estimation`: the calibration data (the
champion's training rows with cross-fitted outputs, prepared once per version by :func:`prepare_calibration`
when it is promoted, and kept under ``estimation/``), the metrics estimated (:data:`ESTIMABLE_METRICS`), and
:func:`estimated_drop`, which the retrain rule ``drift.decision_rule: estimated_performance`` reads like the
labelled drop. Calibration, metrics and the rule: docs/estimation.md.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone

from calmops_dagster.drift.model_drift import PerformanceDrift
from calmops_dagster.estimation import (
    Estimate,
    PerformanceEstimator,
    RegressionPerformanceEstimator,
    cross_fitted_predictions,
    cross_fitted_probabilities,
)
from calmops_dagster.estimation.regression import MIN_REFERENCE_ROWS
from calmops_dagster.ingest.block_data import read_data_file
from calmops_dagster.learning.evaluation import higher_is_better
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.store.atomic import write_bytes_atomic
from calmops_dagster.store.model_store import ModelStore, file_sha256
from calmops_dagster.store.storage import Location, as_location, read_parquet

#: Retrain modes whose champion is more than a fresh fit on its training rows (it goes on from an earlier
#: model): the cross-fitted folds only approximate it, and the ``estimation`` note says so.
APPROXIMATE_MODES = ("incremental", "stacking", "recalibration", "ipip")
#: Per kind of champion, the pipeline metrics its estimator computes with the same definition.
ESTIMABLE_METRICS = {
    "binary": ("accuracy", "balanced_accuracy", "roc_auc"),
    "multiclass": ("accuracy", "balanced_accuracy", "f1", "roc_auc"),
    "regression": ("rmse", "mae"),
}
#: Calibration-data column of the cross-fitted probability of the ``i``-th sorted class (multiclass).
PROBA_COLUMN = "proba_{}"


@dataclass
class BlockEstimates:
    """The estimates of one block (metric -> :class:`Estimate`), or the reason there are none."""

    estimates: dict[str, Estimate] = field(default_factory=dict)
    reference_scores: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def rows(self, version: str | None) -> list[dict]:
        """``performance`` rows with role ``estimated`` (value and its interval)."""
        return [{"model_version": version, "role": "estimated", "metric": m, "value": e.value,
                 "ci_low": e.lower, "ci_high": e.upper} for m, e in self.estimates.items()]

    def metadata(self) -> dict:
        """``estimated_<metric>`` with ``_lower``/``_upper``, and why (not) / from what."""
        meta: dict = {"estimation": self.note}
        for m, e in self.estimates.items():
            meta |= {f"estimated_{m}": float(e.value), f"estimated_{m}_lower": float(e.lower),
                     f"estimated_{m}_upper": float(e.upper)}
        warnings = sorted({w for e in self.estimates.values() for w in e.warnings})
        if warnings:
            meta["estimation_warnings"] = "; ".join(warnings)
        return meta


def _calibration_source(spec: PipelineSpec, store: ModelStore, version: str) -> tuple[pd.DataFrame | None, str]:
    """Labelled rows the champion's outputs are calibrated on (a regressor's error model learns from them), and a
    fingerprint of them."""
    if spec.prediction_only:
        if spec.reference_file is None or spec.target is None:
            return None, "no estimate: a prediction-only pipeline needs a reference_file and a target to calibrate on"
        frame = read_data_file(spec.reference_file)
        if spec.target not in frame.columns:
            return None, (f"no estimate: reference_file {spec.reference_file} has no target column "
                          f"'{spec.target}' to calibrate on")
        return frame, file_sha256(spec.reference_file)[:12]
    manifest = store.verified_manifest(version)
    frame = store.reference(version)
    if spec.target not in frame.columns:
        return None, f"no estimate: the training rows of {version} hold no target '{spec.target}'"
    return frame, str(manifest.get("reference_sha256", ""))[:12]


def calibration_data(spec: PipelineSpec, store: ModelStore, version: str, model, cache_dir: Location,
                     folds: int = 5) -> tuple[pd.DataFrame | None, str]:
    """``(frame of y and out-of-fold outputs, note)`` for ``version``: read from ``cache_dir`` or cross-fitted
    on the version's training rows and written there atomically. ``None`` with the reason when impossible.

    The outputs: ``proba`` (binary: the positive class's), ``proba_0``, ``proba_1``... (multiclass: one per
    class, in sorted label order) or ``pred`` (regression)."""
    frame, fingerprint = _calibration_source(spec, store, version)
    if frame is None:
        return None, fingerprint
    path = as_location(cache_dir) / f"{version}-{fingerprint}.parquet"
    note = f"calibrated on {version}'s {len(frame)} training rows, cross-fitted ({folds} folds)"
    mode = store.manifest(version).get("retrain_mode")
    if mode in APPROXIMATE_MODES:
        note += (f"; approximate: each fold fits the model afresh on those rows, while this {mode} champion "
                 "also carries what it learned before them")
    if path.is_file():
        return read_parquet(path), note
    features = store.manifest(version)["features"]
    y = frame[spec.target].to_numpy()
    if spec.task == "regression" and len(y) < MIN_REFERENCE_ROWS:
        return None, (f"no estimate: the error model needs at least {MIN_REFERENCE_ROWS} labelled rows; "
                      f"{version} has {len(y)} training rows")
    if spec.task != "regression" and np.bincount(pd.factorize(y)[0]).min() < folds:
        return None, f"no estimate: a class has fewer than {folds} training rows in {version} to cross-fit"
    try:
        data = _cross_fitted(spec, model, frame[features], y, folds)
    except Exception as exc:  # noqa: BLE001 -- a model that fails to fit must not stop drift monitoring
        return None, f"no estimate: the champion cannot be refitted on folds of its training rows ({exc})"
    buffer = io.BytesIO()
    data.to_parquet(buffer, index=False)
    write_bytes_atomic(path, buffer.getvalue())
    return data, note


def _cross_fitted(spec: PipelineSpec, model, X: pd.DataFrame, y: np.ndarray, folds: int) -> pd.DataFrame:
    """The calibration frame: ``y`` and the out-of-fold outputs of clones of the fitted ``model``."""
    if spec.task == "regression":
        return pd.DataFrame({"y": y, "pred": cross_fitted_predictions(clone(model), X, y, cv=folds,
                                                                      random_state=spec.seed)})
    if len(np.unique(y)) > 2:
        proba = cross_fitted_probabilities(clone(model), X, y, cv=folds, random_state=spec.seed)
        return pd.DataFrame({"y": y} | {PROBA_COLUMN.format(i): proba[:, i] for i in range(proba.shape[1])})
    return pd.DataFrame({"y": y, "proba": cross_fitted_probabilities(
        clone(model), X, y, cv=folds, positive_label=model.classes_[1], random_state=spec.seed)})


def _kind(spec: PipelineSpec, model) -> str:
    """``binary``, ``multiclass`` or ``regression``; or why the champion ``model`` gets no estimate."""
    if spec.task == "regression":
        return "regression" if hasattr(model, "predict") else "no estimate: the champion has no predict"
    classes = getattr(model, "classes_", None)
    if not hasattr(model, "predict_proba") or classes is None:
        return "no estimate: the champion has no predict_proba"
    if len(classes) < 2:
        return f"no estimate: the champion knows one class only ({classes.tolist()})"
    return "binary" if len(classes) == 2 else "multiclass"


def prepare_calibration(spec: PipelineSpec, store: ModelStore, version: str, cache_dir: Location) -> str:
    """Cross-fit the calibration data of ``version``, just promoted, into ``cache_dir`` now: the run that
    trained it pays for the folds, and the next block's drift report reads them. Returns the note (why
    there is none, or what it was calibrated on)."""
    model = store.load(version, spec.pickle_trusted)
    kind = _kind(spec, model)
    return kind if kind not in ESTIMABLE_METRICS else calibration_data(spec, store, version, model, cache_dir)[1]


def _regression_estimators(spec, store, version, data, features):
    reference = _calibration_source(spec, store, version)[0][features]
    return {m: RegressionPerformanceEstimator(metric=m, random_state=spec.seed).fit(
        reference, data["y"].to_numpy(), data["pred"].to_numpy()) for m in ESTIMABLE_METRICS["regression"]}


def _multiclass_estimators(spec, data, n_classes):
    proba = data[[PROBA_COLUMN.format(i) for i in range(n_classes)]].to_numpy()
    return {m: PerformanceEstimator(metric=m, random_state=spec.seed).fit(data["y"].to_numpy(), proba)
            for m in ESTIMABLE_METRICS["multiclass"]}


def _binary_estimators(spec, data, positive_label):
    return {m: PerformanceEstimator(metric=m, positive_label=positive_label, random_state=spec.seed).fit(
        data["y"].to_numpy(), data["proba"].to_numpy()) for m in ESTIMABLE_METRICS["binary"]}


def estimate_block(spec: PipelineSpec, store: ModelStore, version: str | None, model, block: pd.DataFrame,
                   cache_dir: Location) -> BlockEstimates:
    """Estimate the champion's metrics on ``block`` from its features and outputs alone (labels are never
    read). An estimator that refuses its input leaves no estimate, and the note says why."""
    if version is None or model is None:
        return BlockEstimates(note="no estimate: no champion yet")
    kind = _kind(spec, model)
    if kind not in ESTIMABLE_METRICS:
        return BlockEstimates(note=kind)
    data, note = calibration_data(spec, store, version, model, cache_dir)
    if data is None:
        return BlockEstimates(note=note)
    manifest = store.manifest(version)
    X = block[manifest["features"]]
    try:
        if kind == "regression":
            estimators = _regression_estimators(spec, store, version, data, manifest["features"])
            predicted = model.predict(X)
            estimates = {m: e.estimate(X, predicted) for m, e in estimators.items()}
        elif kind == "multiclass":
            trained_on = np.unique(data["y"])
            if not np.array_equal(trained_on, np.sort(model.classes_)):
                return BlockEstimates(note=f"no estimate: the training rows of {version} hold classes "
                                           f"{trained_on.tolist()}, the champion predicts {model.classes_.tolist()}")
            estimators = _multiclass_estimators(spec, data, len(trained_on))
            sorted_columns = np.argsort(model.classes_)  # the estimators' columns are the sorted classes
            proba, predicted = np.asarray(model.predict_proba(X))[:, sorted_columns], model.predict(X)
            estimates = {m: e.estimate(proba, predicted) for m, e in estimators.items()}
        else:
            estimators = _binary_estimators(spec, data, model.classes_[1])
            proba = np.asarray(model.predict_proba(X))[:, 1]
            estimates = {m: e.estimate(proba) for m, e in estimators.items()}
    except ValueError as exc:
        return BlockEstimates(note=f"no estimate: {exc}")
    manifest_scores = manifest.get("metrics") or {}
    references = {m: float(manifest_scores.get(m, e.reference_value_)) for m, e in estimators.items()}
    skipped = "" if spec.performance.metric in estimates else (
        f"; primary metric {spec.performance.metric} is not estimated for a {kind} champion")
    return BlockEstimates(estimates, references, note + skipped)


def estimated_drop(spec: PipelineSpec, estimates: BlockEstimates) -> PerformanceDrift | None:
    """The primary metric's estimate against its reference score: a drop when the whole interval is worse than
    the reference (below a score, above an error) by more than ``performance.max_relative_drop`` of it.
    ``None`` when it is not estimated."""
    metric = spec.performance.metric
    estimate = estimates.estimates.get(metric)
    if estimate is None:
        return None
    reference = estimates.reference_scores[metric]
    tolerance = abs(reference) * spec.performance.max_relative_drop
    worse = (estimate.upper < reference - tolerance if higher_is_better(metric)
             else estimate.lower > reference + tolerance)
    return PerformanceDrift(metric, reference, float(estimate.value), float(estimate.lower), float(estimate.upper),
                            estimate.confidence, tolerance, estimate.n, 0, bool(worse), "estimated without labels")
