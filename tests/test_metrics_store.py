"""The metric tables as Delta Lake tables: a block replaced in one commit, history, no lock, compaction, sql."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import duckdb
import pandas as pd
import pytest

from calmops_dagster.errors import CalmOpsError
from calmops_dagster.interfaces.cli import main
from calmops_dagster.store import delta_tables, metrics_store
from calmops_dagster.store.metrics_store import APPEND_ONLY, SCHEMA, MetricsStore, columns, key_of


@pytest.fixture
def store(tmp_path):
    return MetricsStore(tmp_path / "metrics.duckdb")


def drift_rows(n, p=0.5):
    return [{"feature": f"f{i}", "test": "ks", "p_value": p} for i in range(n)]


def test_replacing_a_block_shows_only_the_newest_write_and_never_doubles(store):
    store.replace_block_rows("drift_results", "a", "1", drift_rows(3, 0.1))
    store.replace_block_rows("drift_results", "a", "2", drift_rows(2, 0.2))
    store.replace_block_rows("drift_results", "a", "1", drift_rows(4, 0.3))
    frame = store.query("SELECT block, p_value FROM drift_results ORDER BY block")
    assert list(frame["block"]) == ["1"] * 4 + ["2"] * 2
    assert set(frame[frame.block == "1"]["p_value"]) == {0.3}
    # replacing by nothing empties the block (a tombstone), other blocks untouched
    store.replace_block_rows("drift_results", "a", "1", [])
    assert list(store.query("SELECT block FROM drift_results")["block"]) == ["2", "2"]
    store.replace_block_rows("drift_results", "a", "1", drift_rows(1, 0.4))
    assert len(store.query("SELECT * FROM drift_results WHERE block = '1'")) == 1


def test_replaced_rows_stay_readable_in_the_history_view(store):
    store.replace_block_rows("drift_results", "a", "1", drift_rows(2, 0.1))
    store.replace_block_rows("drift_results", "a", "2", drift_rows(1, 0.2))
    store.replace_block_rows("drift_results", "a", "1", drift_rows(3, 0.3))
    store.replace_block_rows("drift_results", "a", "1", [])
    history = store.query("SELECT block, p_value, replaced_at FROM drift_results_history ORDER BY replaced_at")
    assert history[["block", "p_value"]].values.tolist() == [["1", 0.1]] * 2 + [["1", 0.3]] * 3
    assert history["replaced_at"].is_monotonic_increasing and history["replaced_at"].notna().all()
    assert list(store.query("SELECT * FROM drift_results_history LIMIT 0").columns) == [
        *columns("drift_results"), "replaced_at"]
    store.compact()
    assert len(store.query("SELECT * FROM drift_results_history")) == 5


def test_performance_rows_are_replaced_per_evaluated_on(store):
    store.replace_block_rows("performance", "a", "1", [{"metric": "acc", "value": 0.5}], scope={"evaluated_on": "block"})
    store.replace_block_rows("performance", "a", "1", [{"metric": "acc", "value": 0.6}],
                             scope={"evaluated_on": "eval_split"})
    store.replace_block_rows("performance", "a", "1", [{"metric": "acc", "value": 0.7}],
                             scope={"evaluated_on": "eval_split"})
    frame = store.query("SELECT evaluated_on, value FROM performance ORDER BY evaluated_on")
    assert frame.values.tolist() == [["block", 0.5], ["eval_split", 0.7]]
    with pytest.raises(ValueError, match="evaluated_on"):
        store.replace_block_rows("performance", "a", "1", [{"metric": "acc", "value": 0.1}])
    with pytest.raises(ValueError, match="replace_block_rows"):
        store.append_rows("promotions", [{"pipeline": "a", "block": "1"}])


def test_every_table_has_a_key_or_is_an_event_log():
    for table in SCHEMA:
        assert table in APPEND_ONLY or set(key_of(table)) <= set(columns(table)), table


def test_tables_keep_their_names_and_columns_in_the_catalog_file(store):
    store.replace_block_rows("promotions", "a", "1", [{"decision": "promote", "reason": "first model"}])
    with duckdb.connect(str(store.path), read_only=True) as con:
        for table in SCHEMA:
            assert [d[0] for d in con.execute(f"SELECT * FROM {table} LIMIT 0").description] == columns(table)
        assert con.execute("SELECT count(*) FROM promotions_history").fetchone() == (0,)
        assert con.execute("SELECT decision FROM promotions").fetchall() == [("promote",)]
    typed = store.query("SELECT * FROM blocks")
    assert list(typed.columns) == columns("blocks") and len(typed) == 0


READER = """
import pathlib, sys
from calmops_dagster.store.metrics_store import MetricsStore
store, stop, failures, reads = MetricsStore(sys.argv[1]), pathlib.Path(sys.argv[2]), 0, 0
while not stop.exists():  # read until the writers are done
    try:
        store.query("SELECT count(*) FROM drift_results")
        reads += 1
    except Exception as exc:
        failures += 1
        print(exc, file=sys.stderr)
    if reads == 1:
        print("reading", flush=True)
print(reads, failures)
"""

WRITER = """
import sys
import time
from calmops_dagster.store.metrics_store import MetricsStore
store = MetricsStore(sys.argv[1])
for block in range(int(sys.argv[3])):
    store.replace_block_rows("drift_results", sys.argv[2], str(block),
                             [{"feature": f"f{i}", "test": "ks", "p_value": i / 10} for i in range(10)])
"""


def test_readers_never_fail_while_writers_write(store, tmp_path):
    """Three writer processes and a reader process at once: every read succeeds, every row arrives, and an
    analyst's connection held open on the catalog file blocks nobody. The reader reads from before the
    writers start until after they end."""
    store.replace_block_rows("drift_results", "x", "0", drift_rows(1))  # catalog exists
    analyst = duckdb.connect(str(store.path), read_only=True)
    stop = tmp_path / "writers-done"
    try:
        reader = subprocess.Popen([sys.executable, "-c", READER, str(store.path), str(stop)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        assert reader.stdout.readline() == "reading\n", reader.communicate(timeout=300)
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(store.path), name, "15"])
                   for name in ("a", "b", "c")]
        assert [w.wait(timeout=300) for w in writers] == [0, 0, 0]
        stop.touch()
        out, err = reader.communicate(timeout=300)
        reads, failures = map(int, out.split())
        assert failures == 0, err
        assert reads > 1  # at least one read after the writers started
        counts = dict(analyst.execute("SELECT pipeline, count(*) FROM drift_results GROUP BY 1").fetchall())
    finally:
        analyst.close()
    assert counts == {"x": 1, "a": 150, "b": 150, "c": 150}


def test_compaction_merges_files_and_keeps_tables_and_history(store):
    for round_ in range(3):
        for block in ("1", "2"):
            store.replace_block_rows("drift_results", "a", block, drift_rows(2, round_ / 10))
    store.replace_block_rows("drift_results", "b", "1", drift_rows(1))
    store.append_rows("quarantine", [{"pipeline": "a", "file": f"{i}.csv", "reason": "bad"} for i in range(3)])
    store.append_rows("quarantine", [{"pipeline": "a", "file": "3.csv", "reason": "bad"}])
    views = ("drift_results", "quarantine", "drift_results_history")
    before = {v: store.query(f"SELECT * FROM {v} ORDER BY ALL") for v in views}
    assert len(before["drift_results_history"]) == 8  # two earlier writes of two blocks, two rows each

    result = store.compact("a")
    assert result["drift_results"] == (3, 1) and result["quarantine"] == (2, 1)
    for view, frame in before.items():
        pd.testing.assert_frame_equal(store.query(f"SELECT * FROM {view} ORDER BY ALL"), frame)
    with duckdb.connect(str(store.path), read_only=True) as con:  # the catalog reads the log too
        assert con.execute("SELECT count(*) FROM drift_results_history").fetchone() == (8,)
        assert con.execute("SELECT count(*) FROM drift_results").fetchone() == (5,)

    store.replace_block_rows("drift_results", "a", "1", drift_rows(1, 0.9))  # a write after compaction wins
    assert store.query("SELECT p_value FROM drift_results WHERE pipeline = 'a' AND block = '1'").values.tolist() \
        == [[0.9]]
    assert len(store.query("SELECT * FROM drift_results_history")) == 10  # the two it replaced, merged or not
    assert len(store.query("SELECT * FROM drift_results")) == 4


def test_vacuum_keeps_the_history_of_the_retention_and_drops_older(store, monkeypatch):
    store.replace_block_rows("drift_results", "a", "1", drift_rows(2, 0.1))
    store.replace_block_rows("drift_results", "a", "1", drift_rows(1, 0.2))
    store.compact(days=1)
    assert len(store.query("SELECT * FROM drift_results_history")) == 2
    store.compact(days=1 / 24 / 3600 / 1000)  # a millisecond: the replaced files go
    monkeypatch.setenv("CALMOPS_METRICS_RETENTION_DAYS", str(1 / 24 / 3600 / 1000))
    assert len(store.query("SELECT * FROM drift_results_history")) == 0
    assert store.query("SELECT p_value FROM drift_results").values.tolist() == [[0.2]]


def test_a_query_for_one_pipeline_reads_only_its_files_and_answers_as_the_whole_store(store, monkeypatch):
    """``pipeline=``: the same rows for that pipeline, its history too, typed columns when it has no rows,
    and no file of another pipeline opened (the files' statistics in the Delta log say which may hold it)."""
    for pipeline in ("a", "b", "c d/é"):
        for block in ("1", "2"):
            store.replace_block_rows("drift_results", pipeline, block, drift_rows(2, 0.1))
        store.replace_block_rows("drift_results", pipeline, "1", drift_rows(3, 0.2))
    store.append_rows("quarantine", [{"pipeline": "c d/é", "file": "x.csv", "reason": "bad"}])
    for pipeline in ("a", "c d/é"):
        for sql in ("SELECT * FROM drift_results WHERE pipeline = ? ORDER BY ALL",
                    "SELECT * FROM drift_results_history WHERE pipeline = ? ORDER BY ALL",
                    "SELECT * FROM quarantine WHERE pipeline = ? ORDER BY ALL"):
            pd.testing.assert_frame_equal(store.query(sql, [pipeline], pipeline=pipeline), store.query(sql, [pipeline]))
    assert set(store.query("SELECT pipeline FROM drift_results", pipeline="a")["pipeline"]) == {"a"}
    empty = store.query("SELECT * FROM drift_results", pipeline="never-ran")
    assert empty.empty and list(empty.columns) == columns("drift_results")

    read = []
    real = delta_tables.live_file_facts
    monkeypatch.setattr(delta_tables, "live_file_facts", lambda table, pipeline=None: read.append(
        (pipeline, real(table, pipeline))) or read[-1][1])
    store.rows("SELECT count(*) AS n FROM drift_results WHERE pipeline = ?", ["a"], pipeline="a")
    (asked, listed), = read
    everything = real(store._open("drift_results"))
    assert asked == "a" and len(listed) == 2 and len(everything) == 6 and set(listed) < set(everything)


def test_a_database_of_the_single_file_design_is_migrated(tmp_path):
    path = tmp_path / "metrics.duckdb"
    with duckdb.connect(str(path)) as con:
        for table, cols in SCHEMA.items():
            con.execute(f"CREATE TABLE {table} ({cols})")
        con.execute("INSERT INTO promotions (pipeline, block, decision) VALUES ('a', '1', 'promote'), "
                    "('a', '2', 'keep'), ('b', '1', 'promote')")
        con.execute("INSERT INTO quarantine (pipeline, file) VALUES ('a', 'x.csv')")
    store = MetricsStore(path)
    store.replace_block_rows("promotions", "a", "2", [{"decision": "reject"}])
    frame = store.query("SELECT pipeline, block, decision FROM promotions ORDER BY pipeline, block")
    assert frame.values.tolist() == [["a", "1", "promote"], ["a", "2", "reject"], ["b", "1", "promote"]]
    assert len(store.query("SELECT * FROM quarantine")) == 1
    assert store.query("SELECT block, decision FROM promotions ORDER BY block", pipeline="a").values.tolist() == [
        ["1", "promote"], ["2", "reject"]]
    with duckdb.connect(str(path), read_only=True) as con:
        kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall())
    assert {kinds[t] for t in SCHEMA} == {"VIEW"}

    store.delete_pipeline_rows("a")
    assert store.query("SELECT pipeline, block FROM promotions").values.tolist() == [["b", "1"]]
    assert len(store.query("SELECT * FROM quarantine")) == 0


def test_breaker_update_counts_a_run_once(store):
    from calmops_dagster.store.breaker_state import BreakerState

    def fail(state):
        return BreakerState(status="closed", consecutive_failures=state.consecutive_failures + 1,
                            last_reason="boom"), "failure"

    assert store.update_breaker("a", fail, run_id="r1")[1] == "failure"
    assert store.update_breaker("a", fail, run_id="r1")[1] is None
    assert store.update_breaker("a", fail, run_id="r2")[0].consecutive_failures == 2
    assert store.breaker_state("a").consecutive_failures == 2
    assert len(store.query("SELECT * FROM breaker_state")) == 1
    assert store.query("SELECT run_id FROM breaker_events ORDER BY event_at")["run_id"].tolist() == ["r1", "r2"]


def test_queries_on_one_connection_answer_as_one_query_each(store):
    store.replace_block_rows("drift_results", "a", "1", drift_rows(3))
    store.replace_block_rows("promotions", "a", "1", [{"decision": "promote"}])
    statements = [("SELECT feature, p_value FROM drift_results WHERE pipeline = ? ORDER BY feature", ["a"]),
                  ("SELECT block, decision FROM promotions WHERE pipeline = ?", ["a"])]
    together = store.queries(statements, pipeline="a")
    for frame, (sql, params) in zip(together, statements, strict=True):
        pd.testing.assert_frame_equal(frame, store.query(sql, params, pipeline="a"))
    assert len(together[0]) == 3 and together[1].values.tolist() == [["1", "promote"]]


def test_a_breaker_never_changed_is_closed_without_a_query(store, monkeypatch):
    from calmops_dagster.store.breaker_state import BreakerState

    store.update_breaker("a", lambda state: (state, "reset"))  # another pipeline's breaker has rows

    def no_query(*args, **kwargs):
        raise AssertionError("queried")

    monkeypatch.setattr(store, "rows", no_query)
    monkeypatch.setattr(store, "query", no_query)
    assert store.breaker_state("never_changed") == BreakerState()


def test_calmops_sql_prints_rows_and_refuses_anything_but_one_select(tmp_path, capsys):
    store = MetricsStore(tmp_path / "metrics.duckdb")
    store.replace_block_rows("promotions", "demo", "1", [{"decision": "promote", "reason": "first model"}])
    assert main(["--home", str(tmp_path), "sql", "SELECT block, decision FROM promotions", "--format", "csv"]) == 0
    assert capsys.readouterr().out == "block,decision\n1,promote\n"
    for statement in ("COPY promotions TO 'out.csv'", "DROP VIEW promotions", "SELECT 1; SELECT 2",
                      "CREATE TABLE t AS SELECT 1"):
        with pytest.raises(CalmOpsError, match="exactly one SELECT"):
            store.read_only_query(statement)
    assert main(["--home", str(tmp_path), "sql", "SELECT nope FROM promotions"]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


def test_a_table_is_created_by_its_first_write_and_the_catalog_shows_every_table_before(store):
    """Reading a store creates no table, writing one creates that one; a plain DuckDB client sees every table
    and history view with its columns, empty, and a table's rows as soon as it is written (catalog unchanged)."""
    assert store.query("SELECT count(*) AS n FROM blocks")["n"].tolist() == [0]
    assert not any((store.data_dir / table).exists() for table in SCHEMA)
    store.append_rows("alerts", [{"pipeline": "p", "event": "drift"}])
    assert sorted(p.name for p in store.data_dir.iterdir() if p.is_dir()) == ["alerts"]
    with duckdb.connect(str(store.path), read_only=True) as con:
        for view in metrics_store.views():
            described = con.execute(f"DESCRIBE {view}").fetchall()
            table = view.removesuffix(metrics_store.HISTORY)
            expected = columns(table) + (["replaced_at"] if view != table else [])
            assert [row[0] for row in described] == expected, view
            assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (int(view == "alerts"),), view
        built = os.stat(store.path).st_mtime_ns
    store.replace_block_rows("blocks", "p", "1", [{"rows": 3}])
    store.replace_block_rows("blocks", "p", "1", [{"rows": 4}])
    assert sorted(p.name for p in store.data_dir.iterdir() if p.is_dir()) == ["alerts", "blocks"]
    with duckdb.connect(str(store.path), read_only=True) as con:
        assert con.execute("SELECT block, rows FROM blocks").fetchall() == [("1", 4)]
        assert con.execute("SELECT rows FROM blocks_history").fetchall() == [(3,)]
        assert con.execute("SELECT count(*) FROM promotions").fetchone() == (0,)
    assert os.stat(store.path).st_mtime_ns == built


def test_outdated_replaced_files_are_found_together_and_rewritten(store, monkeypatch):
    store.replace_block_rows("blocks", "p", "1", [{"rows": 3}])
    pd.DataFrame({"pipeline": ["old"]}).to_parquet(store.data_dir / "blocks" / "_replaced.parquet")  # outdated
    store.write_replaced("promotions", None)  # current
    rewritten = []
    monkeypatch.setattr(MetricsStore, "write_replaced", lambda self, table, frame: rewritten.append(table))
    metrics_store._TABLES_SEEN.clear()
    MetricsStore(store.path, data_dir=store.data_dir)._ensure_tables()
    assert rewritten == []  # _tables.json says every table was made for these columns: nothing is listed
    monkeypatch.setitem(SCHEMA, "blocks", SCHEMA["blocks"] + ", new_column VARCHAR")  # the columns change
    metrics_store._TABLES_SEEN.clear()
    MetricsStore(store.path, data_dir=store.data_dir)._ensure_tables()
    assert rewritten == ["blocks"]


def test_log_entries_past_retention_are_removed_by_compact_not_by_each_commit(store):
    """A commit skips delta-rs's expired-log cleanup (it lists the whole log, on S3 a request per commit);
    ``calmops compact`` removes the log entries older than the retention instead."""
    for p in (0.1, 0.2, 0.3):
        store.replace_block_rows("drift_results", "a", "1", drift_rows(1, p))
    log = store.table_location("drift_results") / "_delta_log"
    store._open("drift_results").create_checkpoint()  # entries before a checkpoint are the removable ones
    old = time.time() - 400 * 86_400  # past the default retention (90 days)
    for entry in log.glob("0*"):  # every commit and checkpoint
        os.utime(entry, (old, old))
    delta_tables.forget_tables()  # delta-rs keeps the log's ages as it listed them: open it again
    oldest = min(log.glob("*.json")).name

    store.replace_block_rows("drift_results", "a", "1", drift_rows(1, 0.4))
    assert (log / oldest).exists()
    store.compact()
    assert not (log / oldest).exists()
    assert store.query("SELECT p_value FROM drift_results").values.tolist() == [[0.4]]


def test_writers_racing_to_create_a_table_by_replacing_one_block_leave_one_writers_rows(tmp_path):
    """Four processes replace the same block of a table no one has written, at once: the first write creates
    the table, the others replace its rows (none is appended beside them), so the block has one writer's rows."""
    code = ("import sys, time; import deltalake, pandas; from calmops_dagster.store.metrics_store import MetricsStore; "
            "store = MetricsStore(sys.argv[1]); store._ensure_ready(); time.sleep(max(0, float(sys.argv[3]) - time.time())); "
            "store.replace_block_rows('drift_results', 'p', '1', "
            "[{'feature': f'{sys.argv[2]}{i}', 'test': 'ks'} for i in range(3)])")
    MetricsStore(tmp_path / "metrics.duckdb")._ensure_ready()
    start = str(time.time() + 20)  # after every writer's imports: the four writes at one moment
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "metrics.duckdb"), name, start])
               for name in "abcd"]
    assert [w.wait(timeout=300) for w in writers] == [0, 0, 0, 0]
    features = MetricsStore(tmp_path / "metrics.duckdb").query("SELECT feature FROM drift_results")["feature"]
    assert len(features) == 3 and len({f[0] for f in features}) == 1, list(features)


def test_writers_racing_to_create_a_table_all_open_the_one_created(tmp_path):
    """Four processes create the same missing table at once (an empty write each, ``mode="error"``): one
    commits version 0, the others open it, and every one's rows arrive."""
    code = ("import sys; import pyarrow as pa; from calmops_dagster.store import delta_tables; "
            "from calmops_dagster.store.metrics_store import _table_configuration, _types; "
            "t = delta_tables.open_table(sys.argv[1], delta_tables.delta_schema(_types('quarantine')), "
            "_table_configuration()); "
            "delta_tables.commit(t, pa.table({'pipeline': [sys.argv[2]], 'file': ['f'], 'reason': ['r']}))")
    location = tmp_path / "quarantine"
    writers = [subprocess.Popen([sys.executable, "-c", code, str(location), name]) for name in "abcd"]
    assert [w.wait(timeout=300) for w in writers] == [0, 0, 0, 0]
    table = delta_tables.open_table(location)
    assert sorted(table.to_pyarrow_table().column("pipeline").to_pylist()) == list("abcd")
    # one creation and four appends; under load, a creator whose empty write loses the race may still commit it
    # after the winner's (delta-rs retries it as the next version): an empty commit of the same schema, no rows
    assert 4 <= table.version() <= 7
    assert [field.name for field in table.schema().fields] == columns("quarantine")
