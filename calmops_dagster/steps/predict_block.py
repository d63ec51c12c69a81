"""Predict the block: the champion the block's decision left in force predicts every row (the assets' IO
manager stores the predictions as ``predictions/<block>.parquet``).

A prediction-only pipeline imports its ``model_file`` as its champion on first use (:func:`ensure_champion`);
a rerun predicts with the champion the block's first run left in force.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from calmops_dagster.errors import NoChampionError
from calmops_dagster.ingest.block_data import read_data_file
from calmops_dagster.reports.pipeline_overview import pipeline_overview
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.results import LoadedBlock, Predictions
from calmops_dagster.steps.step_context import StepContext
from calmops_dagster.store.model_store import ModelStore, file_sha256, load_model_file
from calmops_dagster.store.processed_blocks import record_processed


def predict_block(ctx: StepContext, rows: LoadedBlock, loaded_version: str | None) -> Predictions:
    """Predict ``rows`` with the champion in force and record the block processed
    (:mod:`~calmops_dagster.store.processed_blocks`) at ``loaded_version``: the block version this run loaded,
    ``None`` when the run did not load the block (then nothing is recorded)."""
    spec, block = ctx.spec, ctx.block
    # the champion the block's decision left in force (a rerun predicts as the block's first run did)
    version = ctx.recorded.champion_after if ctx.rerun else ensure_champion(spec, ctx.models)
    if version is None and not spec.prediction_only:  # nothing trained yet: the decision says why
        _record_processed(ctx, loaded_version)
        return Predictions(block=block, version=None, frame=None, rows=0, shares=None, mean_prediction=None)
    result = champion_predictions(ctx.models, version, rows.frame, spec)
    classes = spec.task == "classification"
    overview = None
    if spec.prediction_only:  # no champion step: the overview and the block's alerts follow the predictions
        ctx.log.info(f"block {block}: {len(result)} rows predicted by {version}")  # its one INFO line
        overview = pipeline_overview(ctx.paths, spec.name, spec.performance.metric, metrics=ctx.metrics)
        ctx.alerts()
    _record_processed(ctx, loaded_version)
    return Predictions(
        block=block, version=version, frame=result, rows=len(result),
        shares={str(k): float(v) for k, v in result["prediction"].value_counts(normalize=True).items()}
        if classes else None,
        mean_prediction=None if classes else float(result["prediction"].mean()),
        overview=overview,
    )


def _record_processed(ctx: StepContext, loaded_version: str | None) -> None:
    if loaded_version is not None:
        record_processed(ctx.metrics, ctx.spec.name, ctx.block, loaded_version, ctx.run_id)


def predict_frame(model, features: list[str], frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """``prediction`` per row, plus ``proba_<class>`` columns for classifiers with ``predict_proba``."""
    X = frame[features]
    result = pd.DataFrame({"prediction": model.predict(X)}, index=frame.index)
    if task == "classification" and hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X))
        for i, cls in enumerate(model.classes_):
            result[f"proba_{cls}"] = proba[:, i]
    return result


def ensure_champion(spec: PipelineSpec, store: ModelStore) -> str | None:
    """The champion version; a prediction-only pipeline imports its ``model_file`` on first use."""
    version = store.champion_version()
    if version is None and spec.model_file is not None:
        version = import_model_file(spec, store)
    return version


def import_model_file(spec: PipelineSpec, store: ModelStore) -> str:
    """Make the spec's ``model_file`` the champion of a prediction-only pipeline; return its version.

    The file is loaded under the trust rules of :func:`load_model_file` and stored as a version of its own
    with a manifest (source file and its sha256) and, when the spec names one, its ``reference_file`` as
    the drift reference; from then on it is served from the model store.
    """
    model = load_model_file(spec.model_file, spec.trust_model_file)
    features = spec.features or [str(c) for c in getattr(model, "feature_names_in_", [])]
    if not features:
        raise NoChampionError(f"{spec.model_file}: the model does not name its features; list them in "
                              "the spec's 'features'")
    reference = pd.DataFrame(columns=features)
    if spec.reference_file is not None:
        reference = read_data_file(spec.reference_file)
        missing = [c for c in features if c not in reference.columns]
        if missing:
            raise NoChampionError(f"{spec.reference_file}: reference lacks feature column(s) {missing}")
        reference = reference[features]
    version = store.save(model, reference=reference, pipeline=spec.name, role="imported",
                         source_file=str(spec.model_file), source_sha256=file_sha256(spec.model_file),
                         features=features, task=spec.task, trained_on_blocks=[])
    store.set_champion(version, block="import", decision="imported")
    return version


def champion_predictions(store: ModelStore, version: str | None, frame: pd.DataFrame,
                         spec: PipelineSpec) -> pd.DataFrame:
    """Predictions of champion ``version`` for every row of ``frame``, tagged with the version."""
    if version is None:
        raise NoChampionError(f"pipeline '{spec.name}' has no champion model to predict with")
    features = store.manifest(version)["features"]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise NoChampionError(f"champion {version} needs column(s) {missing} that the block lacks")
    result = predict_frame(store.load(version, spec.pickle_trusted), features, frame, spec.task)
    result.insert(0, "model_version", version)
    if spec.block_col and spec.block_col in frame.columns:
        result.insert(0, spec.block_col, frame[spec.block_col].to_numpy())
    return result.reset_index(drop=True)

