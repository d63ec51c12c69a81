"""Prediction-only pipelines and model files: no target needed, untrusted files refused."""

from __future__ import annotations

import logging
import os
import pickle

import pandas as pd
import pytest
from dagster import DagsterInstance, Definitions
from sklearn.linear_model import LogisticRegression

from calmops_dagster.errors import ModelIntegrityError
from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.orchestration.headless_runs import run_pending
from calmops_dagster.orchestration.ingest_registration import register_new_blocks
from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
from calmops_dagster.resources import build_resources
from calmops_dagster.spec import parse_spec, save_spec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore, load_model_file
from calmops_dagster.store.skops_io import skops_io
from tests.conftest import block_spec_dict

FEATURES = ["x1", "x2", "x3", "x4"]


def run(home, spec):
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    with DagsterInstance.ephemeral() as instance:
        metrics, models = MetricsStore(home.metrics_db), ModelStore(home.models_dir(spec.name))
        register_new_blocks(instance, spec, metrics, models, logging.getLogger("test"))
        return run_pending(instance, spec, defs.resolve_job_def(job_name(spec)), metrics)


@pytest.fixture
def fitted(tmp_path):
    frame = make_drifting_blocks(n_blocks=3, rows_per_block=300, seed=3)
    model = LogisticRegression().fit(frame[FEATURES], frame["y"])
    return frame, model


def test_prediction_only_pipeline_without_target(home, tmp_path, fitted):
    frame, model = fitted
    data = tmp_path / "data"
    data.mkdir()
    frame.drop(columns="y").to_csv(data / "unlabelled.csv", index=False)
    frame.to_csv(data / "labelled.csv", index=False)  # a target column, if present, is ignored
    for path in data.iterdir():
        os.utime(path, (0, 0))
    model_file = tmp_path / "model.skops"
    skops_io().dump(model, model_file)
    raw = block_spec_dict("scoring", str(data), prediction_only=True, model_file=str(model_file),
                          features=FEATURES, model_spec={"module": "sklearn.linear_model",
                                                          "class": "LogisticRegression"}, performance={})
    del raw["target"]
    spec = parse_spec(raw, home.spec_path("scoring"))
    save_spec(spec, home.spec_path("scoring"))
    assert [a.key.path[-1] for a in build_pipeline_definitions(spec).assets] == ["data_block", "predictions",
                                                                                 "monitoring"]

    results = run(home, spec)
    assert [r.block for r in results] == ["1", "2", "3"] and all(r.success for r in results)
    store = ModelStore(home.models_dir("scoring"))
    manifest = store.manifest(store.champion_version())
    assert manifest["role"] == "imported" and manifest["source_file"] == str(model_file)
    predicted = pd.read_parquet(home.predictions_dir("scoring") / "2.parquet")
    expected = model.predict(frame.loc[frame["block"] == 2, FEATURES])
    # block 2 is in both files: every row is predicted, with the imported model
    assert len(predicted) == 600 and (predicted["prediction"].to_numpy()[:300] == expected).all()
    assert {"proba_0", "proba_1", "model_version"} <= set(predicted.columns)


def test_prediction_only_reports_drift_against_a_reference_file(home, tmp_path, fitted):
    frame, model = fitted
    data = tmp_path / "data"
    data.mkdir()
    shifted = frame.drop(columns="y").assign(x1=lambda f: f["x1"] + (f["block"] == 3) * 2.0)
    shifted.to_csv(data / "blocks.csv", index=False)
    os.utime(data / "blocks.csv", (0, 0))
    frame[frame["block"] == 1][FEATURES].to_parquet(tmp_path / "reference.parquet")
    model_file = tmp_path / "model.skops"
    skops_io().dump(model, model_file)
    raw = block_spec_dict("scoring", str(data), prediction_only=True, model_file=str(model_file),
                          reference_file=str(tmp_path / "reference.parquet"), features=FEATURES,
                          model_spec={"module": "sklearn.linear_model", "class": "LogisticRegression"},
                          performance={})
    del raw["target"]
    spec = parse_spec(raw, home.spec_path("scoring"))
    save_spec(spec, home.spec_path("scoring"))
    assert all(r.success for r in run(home, spec))
    summary = MetricsStore(home.metrics_db).query(
        "SELECT block, drift_detected, retrain, drifted_features FROM drift_summary ORDER BY block")
    assert summary["drift_detected"].tolist() == [False, False, True]
    assert summary["drifted_features"].iloc[2] == "x1" and not summary["retrain"].any()


def test_untrusted_model_files_are_refused(tmp_path, fitted):
    _, model = fitted
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps(model))
    with pytest.raises(ModelIntegrityError, match="a pickle runs code when loaded"):
        load_model_file(pickled, trust=False)
    assert load_model_file(pickled, trust=True).coef_.shape == (1, 4)

    hostile = tmp_path / "hostile.skops"
    skops_io().dump({"model": model, "extra": pd.Timestamp("2020-01-01")}, hostile)
    with pytest.raises(ModelIntegrityError, match="outside the allow-list"):
        load_model_file(hostile, trust=False)

