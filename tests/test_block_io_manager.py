"""``data_block`` and ``predictions`` through their IO manager (``resources/block_files_io.py``): each
partition's rows are stored once, as ``blocks/<block>.parquet`` and ``predictions/<block>.parquet`` with the
step result's other fields in the file's metadata; the materialization names the file; downstream assets,
reruns, history and reports read it; a block an earlier release stored still loads; a missing or damaged file
fails in one line. Locally and on S3 (moto)."""

from __future__ import annotations

import io
import pickle
import uuid
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from calmops_dagster.assets.pipeline_assets import build_pipeline_assets
from calmops_dagster.ingest.labels import LabelCount
from calmops_dagster.interfaces.cli import main
from calmops_dagster.reports.pipeline_overview import Overview
from calmops_dagster.resources import build_resources
from calmops_dagster.steps.results import LoadedBlock, Predictions
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.paths import CalmOpsHome
from calmops_dagster.store.storage import StoragePath, read_parquet, stamp
from tests.moto_s3 import moto_s3
from tests.test_alerts import run_blocks, spec_with_alerts
from tests.test_stored_results import failure_messages

ROWS_ASSETS = ("data_block", "predictions")


def stored_paths(instance, spec, asset: str) -> dict[str, str]:
    """``{block: the path metadata of its latest materialization}`` of ``asset``."""
    records = instance.fetch_materializations(AssetKey([spec.name, asset]), limit=100).records
    paths = {}
    for record in reversed(records):  # oldest first: the newest of each block wins
        materialization = record.asset_materialization
        paths[materialization.partition] = materialization.metadata["path"].value
    return paths


def materialize_alone(home, spec, instance, name: str, block: str):
    return materialize(build_pipeline_assets(spec), selection=[AssetKey([spec.name, name])], partition_key=block,
                       instance=instance, resources=build_resources(home), raise_on_error=False)


def same_result(a, b) -> None:
    """``a`` and ``b`` hold the same fields and rows."""
    assert type(a) is type(b)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert {k: v for k, v in vars(a).items() if k != "frame"} == {k: v for k, v in vars(b).items() if k != "frame"}


# ---- the file format (pure) -----------------------------------------------------------------------------------
def test_a_result_and_its_rows_are_one_parquet_file_that_any_reader_opens_as_the_rows():
    from calmops_dagster.steps.result_files import result_bytes, result_from_bytes

    frame = pd.DataFrame({"x1": [0.5, None, 2.0], "segment": ["a", "b", "a"], "y": [0, 1, 1]})
    block = LoadedBlock(block="7", frame=frame, features=["x1", "segment"], source_files=["b7.csv"], version="v",
                        content_hash="h", null_cells=np.int64(1), max_null_share=1 / 3, worst_column="x1",
                        nulls_within_limit=False, labels=LabelCount(3, 3, 0, 0, 0), breaker="closed")
    predicted = Predictions(block="7", version="v0002", frame=frame[["y"]].rename(columns={"y": "prediction"}),
                            rows=3, shares={"0": 1 / 3, "1": 2 / 3}, mean_prediction=None,
                            overview=Overview("v0002", "block 3", 7, 2, 0, "7", numbers={"f1": 0.5, "ok": True}))
    for result in (block, predicted):
        data = result_bytes(result)
        same_result(result_from_bytes(data), result)
        plain = pd.read_parquet(io.BytesIO(data))
        pd.testing.assert_frame_equal(plain, result.frame)  # a plain reader sees the rows, nothing else
    assert result_bytes(Predictions(block="1", version=None, frame=None, rows=0, shares=None,
                                    mean_prediction=None)) is None  # nothing predicted: no file


# ---- through Dagster, on the local disk ----------------------------------------------------------------------
def test_each_block_and_its_predictions_are_stored_once_where_every_reader_reads_them(
        home, tmp_path, instance, block_files, capsys):
    spec = spec_with_alerts(home, tmp_path)
    results, defs = run_blocks(home, spec, instance, block_files[:3])
    assert [r.success for r in results] == [True, True, True]
    state, storage = Path(home.state_dir(spec.name)), Path(home.storage_dir) / spec.name
    for asset, folder in zip(ROWS_ASSETS, ("blocks", "predictions"), strict=True):
        assert sorted(p.name for p in (state / folder).iterdir()) == ["1.parquet", "2.parquet", "3.parquet"]
        assert not (storage / asset).exists()  # no pickle of the rows beside them
        assert stored_paths(instance, spec, asset) == {b: str(state / folder / f"{b}.parquet") for b in "123"}
    assert (storage / "drift_report" / "2").is_file()  # the other assets keep Dagster's pickles

    kept = pd.read_parquet(state / "blocks" / "2.parquet")  # a plain reader: the block's rows, nothing else
    source = pd.read_csv(block_files[1])
    assert list(kept.columns) == list(source.columns) and len(kept) == len(source)
    recorded = MetricsStore(home.metrics_db).query("SELECT content_hash FROM blocks WHERE block = '2'")
    loaded = defs.load_asset_value(AssetKey([spec.name, "data_block"]), partition_key="2", instance=instance)
    assert isinstance(loaded, LoadedBlock) and loaded.content_hash == recorded["content_hash"][0]
    pd.testing.assert_frame_equal(loaded.frame, kept)
    predicted = defs.load_asset_value(AssetKey([spec.name, "predictions"]), partition_key="2", instance=instance)
    assert isinstance(predicted, Predictions) and predicted.rows == len(source) and predicted.version
    pd.testing.assert_frame_equal(predicted.frame, pd.read_parquet(state / "predictions" / "2.parquet"))

    assert materialize_alone(home, spec, instance, "drift_report", "2").success  # reads block 2's file
    first = stamp(state / "blocks" / "2.parquet")
    rerun = materialize(build_pipeline_assets(spec), partition_key="2", instance=instance,
                        resources=build_resources(home), raise_on_error=False)
    assert rerun.success
    assert sorted(p.name for p in (state / "blocks").iterdir()) == ["1.parquet", "2.parquet", "3.parquet"]
    assert stamp(state / "blocks" / "2.parquet") != first  # replaced whole, in place
    assert not (storage / "data_block").exists() and not (storage / "predictions").exists()
    assert main(["report", spec.name]) == 0  # its drill-down reads the kept blocks
    assert str(state / "reports" / f"{spec.name}_report.html") in capsys.readouterr().out


def test_a_block_an_earlier_release_stored_still_loads_or_says_what_to_do(home, tmp_path, instance, block_files):
    """An earlier release pickled ``data_block`` under ``storage/<name>/data_block/<block>`` and wrote the rows
    again, without the step's fields, to ``blocks/<block>.parquet``: the pickle is loaded. Without it, one line
    names the block, the file and the fix."""
    spec = spec_with_alerts(home, tmp_path)
    results, defs = run_blocks(home, spec, instance, block_files[:1])
    assert [r.success for r in results] == [True]
    kept = Path(home.blocks_dir(spec.name)) / "1.parquet"
    value = defs.load_asset_value(AssetKey([spec.name, "data_block"]), partition_key="1", instance=instance)
    value.frame.to_parquet(kept, index=False)  # as the earlier release wrote it
    pickled = Path(home.storage_dir) / spec.name / "data_block" / "1"
    pickled.parent.mkdir(parents=True)
    pickled.write_bytes(pickle.dumps(value))
    assert materialize_alone(home, spec, instance, "drift_report", "1").success

    pickled.unlink()
    result = materialize_alone(home, spec, instance, "drift_report", "1")
    assert not result.success
    line = (f"calmops_dagster.errors.StaleAssetValueError: demo/data_block partition 1: {kept} was written by an "
            "earlier calmops-dagster release without the LoadedBlock this release takes: materialize "
            "demo/data_block partition 1 and its upstream assets again, then retry")
    assert failure_messages(result)[1:] == [line]  # under Dagster's "Error occurred while loading input"
    assert materialize_alone(home, spec, instance, "data_block", "1").success  # doing what the line says
    assert materialize_alone(home, spec, instance, "drift_report", "1").success


@pytest.mark.parametrize("damage, words", [
    ("missing", " is missing"),
    ("not parquet", ": not a readable Parquet file (Parquet magic bytes not found in footer."),
    ("cut short", ": not a readable Parquet file ("),
])
def test_a_missing_or_damaged_block_file_fails_in_one_line_naming_it_and_the_fix(
        home, tmp_path, instance, block_files, damage, words):
    spec = spec_with_alerts(home, tmp_path)
    results, _ = run_blocks(home, spec, instance, block_files[:1])
    assert [r.success for r in results] == [True]
    kept = Path(home.blocks_dir(spec.name)) / "1.parquet"
    if damage == "missing":
        kept.unlink()
    else:
        kept.write_bytes(b"block,x1\n1,0.5\n" if damage == "not parquet" else kept.read_bytes()[:-100])
    result = materialize_alone(home, spec, instance, "drift_report", "1")
    assert not result.success
    (line,) = failure_messages(result)[1:]  # under Dagster's "Error occurred while loading input": one line, no
    # pyarrow error under it
    assert line.startswith(f"calmops_dagster.errors.StoredRowsError: {kept}{words}")
    assert line.endswith(": materialize demo/data_block partition 1 again, then retry") or damage == "missing"
    assert "\n" not in line and "materialize demo/data_block partition 1 again, then retry" in line
    assert materialize_alone(home, spec, instance, "data_block", "1").success
    assert materialize_alone(home, spec, instance, "drift_report", "1").success


# ---- on S3 ---------------------------------------------------------------------------------------------------
def test_on_s3_the_rows_are_one_object_each_and_no_pickle(tmp_path, monkeypatch, block_files):
    bucket, prefix = "calmops-io", uuid.uuid4().hex
    with moto_s3(bucket) as aws:
        for key, value in {**aws, "CALMOPS_HOME": str(tmp_path / "calmops"),
                           "CALMOPS_STORAGE_URL": f"s3://{bucket}/{prefix}"}.items():
            monkeypatch.setenv(key, value)
        home = CalmOpsHome(tmp_path / "calmops")
        spec = spec_with_alerts(home, tmp_path)
        with DagsterInstance.ephemeral() as instance:
            results, defs = run_blocks(home, spec, instance, block_files[:2])
            assert [r.success for r in results] == [True, True]
            listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")["Contents"]
            keys = {item["Key"][len(prefix) + 1:] for item in listed}
            for folder in ("blocks", "predictions"):
                assert {f"pipelines/demo/{folder}/{b}.parquet" for b in "12"} <= keys
            assert not [k for k in keys if k.startswith(("storage/demo/data_block", "storage/demo/predictions"))]
            assert "storage/demo/drift_report/2" in keys
            blocks = StoragePath("s3", f"{bucket}/{prefix}/pipelines/demo/blocks")
            assert stored_paths(instance, spec, "data_block") == {b: str(blocks / f"{b}.parquet") for b in "12"}
            loaded = defs.load_asset_value(AssetKey(["demo", "data_block"]), partition_key="2", instance=instance)
            pd.testing.assert_frame_equal(loaded.frame, read_parquet(blocks / "2.parquet"))
            assert materialize_alone(home, spec, instance, "drift_report", "2").success
