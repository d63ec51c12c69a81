"""The champion's predictions for a block, and where they are written."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from calmops_dagster.errors import NoChampionError
from calmops_dagster.ingest.block_data import read_data_file
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.store.atomic import write_bytes_atomic
from calmops_dagster.store.model_store import ModelStore, file_sha256, load_model_file
from calmops_dagster.store.storage import Location, as_location


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


def predict_block(store: ModelStore, version: str | None, frame: pd.DataFrame, spec: PipelineSpec) -> pd.DataFrame:
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


def write_predictions(result: pd.DataFrame, predictions_dir: Location, block: str) -> Location:
    """Write ``predictions_dir/<block>.parquet`` atomically (a rerun replaces it whole); return its path."""
    buffer = io.BytesIO()
    result.to_parquet(buffer, index=False)
    path = as_location(predictions_dir) / f"{block}.parquet"
    write_bytes_atomic(path, buffer.getvalue())
    return path
