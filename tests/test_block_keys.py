"""Block keys are keys (issue 30, point 4): a block value that is no key sets its file aside with the value
named, nothing of it lands anywhere; blocks are processed in natural order (``9`` before ``10``)."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest

from calmops_dagster.errors import SchemaError
from calmops_dagster.ingest.block_data import block_keys, inspect_frame, sort_block_keys
from calmops_dagster.interfaces.cli import main
from calmops_dagster.store.metrics_store import MetricsStore


@pytest.fixture(autouse=True)
def _own_dagster_home(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # calmops run points it at CALMOPS_HOME/dagster


def write_block(block_file, path, value):
    pd.read_csv(block_file).head(120).assign(block=value).to_csv(path, index=False)
    old = time.time() - 60
    os.utime(path, (old, old))
    return path


@pytest.mark.parametrize("value", ["..", ".", ".hidden", "../x", "a/b", "a\\b", "a:b", "a+b", "a b", "é", "x" * 101])
def test_a_block_value_that_is_no_key_is_refused_by_name(demo_spec, block_files, tmp_path, value):
    path = write_block(block_files[0], tmp_path / "bad.csv", value)
    with pytest.raises(SchemaError) as caught:
        inspect_frame(path, demo_spec)
    assert caught.value.reason.startswith(f"block value(s) [{value!r}] in 'block' are not block keys: ")


@pytest.mark.parametrize("value", ["14", "-3", "2.5", "2024-01-05", "v1.2.3", "a_b-c.", "x" * 100])
def test_block_values_that_are_keys_are_accepted(demo_spec, block_files, tmp_path, value):
    _frame, keys = inspect_frame(write_block(block_files[0], tmp_path / "good.csv", value), demo_spec)
    assert set(keys) == {value}


def test_a_time_of_day_is_keyed_without_colons():
    times = pd.Series(pd.to_datetime(["2024-01-05 00:00:00", "2024-01-05 10:30:00"]))
    assert list(block_keys(times)) == ["2024-01-05", "2024-01-05T10-30-00"]


@pytest.mark.parametrize(("keys", "order"), [
    (["10", "9", "1"], ["1", "9", "10"]),
    (["10", "-1", "2.5"], ["-1", "2.5", "10"]),
    (["10", "a", "9"], ["9", "10", "a"]),
    (["9b", "10", "9"], ["9", "9b", "10"]),
    (["b10", "b9", "a10"], ["a10", "b9", "b10"]),
    (["2024-01-10", "2024-01-09", "2023-12-31"], ["2023-12-31", "2024-01-09", "2024-01-10"]),
    (["v1.10", "v1.9", "v1.9.1"], ["v1.9", "v1.9.1", "v1.10"]),
])
def test_blocks_are_in_natural_order(keys, order):
    assert sort_block_keys(keys) == order


def test_a_file_with_a_block_value_dot_dot_is_set_aside_and_blocks_run_in_natural_order(demo_spec, home, block_files,
                                                                                        capsys):
    for value in ("10", "9", "w1"):
        write_block(block_files[0], demo_spec.data_dir / f"block_{value}.csv", value)
    write_block(block_files[1], demo_spec.data_dir / "dots.csv", "..")

    assert main(["run", "demo"]) == 0
    out = capsys.readouterr().out
    assert "demo: set aside dots.csv: block value(s) ['..'] in 'block' are not block keys: " in out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("block ")] == [
        "block 9", "block 10", "block w1"]
    incoming = home.state_dir("demo") / "incoming"
    assert sorted(p.name for p in incoming.iterdir()) == ["pieces"]  # nothing landed beside pieces/
    assert sorted(p.name for p in (incoming / "pieces").iterdir()) == ["10", "9", "w1"]
    for table in ("blocks", "data_files", "block_files", "drift_summary"):  # a Delta table's files, nothing else
        names = {p.name for p in (home.metrics_dir / table).iterdir()}
        assert {n for n in names if not n.startswith("part-")} == {"_delta_log"}, table
    blocks = MetricsStore(home.metrics_db).query("SELECT block FROM blocks WHERE pipeline = 'demo' ORDER BY block")
    assert sorted(blocks["block"]) == ["10", "9", "w1"]
