"""The champion's estimated performance on a block before its labels arrive (label-free).

Between the model store and the estimators of :mod:`calmops_dagster.estimation`: the calibration data (a
classifier champion's own outputs on labelled rows it did not train on, :func:`classifier_calibration`: its
training block's held-out rows, then recent kept blocks; a regressor's cross-fitted training rows), kept per
version under ``estimation/``; the metrics estimated (:data:`ESTIMABLE_METRICS`); and :func:`estimated_drop`,
which the retrain rule ``drift.decision_rule: estimated_performance`` reads like the labelled drop.
Calibration, metrics and the rule: docs/estimation.md.
"""

from __future__ import annotations

import hashlib
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
from calmops_dagster.ingest.block_history import blocks_before
from calmops_dagster.learning.evaluation import higher_is_better
from calmops_dagster.learning.training import evaluation_split
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
#: Calibration-data column of the probability of the ``i``-th sorted class (multiclass).
PROBA_COLUMN = "proba_{}"
#: A classifier champion is calibrated on its held-out rows, then on the newest labelled kept blocks it did not
#: train on until it has this many rows (the calibration map's error shrinks with its rows: on the census
#: benchmark, 3,000 held-out rows left a bias of 0.01 in estimated accuracy, 34,000 one of 0.001).
CALIBRATION_ROWS = 50_000
#: A kept block older than the champion's training block joins its calibration when the champion's accuracy
#: on it lies within this many standard errors of the accuracy its held-out rows predict there.
ADMISSION_SIGMAS = 3.0


@dataclass(frozen=True)
class KeptBlocks:
    """The pipeline's kept blocks and the block being estimated: the labelled rows before it may calibrate."""

    blocks_dir: Location
    block: str
    order: list[str] | None = None
    """Blocks in processing order (a stream pipeline's arrival order); default: block order."""

    def before(self, block: str | None = None) -> list[str]:
        """Keys of the kept blocks before ``block`` (default: the one estimated), oldest first."""
        return blocks_before(self.blocks_dir, block or self.block, order=self.order)


@dataclass
class BlockEstimates:
    """The estimates of one block (metric -> :class:`Estimate`), or the reason there are none, and how many
    labelled rows the estimators were calibrated on."""

    estimates: dict[str, Estimate] = field(default_factory=dict)
    reference_scores: dict[str, float] = field(default_factory=dict)
    note: str = ""
    calibration_rows: int | None = None

    def rows(self, version: str | None) -> list[dict]:
        """``performance`` rows with role ``estimated`` (value, its interval and ``calibration_rows``)."""
        return [{"model_version": version, "role": "estimated", "metric": m, "value": e.value,
                 "ci_low": e.lower, "ci_high": e.upper, "calibration_rows": self.calibration_rows}
                for m, e in self.estimates.items()]

    def metadata(self) -> dict:
        """``estimated_<metric>`` with ``_lower``/``_upper``, ``estimation_calibration_rows``, and why (not) /
        from what."""
        meta: dict = {"estimation": self.note}
        if self.estimates and self.calibration_rows is not None:
            meta["estimation_calibration_rows"] = int(self.calibration_rows)
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


def _write_parquet(path: Location, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    write_bytes_atomic(path, buffer.getvalue())


def _outputs(kind: str, model, X: pd.DataFrame, y: np.ndarray) -> pd.DataFrame:
    """Labels ``y``, the champion's probabilities on ``X`` (binary: ``proba``, the positive class's; multiclass:
    ``proba_0``... in sorted label order) and its predictions ``pred``."""
    proba = np.asarray(model.predict_proba(X))
    if kind == "binary":
        columns = {"proba": proba[:, 1]}
    else:
        columns = {PROBA_COLUMN.format(i): proba[:, j] for i, j in enumerate(np.argsort(model.classes_))}
    return pd.DataFrame({"y": y, **columns, "pred": np.asarray(model.predict(X))})


def _training_block(store: ModelStore, version: str) -> str | None:
    """The block ``version`` was trained on, when it was trained on one block's rows."""
    trained_on = store.manifest(version).get("trained_on_blocks") or []
    return trained_on[0] if len(trained_on) == 1 else None


def held_out_rows(spec: PipelineSpec, store: ModelStore, version: str, model, kind: str, blocks_dir: Location,
                  cache_dir: Location) -> pd.DataFrame | None:
    """The rows of ``version``'s training block held out from its training (its evaluation split, which the
    promotion was judged on) with its outputs; read from ``cache_dir`` or computed and kept there. ``None``
    when they cannot be found again: the block is gone or unlabelled, or its split no longer has the
    manifest's size."""
    block = _training_block(store, version)
    if block is None:
        return None
    path = as_location(cache_dir) / f"{version}-held-out.parquet"
    if path.is_file():
        return read_parquet(path)
    source = as_location(blocks_dir) / f"{block}.parquet"
    if not source.is_file():
        return None
    frame = read_parquet(source)
    if spec.target not in frame.columns or frame[spec.target].isna().any():
        return None
    split = evaluation_split(frame, spec, spec.feature_columns(frame.columns))
    manifest = store.manifest(version)
    if manifest.get("evaluated_on") != f"block {block} held-out {len(split.X_eval)} rows":
        return None
    data = _outputs(kind, model, split.X_eval[manifest["features"]], split.y_eval.to_numpy())
    _write_parquet(path, data)
    return data


def _block_outputs(spec: PipelineSpec, version: str, model, kind: str, features: list[str], source: Location,
                   cache_dir: Location) -> pd.DataFrame | None:
    """The labelled rows of the kept block file ``source`` with ``version``'s outputs (rows whose label the
    champion does not know left out), kept per version and block file content; ``None`` without labels."""
    raw = source.read_bytes()
    path = as_location(cache_dir) / f"{version}-block-{source.stem}-{hashlib.sha256(raw).hexdigest()[:12]}.parquet"
    if path.is_file():
        return read_parquet(path)
    frame = pd.read_parquet(io.BytesIO(raw))
    if spec.target not in frame.columns:
        return None
    frame = frame[frame[spec.target].isin(model.classes_)]
    if frame.empty:
        return None
    data = _outputs(kind, model, frame[features], frame[spec.target].to_numpy())
    _write_parquet(path, data)
    return data


def _probabilities(data: pd.DataFrame, kind: str, n_classes: int) -> np.ndarray:
    return (data["proba"].to_numpy() if kind == "binary"
            else data[[PROBA_COLUMN.format(i) for i in range(n_classes)]].to_numpy())


def _held_out_note(store: ModelStore, version: str, held_out: pd.DataFrame) -> str:
    return (f"{version}'s outputs on the {len(held_out)} rows of block {_training_block(store, version)} held out "
            "from its training")


def _held_out_check(spec: PipelineSpec, model, kind: str, held_out: pd.DataFrame) -> PerformanceEstimator | None:
    """An accuracy estimator fitted on the held-out rows alone, to check older blocks against (``None`` when
    they cannot fit one, e.g. a class missing among them)."""
    try:
        return PerformanceEstimator(metric="accuracy", n_draws=200, random_state=spec.seed).fit(
            held_out["y"].to_numpy(), _probabilities(held_out, kind, len(model.classes_)),
            held_out["pred"].to_numpy(), classes=np.sort(model.classes_))
    except ValueError:
        return None


def _agrees(check: PerformanceEstimator, n_check: int, data: pd.DataFrame, kind: str) -> bool:
    """Whether the champion's accuracy on a block's rows ``data`` lies within :data:`ADMISSION_SIGMAS` standard
    errors (the block's and the held-out rows' sampling errors) of what ``check``, fitted on its ``n_check``
    held-out rows, estimates there."""
    proba, pred = _probabilities(data, kind, len(check.classes_)), data["pred"].to_numpy()
    try:
        estimate, realized = check.estimate(proba, pred), check.realized(data["y"].to_numpy(), proba, pred)
    except ValueError:  # a label or prediction the held-out rows never had
        return False
    accuracy = check.reference_value_
    error = np.hypot(estimate.std, np.sqrt(accuracy * (1 - accuracy) / n_check))
    return abs(realized - estimate.value) <= ADMISSION_SIGMAS * error


def classifier_calibration(spec: PipelineSpec, store: ModelStore, version: str, model, kind: str,
                           cache_dir: Location, kept: KeptBlocks | None = None) -> tuple[pd.DataFrame | None, str]:
    """``(frame of y, outputs and predictions, note)`` a classifier ``version`` is calibrated on for the block
    ``kept.block``: its held-out rows (else its cross-fitted training rows, :func:`calibration_data`), then
    the newest labelled kept blocks before ``kept.block`` it did not train on, until :data:`CALIBRATION_ROWS`.
    A block older than its training block joins only when it :func:`_agrees` with the held-out rows. ``None``
    with the reason when there is nothing to calibrate on."""
    held_out = None if kept is None else held_out_rows(spec, store, version, model, kind, kept.blocks_dir,
                                                         cache_dir)
    if held_out is None:
        base, note = calibration_data(spec, store, version, model, cache_dir)
        if base is None or kept is None:
            return base, note
        note = note.removeprefix("calibrated on ")
    else:
        base, note = held_out, _held_out_note(store, version, held_out)
    manifest = store.manifest(version)
    trained = {*(manifest.get("trained_on_blocks") or []), *(manifest.get("history_blocks") or [])}
    training_block = _training_block(store, version)
    older = set(kept.before(training_block)) if training_block in kept.before() else set()
    check = _held_out_check(spec, model, kind, held_out) if held_out is not None and older else None
    parts, used, refused = [base], [], []
    for key in reversed([k for k in kept.before() if k not in trained]):
        if sum(map(len, parts)) >= CALIBRATION_ROWS:
            break
        data = _block_outputs(spec, version, model, kind, manifest["features"],
                              as_location(kept.blocks_dir) / f"{key}.parquet", cache_dir)
        if data is None:
            continue
        if key in older and (check is None or not _agrees(check, len(held_out), data, kind)):
            refused.append(key)
            continue
        parts.append(data)
        used.append(key)
    data = pd.concat(parts, ignore_index=True)
    note = f"calibrated on {len(data)} labelled rows: {note}"
    if used:
        note += f", and its outputs on the labelled blocks {', '.join(used)} it did not train on"
    if refused:
        note += (f"; older blocks {', '.join(refused)} left out: the champion's accuracy there disagrees with "
                 "its held-out rows" if check is not None else "; older blocks left out: no held-out rows to check them")
    return data, note


def prepare_calibration(spec: PipelineSpec, store: ModelStore, version: str, cache_dir: Location,
                        blocks_dir: Location | None = None) -> str:
    """Prepare the calibration data of ``version``, just promoted, in ``cache_dir`` now, so the next block's
    drift report reads it: a classifier's outputs on its held-out rows (one prediction), else the
    cross-fitted folds of its training rows (``folds`` fits). Returns the note (why there is none, or what
    it was calibrated on)."""
    model = store.load(version, spec.pickle_trusted)
    kind = _kind(spec, model)
    if kind not in ESTIMABLE_METRICS:
        return kind
    if kind != "regression" and blocks_dir is not None:
        held_out = held_out_rows(spec, store, version, model, kind, blocks_dir, cache_dir)
        if held_out is not None:
            return _held_out_note(store, version, held_out)
    return calibration_data(spec, store, version, model, cache_dir)[1]


def _regression_estimators(spec, store, version, data, features):
    reference = _calibration_source(spec, store, version)[0][features]
    return {m: RegressionPerformanceEstimator(metric=m, random_state=spec.seed).fit(
        reference, data["y"].to_numpy(), data["pred"].to_numpy()) for m in ESTIMABLE_METRICS["regression"]}


def _predictions(data: pd.DataFrame):
    """The calibration rows' predictions, when every row has one (cross-fitted rows have none)."""
    return data["pred"].to_numpy() if "pred" in data and data["pred"].notna().all() else None


def _classifier_estimators(spec, kind: str, data: pd.DataFrame, n_classes: int, positive_label=None):
    """One fitted estimator per metric of ``kind``. The calibration map and the reference checks depend on the
    probabilities alone, so they are fitted once and shared; each metric gets its own reference value."""
    y, proba, predicted = data["y"].to_numpy(), _probabilities(data, kind, n_classes), _predictions(data)
    first, *others = ESTIMABLE_METRICS[kind]
    fitted = PerformanceEstimator(metric=first, positive_label=positive_label, random_state=spec.seed).fit(
        y, proba, predicted)
    estimators = {first: fitted}
    for metric in others:
        estimator = clone(fitted).set_params(metric=metric)
        vars(estimator).update({k: v for k, v in vars(fitted).items() if k.endswith("_")})
        estimator.reference_value_ = estimator.realized(y, proba, predicted)
        estimators[metric] = estimator
    return estimators


def estimate_block(spec: PipelineSpec, store: ModelStore, version: str | None, model, block: pd.DataFrame,
                   cache_dir: Location, kept: KeptBlocks | None = None) -> BlockEstimates:
    """Estimate the champion's metrics on ``block`` from its features and outputs alone (its labels are never
    read; a classifier is calibrated on the labelled kept blocks before it too, when ``kept`` says where they
    are). An estimator that refuses its input leaves no estimate, and the note says why."""
    if version is None or model is None:
        return BlockEstimates(note="no estimate: no champion yet")
    kind = _kind(spec, model)
    if kind not in ESTIMABLE_METRICS:
        return BlockEstimates(note=kind)
    if kind == "regression":
        data, note = calibration_data(spec, store, version, model, cache_dir)
    else:
        data, note = classifier_calibration(spec, store, version, model, kind, cache_dir, kept)
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
            labelled = np.unique(data["y"])
            if not np.array_equal(labelled, np.sort(model.classes_)):
                return BlockEstimates(note=f"no estimate: the calibration rows of {version} hold classes "
                                           f"{labelled.tolist()}, the champion predicts {model.classes_.tolist()}")
            estimators = _classifier_estimators(spec, kind, data, len(labelled))
            sorted_columns = np.argsort(model.classes_)  # the estimators' columns are the sorted classes
            proba, predicted = np.asarray(model.predict_proba(X))[:, sorted_columns], model.predict(X)
            estimates = {m: e.estimate(proba, predicted) for m, e in estimators.items()}
        else:
            estimators = _classifier_estimators(spec, kind, data, 2, model.classes_[1])
            proba, predicted = np.asarray(model.predict_proba(X))[:, 1], model.predict(X)
            estimates = {m: e.estimate(proba, predicted) for m, e in estimators.items()}
    except ValueError as exc:
        return BlockEstimates(note=f"no estimate: {exc}")
    manifest_scores = manifest.get("metrics") or {}
    references = {m: float(manifest_scores.get(m, e.reference_value_)) for m, e in estimators.items()}
    skipped = "" if spec.performance.metric in estimates else (
        f"; primary metric {spec.performance.metric} is not estimated for a {kind} champion")
    return BlockEstimates(estimates, references, note + skipped, len(data))


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
