"""A home whose metric store is in Parquet segments (the release before Delta Lake) is converted, every row kept.

``tests/data/segment_home`` was written by that release's ``MetricsStore`` (``tests/data/build_segment_home.py``:
two pipelines, reruns, an emptied block, event rows, a breaker, one pipeline compacted); its ``expected.json``
holds what that release's views showed of every table and ``<table>_history``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from calmops_dagster.interfaces.cli import main
from calmops_dagster.store.metrics_store import SCHEMA, MetricsStore, views

FIXTURE = Path(__file__).parent / "data" / "segment_home"


@pytest.fixture
def old_home(tmp_path):
    home = tmp_path / "home"
    shutil.copytree(FIXTURE, home)
    return home


def shown(store: MetricsStore, expected: dict) -> dict:
    """Every view's rows, in the columns the old release had (a column added since reads as null)."""
    found = {}
    for view in views():
        rows = json.loads(store.query(f"SELECT * FROM {view} ORDER BY ALL").to_json(orient="records", date_format="iso"))
        old = set(expected[view][0]) if expected[view] else None
        found[view] = [{k: v for k, v in row.items() if old is None or k in old or v is not None} for row in rows]
    return found


def test_calmops_migrate_converts_every_row_and_history_of_a_segment_store(old_home, capsys):
    expected = json.loads((old_home / "expected.json").read_text())
    assert sum(len(rows) for rows in expected.values()) > 40
    assert main(["--home", str(old_home), "migrate"]) == 0
    out = capsys.readouterr().out
    assert "drift_results" in out and "replaced row(s) kept in drift_results_history" in out

    store = MetricsStore(old_home / "metrics.duckdb")
    assert shown(store, expected) == expected
    metrics = old_home / "metrics"
    for table in SCHEMA:  # no segment left: the Delta table, its log and _replaced.parquet
        left = {p.relative_to(metrics / table).parts[0] for p in (metrics / table).rglob("*") if p.is_file()}
        assert left <= {"_delta_log", "_replaced.parquet"} | {p.name for p in (metrics / table).glob("part-*")}, left
    assert store.breaker_state("demo").consecutive_failures == 1  # the breaker's head is kept as it was
    with duckdb.connect(str(old_home / "metrics.duckdb"), read_only=True) as con:  # the catalog is Delta's now
        assert con.execute("SELECT count(*) FROM promotions").fetchone() == (len(expected["promotions"]),)
        assert con.execute("SELECT count(*) FROM promotions_history").fetchone() == (
            len(expected["promotions_history"]),)

    assert main(["--home", str(old_home), "migrate"]) == 0
    assert "nothing to convert" in capsys.readouterr().out

    # a rerun of a converted block replaces its rows; the converted rows join its history
    store.replace_block_rows("promotions", "demo", "1", [{"decision": "rejected"}])
    assert store.query("SELECT decision FROM promotions WHERE pipeline = 'demo' AND block = '1'").values.tolist() \
        == [["rejected"]]
    history = store.query("SELECT decision FROM promotions_history WHERE pipeline = 'demo' AND block = '1'")
    assert history["decision"].tolist() == ["kept"]
    assert len(store.query("SELECT * FROM promotions")) == len(expected["promotions"])


def test_the_first_open_of_a_segment_store_converts_it(old_home):
    expected = json.loads((old_home / "expected.json").read_text())
    store = MetricsStore(old_home / "metrics.duckdb")
    assert store.query("SELECT count(*) AS n FROM drift_results")["n"].tolist() == [len(expected["drift_results"])]
    assert not list((old_home / "metrics").glob("*/_schema.parquet"))
    assert shown(store, expected) == expected
