"""The metric store's reading views: made once per process, yet every read sees the tables as they are now."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from contextlib import contextmanager

import duckdb
import pytest

from calmops_dagster.store import metrics_store
from calmops_dagster.store.metrics_store import MetricsStore
from tests.test_block_pipeline import run_pipeline

#: A statement creating a DuckDB view, and the view's name as the statement spells it (with its schema).
VIEW_CREATED = re.compile(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\s+|TEMPORARY\s+)?VIEW\s+([^\s(]+)", re.IGNORECASE)


class CountingCursor:
    """A DuckDB cursor that records the name of every view its statements create."""

    def __init__(self, cursor, made: list[str]):
        self._cursor, self._made = cursor, made

    def execute(self, sql, *args, **kwargs):
        self._made.extend(VIEW_CREATED.findall(sql))
        return self._cursor.execute(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._cursor, name)


def count_views_made(monkeypatch) -> list[str]:
    """From now on, the views the metric store makes in this process's DuckDB, in order."""
    made: list[str] = []
    real = metrics_store._memory

    @contextmanager
    def counting(where=None):
        with real(where) as cursor:
            yield CountingCursor(cursor, made)

    monkeypatch.setattr(metrics_store, "_memory", counting)
    return made


def test_a_calmops_run_makes_each_view_once(home, demo_spec, block_files, instance, monkeypatch):
    """``calmops run`` of three blocks (each block's run reads a table, writes it, reads it again) makes each
    view it reads once: not at every open of the store, nor again after the run wrote its table."""
    for path in block_files[:3]:
        shutil.copy(path, demo_spec.data_dir / path.name)
    made = count_views_made(monkeypatch)
    results = run_pipeline(home, demo_spec, instance)
    assert [r.block for r in results] == ["1", "2", "3"] and all(r.success for r in results)
    assert made, "the run read no view"
    assert [view for view, times in Counter(made).items() if times > 1] == []
    promotions = MetricsStore(home.metrics_db).query("SELECT block, decision FROM promotions ORDER BY block")
    assert promotions["block"].tolist() == ["1", "2", "3"]  # the views read what the run wrote


WRITER = """
import sys
from calmops_dagster.store.metrics_store import MetricsStore
store = MetricsStore(sys.argv[1])
store.append_rows("quarantine", [{"pipeline": "p", "file": "x.csv", "reason": "bad"}])
store.replace_block_rows("blocks", "p", "2", [{"rows": 2}])
"""


def test_a_table_another_process_creates_after_the_first_read_shows_up(tmp_path):
    """A table no one had written when this process first read it (its view: typed, no rows), then created by
    another process, shows its rows at the next read, in every scope and in the catalog file; so do the rows
    another process adds to a table this process had read."""
    store = MetricsStore(tmp_path / "metrics.duckdb")
    store.replace_block_rows("blocks", "p", "1", [{"rows": 1}])
    for pipeline in (None, "p"):
        empty = store.query("SELECT * FROM quarantine", pipeline=pipeline)
        assert empty.empty and list(empty.columns) == metrics_store.columns("quarantine")
        assert store.query("SELECT rows FROM blocks", pipeline=pipeline)["rows"].tolist() == [1]
    assert not (store.data_dir / "quarantine").exists()

    subprocess.run([sys.executable, "-c", WRITER, str(store.path)], check=True, timeout=300)

    for pipeline in (None, "p"):
        assert store.query("SELECT file FROM quarantine", pipeline=pipeline)["file"].tolist() == ["x.csv"]
        assert store.query("SELECT rows FROM blocks ORDER BY block", pipeline=pipeline)["rows"].tolist() == [1, 2]
        files, blocks = store.queries([("SELECT file FROM quarantine", []), ("SELECT count(*) AS n FROM blocks", [])],
                                      pipeline=pipeline)
        assert files["file"].tolist() == ["x.csv"] and blocks["n"].tolist() == [2]
    with duckdb.connect(str(store.path), read_only=True) as con:
        assert con.execute("SELECT file FROM quarantine").fetchall() == [("x.csv",)]
        assert con.execute("SELECT count(*) FROM blocks").fetchone() == (2,)


def test_threads_reading_while_one_writes_each_see_their_own_reads(tmp_path):
    """Threads of one process reading several pipelines' views at once (the views made once, shared) while a
    thread writes: no read fails, and each sees at least the rows written before it started."""
    store = MetricsStore(tmp_path / "metrics.duckdb")
    pipelines = ["a", "b", "c", None]
    errors: list[BaseException] = []
    written = {p: 0 for p in pipelines if p}
    lock = threading.Lock()

    def write():
        try:
            for block in range(8):
                for pipeline in written:
                    store.replace_block_rows("drift_summary", pipeline, str(block), [{"drift_share": 0.1}])
                    with lock:
                        written[pipeline] += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            errors.append(exc)

    def read(pipeline):
        try:
            for _ in range(15):
                with lock:
                    floor = sum(written.values()) if pipeline is None else written[pipeline]
                n = store.rows("SELECT count(*) AS n FROM drift_summary", pipeline=pipeline)[0]["n"]
                assert n >= floor, (pipeline, n, floor)
                store.rows("SELECT count(*) AS n FROM drift_summary_history", pipeline=pipeline)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read, args=(p,)) for p in pipelines * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert errors == []
    assert store.rows("SELECT count(*) AS n FROM drift_summary")[0]["n"] == 8 * 3


def test_a_store_under_a_folder_whose_name_needs_quoting_in_a_uri_reads_its_rows(tmp_path):
    """delta-rs gives a table's URI percent-encoded (``with%20space``); the files the views read are the real
    paths, so a home under such a folder reads its rows, through the store and through the catalog file."""
    store = MetricsStore(tmp_path / "with space and 100%" / "metrics.duckdb")
    store.replace_block_rows("blocks", "p", "1", [{"rows": 3}])
    for pipeline in (None, "p"):
        assert store.query("SELECT rows FROM blocks", pipeline=pipeline)["rows"].tolist() == [3]
    with duckdb.connect(str(store.path), read_only=True) as con:
        assert con.execute("SELECT rows FROM blocks").fetchall() == [(3,)]


def test_a_listed_file_that_is_gone_fails_the_read_rather_than_reading_as_no_rows(tmp_path):
    """A live file removed behind the store's back (as a vacuum racing a read) is an error the reader retries
    and then raises; it never makes the table read as empty."""
    store = MetricsStore(tmp_path / "metrics.duckdb")
    store.replace_block_rows("blocks", "p", "1", [{"rows": 3}])
    assert store.query("SELECT rows FROM blocks")["rows"].tolist() == [3]
    for path in (store.data_dir / "blocks").glob("*.parquet"):
        path.unlink()
    for pipeline in (None, "p"):
        with pytest.raises(duckdb.IOException, match="No files found"):
            store.query("SELECT rows FROM blocks", pipeline=pipeline)
