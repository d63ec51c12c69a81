"""Moved rows are counted once (issue 30, point 5): a file rewritten so that its rows move from block 14 to
block 15 withdraws block 14, whose rows leave the current tables (kept in history) with a ``withdrawn``
decision on record; the champion stays."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest
from conftest import evaluate_file_sensor
from dagster import DagsterInstance

from calmops_dagster.ingest.withdrawal import block_tables, find_withdrawals
from calmops_dagster.interfaces.cli import main
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore


@pytest.fixture(autouse=True)
def _own_dagster_home(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # calmops run points it at CALMOPS_HOME/dagster


def write(frame: pd.DataFrame, path, seconds=120):
    frame.to_csv(path, index=False)
    old = time.time() - seconds
    os.utime(path, (old, old))


def rows(home, sql):
    return list(MetricsStore(home.metrics_db).query(sql).itertuples(index=False, name=None))


@pytest.fixture
def moved(demo_spec, home, block_files, capsys):
    """Blocks 13 (a.csv) and 14 (batch.csv) processed, then batch.csv rewritten: its 100 rows are block 15."""
    first, second = (pd.read_csv(path).head(100) for path in block_files[:2])
    write(first.assign(block=13), demo_spec.data_dir / "a.csv")
    write(second.assign(block=14), demo_spec.data_dir / "batch.csv")
    assert main(["run", "demo"]) == 0
    capsys.readouterr()
    write(second.assign(block=15), demo_spec.data_dir / "batch.csv", 60)
    return demo_spec


def test_rows_moved_to_another_block_are_counted_once(moved, home, capsys):
    champion = ModelStore(home.models_dir("demo")).champion_version()
    assert main(["run", "demo"]) == 0
    out = capsys.readouterr().out
    reason = "no current file version holds its rows: batch.csv now holds block(s) 15"
    assert f"demo: withdrew block 14: {reason}" in out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("block ")] == ["block 15"]

    assert rows(home, "SELECT block, rows, source_file FROM blocks ORDER BY block") == [
        ("13", 100, "a.csv"), ("15", 100, "batch.csv")]  # 200 rows, each once
    assert rows(home, "SELECT block, rows FROM blocks_history") == [("14", 100)]  # kept in history
    assert rows(home, "SELECT block, decision, reason, champion_before, champion_after FROM promotions "
                      "WHERE block = '14'") == [("14", "withdrawn", reason, champion, champion)]
    assert [r[:2] for r in rows(home, "SELECT block, decision FROM promotions_history")] == [("14", "kept")]
    for table in ("drift_results", "drift_summary", "performance", "block_context"):
        assert not rows(home, f"SELECT * FROM {table} WHERE block = '14'"), table
        assert rows(home, f"SELECT count(*) FROM {table}_history WHERE block = '14'")[0][0] > 0, table
    assert ModelStore(home.models_dir("demo")).champion_version() == champion
    assert sorted(p.name for p in home.blocks_dir("demo").iterdir()) == ["13.parquet", "15.parquet"]
    predictions = home.predictions_dir("demo")
    assert sorted(p.name for p in predictions.glob("*.parquet")) == ["13.parquet", "15.parquet"]
    assert [len(pd.read_parquet(p)) for p in (predictions / "withdrawn").glob("14-*.parquet")] == [100]
    with DagsterInstance.from_config(str(home.dagster_home)) as instance:
        assert sorted(instance.get_dynamic_partitions("demo_blocks")) == ["13", "15"]

    assert main(["list"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["demo", "block", "2"]
    assert main(["run", "demo"]) == 0
    again = capsys.readouterr().out
    assert "nothing pending" in again and "withdrew" not in again  # withdrawn once


def test_the_sensor_withdraws_the_block_and_deletes_its_partition(moved, home):
    with DagsterInstance.from_config(str(home.dagster_home)) as instance:
        result = evaluate_file_sensor(moved, home, instance)
        assert [r.partition_key for r in result.run_requests] == ["15"]
        requests = {type(r).__name__: list(r.partition_keys) for r in result.dynamic_partitions_requests}
        assert requests == {"AddDynamicPartitionsRequest": ["15"], "DeleteDynamicPartitionsRequest": ["14"]}
    assert rows(home, "SELECT block FROM blocks ORDER BY block") == [("13",)]
    assert rows(home, "SELECT decision FROM promotions WHERE block = '14'") == [("withdrawn",)]


def test_a_block_still_held_by_another_file_is_not_withdrawn():
    recorded = pd.DataFrame({"block": ["14", "14", "15"], "file": ["a.csv", "b.csv", "b.csv"]})
    current = pd.DataFrame({"block": ["14", "15"], "file": ["a.csv", "b.csv"]})
    assert find_withdrawals(["14"], recorded, current) == []


def test_blocks_the_record_never_held_are_left_alone():
    """Processed before the ingest record existed: nothing says their files changed."""
    recorded = pd.DataFrame({"block": ["15"], "file": ["b.csv"]})
    current = pd.DataFrame({"block": ["15"], "file": ["b.csv"]})
    assert find_withdrawals(["1", "2", "15"], recorded, current) == []


def test_every_table_keyed_by_block_is_withdrawn_from():
    assert set(block_tables()) == {"blocks", "drift_results", "drift_summary", "performance", "promotions",
                                   "labels", "block_context", "reevaluation_summary", "reevaluation_results",
                                   "processed_blocks"}
