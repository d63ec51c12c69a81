"""The metric tables read outside calmops, as docs/metric-tables.md shows: deltalake, Polars and DuckDB, on the
local disk and in S3 (moto), with no code of ours."""

from __future__ import annotations

import uuid

import duckdb
import polars as pl
from deltalake import DeltaTable

from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.storage import StoragePath
from tests.moto_s3 import moto_s3


def write_some(store: MetricsStore) -> None:
    store.replace_block_rows("promotions", "demo", "1", [{"decision": "kept"}])
    store.replace_block_rows("promotions", "demo", "2", [{"decision": "kept"}])
    store.replace_block_rows("promotions", "demo", "2", [{"decision": "promoted"}])  # a rerun


def read_everywhere(path: str, storage_options: dict | None) -> None:
    current = DeltaTable(path, storage_options=storage_options).to_pandas().sort_values("block")
    assert current[["block", "decision"]].values.tolist() == [["1", "kept"], ["2", "promoted"]]
    earlier = DeltaTable(path, version=2, storage_options=storage_options).to_pandas().sort_values("block")
    assert earlier["decision"].tolist() == ["kept", "kept"]  # before the rerun: time travel
    frame = pl.read_delta(path, storage_options=storage_options).sort("block")
    assert frame["decision"].to_list() == ["kept", "promoted"]
    dataset = DeltaTable(path, storage_options=storage_options).to_pyarrow_dataset()  # noqa: F841 -- read by name
    assert duckdb.sql("SELECT block, decision FROM dataset ORDER BY block").fetchall() == [
        ("1", "kept"), ("2", "promoted")]


def test_a_local_table_is_read_by_deltalake_polars_and_duckdb(tmp_path):
    store = MetricsStore(tmp_path / "metrics.duckdb")
    write_some(store)
    read_everywhere(str(tmp_path / "metrics" / "promotions"), None)
    with duckdb.connect(str(tmp_path / "metrics.duckdb"), read_only=True) as con:
        assert con.execute("SELECT decision FROM promotions_history").fetchall() == [("kept",)]


def test_a_table_in_s3_is_read_by_deltalake_polars_and_duckdb(tmp_path, monkeypatch):
    bucket = "readers-bucket"
    with moto_s3(bucket) as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        data = StoragePath("s3", f"{bucket}/{uuid.uuid4().hex}/metrics")
        write_some(MetricsStore(tmp_path / "metrics.duckdb", data_dir=data))
        options = {"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true",
                   "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "conditional_put": "etag"}
        read_everywhere(f"s3://{data.path}/promotions", options)
