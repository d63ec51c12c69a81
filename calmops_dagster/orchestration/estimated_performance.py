"""The champion's estimated performance on a block before its labels arrive (label-free, CBPE-style).

Between the model store and :class:`~calmops_dagster.estimation.PerformanceEstimator`:

- **Calibration data** is what the champion did not train on. Held-out rows of a version are not stored,
  so it is its training rows (``reference.parquet``; for a prediction-only pipeline the spec's
  ``reference_file``, which must hold the target) with *cross-fitted* probabilities: each row scored by a
  clone of the champion fitted on the other folds. That costs ``folds`` fits, so it is done once per
  version and kept in ``pipelines/<name>/estimation/<version>-<reference sha256[:12]>.parquet`` (labels and
  probabilities only); every block refits the cheap calibration map from it. The block that promotes a
  champion prepares it (:func:`prepare_calibration`, in ``champion_model``), so the next block's drift
  report does not wait for the folds.
- **What is estimated**: every metric of the pipeline the estimator computes the same way (``accuracy``,
  ``balanced_accuracy``, ``roc_auc``); the pipeline's ``f1`` is macro F1, the estimator's is the positive
  class's, so it is not estimated. Regressors and multiclass classifiers get no estimate, with the reason.
- :func:`estimated_drop` turns the primary metric's estimate into a
  :class:`~calmops_dagster.drift.model_drift.PerformanceDrift` (interval = the estimate's) so the
  retrain rule ``drift.decision_rule: estimated_performance`` reads it like the labelled one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone

from calmops_dagster.drift.model_drift import PerformanceDrift
from calmops_dagster.estimation import Estimate, PerformanceEstimator, cross_fitted_probabilities
from calmops_dagster.ingest.block_data import read_data_file
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.store.atomic import write_bytes_atomic
from calmops_dagster.store.model_store import ModelStore, file_sha256
from calmops_dagster.store.storage import Location, as_location, read_parquet

#: Retrain modes whose champion is more than a fresh fit on its training rows (it goes on from an earlier
#: model): the cross-fitted folds only approximate it, and the ``estimation`` note says so.
APPROXIMATE_MODES = ("incremental", "stacking", "recalibration", "ipip")
#: Pipeline metrics the estimator computes with the same definition.
ESTIMABLE_METRICS = ("accuracy", "balanced_accuracy", "roc_auc")


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
    """Labelled rows the champion's probabilities are calibrated on, and a fingerprint of them."""
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
    """``(frame of y and out-of-fold proba, note)`` for ``version``: read from ``cache_dir`` or cross-fitted
    on the version's training rows and written there atomically. ``None`` with the reason when impossible."""
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
    if np.bincount(pd.factorize(y)[0]).min() < folds:
        return None, f"no estimate: a class has fewer than {folds} training rows in {version} to cross-fit"
    try:
        proba = cross_fitted_probabilities(clone(model), frame[features], y, cv=folds,
                                           positive_label=model.classes_[1], random_state=spec.seed)
    except Exception as exc:  # noqa: BLE001 -- a model that fails to fit must not stop drift monitoring
        return None, f"no estimate: the champion cannot be refitted on folds of its training rows ({exc})"
    data = pd.DataFrame({"y": y, "proba": proba})
    buffer = io.BytesIO()
    data.to_parquet(buffer, index=False)
    write_bytes_atomic(path, buffer.getvalue())
    return data, note


def _not_estimable(spec: PipelineSpec, model) -> str | None:
    """Why the champion ``model`` of ``spec`` gets no estimate, or ``None`` when it can."""
    if spec.task != "classification":
        return (f"no estimate: label-free estimation covers binary classifiers only, not {spec.task} "
                f"({spec.performance.metric})")
    classes = getattr(model, "classes_", None)
    if not hasattr(model, "predict_proba") or classes is None:
        return "no estimate: the champion has no predict_proba"
    if len(classes) != 2:
        return (f"no estimate: multiclass champion ({len(classes)} classes); label-free estimation covers "
                "binary classifiers only")
    return None


def prepare_calibration(spec: PipelineSpec, store: ModelStore, version: str, cache_dir: Location) -> str:
    """Cross-fit the calibration data of ``version``, just promoted, into ``cache_dir`` now: the run that
    trained it pays for the folds, and the next block's drift report reads them. Returns the note (why
    there is none, or what it was calibrated on)."""
    model = store.load(version, spec.pickle_trusted)
    return _not_estimable(spec, model) or calibration_data(spec, store, version, model, cache_dir)[1]


def estimate_block(spec: PipelineSpec, store: ModelStore, version: str | None, model, block: pd.DataFrame,
                   cache_dir: Location) -> BlockEstimates:
    """Estimate the champion's metrics on ``block`` from its probabilities alone (labels are never read)."""
    if version is None or model is None:
        return BlockEstimates(note="no estimate: no champion yet")
    if reason := _not_estimable(spec, model):
        return BlockEstimates(note=reason)
    classes = model.classes_
    data, note = calibration_data(spec, store, version, model, cache_dir)
    if data is None:
        return BlockEstimates(note=note)
    proba = np.asarray(model.predict_proba(block[store.manifest(version)["features"]]))[:, 1]
    manifest_scores = store.manifest(version).get("metrics") or {}
    estimates, references = {}, {}
    for metric in ESTIMABLE_METRICS:
        estimator = PerformanceEstimator(metric=metric, positive_label=classes[1], random_state=spec.seed)
        estimator.fit(data["y"].to_numpy(), data["proba"].to_numpy())
        estimates[metric] = estimator.estimate(proba)
        references[metric] = float(manifest_scores.get(metric, estimator.reference_value_))
    skipped = "" if spec.performance.metric in ESTIMABLE_METRICS else (
        f"; primary metric {spec.performance.metric} (macro) is not estimated")
    return BlockEstimates(estimates, references, note + skipped)


def estimated_drop(spec: PipelineSpec, estimates: BlockEstimates) -> PerformanceDrift | None:
    """The primary metric's estimate against its reference score: a drop when the whole interval lies below
    the reference by more than ``performance.max_relative_drop`` of it. ``None`` when it is not estimated."""
    metric = spec.performance.metric
    estimate = estimates.estimates.get(metric)
    if estimate is None:
        return None
    reference = estimates.reference_scores[metric]
    tolerance = abs(reference) * spec.performance.max_relative_drop
    return PerformanceDrift(metric, reference, float(estimate.value), float(estimate.lower), float(estimate.upper),
                            estimate.confidence, tolerance, estimate.n, 0,
                            bool(estimate.upper < reference - tolerance), "estimated without labels")
