"""The storage seam: atomic steps on the local disk and on S3 (moto's server), and the model store on both."""

from __future__ import annotations

import json
import threading
import time
import uuid

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier

from calmops_dagster.errors import ModelIntegrityError
from calmops_dagster.store import storage
from calmops_dagster.store.model_store import CLAIM, MANIFEST, ModelStore
from calmops_dagster.store.paths import CalmOpsHome
from calmops_dagster.store.storage import (
    StorageError,
    StoragePath,
    create_exclusive,
    storage_root,
    update_atomically,
)
from tests.moto_s3 import moto_s3

BUCKET = "calmops-test"


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server for this module, its endpoint and dummy credentials in the environment."""
    with moto_s3(BUCKET) as env, pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield env


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    """A fresh storage root: a local folder, or a prefix in moto's bucket."""
    if request.param == "local":
        return tmp_path / "state"
    request.getfixturevalue("s3")
    return StoragePath("s3", f"{BUCKET}/{uuid.uuid4().hex}")


def small_model():
    X = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) % 3})
    return DummyClassifier(strategy="prior").fit(X, np.arange(20) % 2), X


def race(workers: int, target) -> list:
    """Run ``target(i)`` on ``workers`` threads released together; their results, in worker order."""
    results, start = [None] * workers, threading.Barrier(workers)

    def run(i):
        start.wait()
        results[i] = target(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_storage_url_selects_the_root(tmp_path, monkeypatch):
    monkeypatch.delenv(storage.STORAGE_URL_ENV, raising=False)
    assert storage_root(tmp_path) == tmp_path  # the default: CALMOPS_HOME itself, as before the seam
    assert storage_root(tmp_path, f"file://{tmp_path}/elsewhere") == tmp_path / "elsewhere"
    assert storage_root(tmp_path, "s3://bucket/some/prefix") == StoragePath("s3", "bucket/some/prefix")
    with pytest.raises(StorageError, match="protocol 'gs' is not supported"):
        storage_root(tmp_path, "gs://bucket/prefix")
    monkeypatch.setenv(storage.STORAGE_URL_ENV, "s3://bucket/p")
    home = CalmOpsHome(tmp_path)
    assert home.models_dir("demo") == StoragePath("s3", "bucket/p/pipelines/demo/models")
    assert home.spec_path("demo") == tmp_path / "pipelines" / "demo" / "pipeline.yaml"  # specs stay local


def test_create_exclusive_has_exactly_one_winner(root):
    target = root / "claims" / "one"
    wins = race(6, lambda i: create_exclusive(target, f"writer {i}".encode()))
    assert sum(wins) == 1
    assert target.read_bytes() == f"writer {wins.index(True)}".encode()


def test_concurrent_updates_are_never_lost(root):
    """Each writer appends to a JSON list between reading and writing it, slowly: a plain read-modify-write
    would drop updates; :func:`update_atomically` applies every one on top of the previous."""
    target = root / "counter.json"

    def append(tag):
        def change(old):
            items = json.loads(old) if old is not None else []
            time.sleep(0.01)  # widen the window between read and write
            return json.dumps([*items, tag]).encode()
        return change

    race(4, lambda i: [update_atomically(target, append(f"{i}-{n}")) for n in range(3)])
    assert sorted(json.loads(target.read_bytes())) == sorted(f"{i}-{n}" for i in range(4) for n in range(3))


def test_two_writers_racing_on_the_champion_pointer_lose_no_update(root):
    store = ModelStore(root / "models", key=None)
    model, X = small_model()
    versions = [store.save(model, X), store.save(model, X)]
    race(2, lambda i: [store.set_champion(versions[i], f"{i}-{n}", "promoted") for n in range(4)])
    history = store.champion_history()
    assert sorted(h["block"] for h in history) == sorted(f"{i}-{n}" for i in range(2) for n in range(4))
    assert store.champion_version() == history[-1]["version"]  # the pointer names the last change applied


def test_concurrent_saves_get_distinct_whole_versions(root):
    store = ModelStore(root / "models", key=None)
    model, X = small_model()
    versions = race(3, lambda i: store.save(model, X, trained_on_blocks=[str(i)]))
    assert sorted(versions) == ["v0001", "v0002", "v0003"] == store.versions()
    assert sorted(store.manifest(v)["trained_on_blocks"][0] for v in versions) == ["0", "1", "2"]
    for version in versions:
        store.load(version)  # each one's files match its own manifest


def test_an_s3_version_is_invisible_until_its_manifest_is_written(s3, monkeypatch):
    root = StoragePath("s3", f"{BUCKET}/{uuid.uuid4().hex}")
    store = ModelStore(root / "models", key=None)
    model, X = small_model()
    store.save(model, X)
    listed_during_writes = []
    real_write = StoragePath.write_bytes

    def watched_write(self, data):
        listed_during_writes.append((self.name, store.versions()))
        return real_write(self, data)

    monkeypatch.setattr(StoragePath, "write_bytes", watched_write)
    assert store.save(model, X) == "v0002"
    assert [name for name, _ in listed_during_writes] == ["model.skops", "reference.parquet", MANIFEST]
    assert all(listed == ["v0001"] for _, listed in listed_during_writes)  # the manifest is written last
    assert store.versions() == ["v0001", "v0002"]


def test_a_crashed_s3_save_leaves_no_version_and_its_number_is_not_reused(s3):
    root = StoragePath("s3", f"{BUCKET}/{uuid.uuid4().hex}")
    store = ModelStore(root / "models", key=None)
    model, X = small_model()
    assert store.save(model, X) == "v0001"
    # a writer claimed v0002 and wrote its model, then died before the manifest
    assert create_exclusive(store.root / "v0002" / CLAIM, b"crashed")
    (store.root / "v0002" / "model.skops").write_bytes(b"PK\x03\x04 half a model")
    assert store.versions() == ["v0001"]
    with pytest.raises(ModelIntegrityError, match="does not exist"):
        store.load("v0002")
    with pytest.raises(ModelIntegrityError, match="does not exist"):
        store.set_champion("v0002", "1", "promoted")
    assert store.save(model, X) == "v0003"
    assert store.versions() == ["v0001", "v0003"]


def test_metric_tables_in_s3_are_read_by_duckdb_without_httpfs(s3, tmp_path):
    """Delta tables in the bucket, read back through DuckDB views (fsspec registered, no extension): a
    block's rows replaced, never doubled; compaction keeps every row; nothing written beside the catalog but
    the catalog itself and its lock files."""
    import duckdb

    from calmops_dagster.store.metrics_store import MetricsStore

    data = StoragePath("s3", f"{BUCKET}/{uuid.uuid4().hex}/metrics")
    store = MetricsStore(tmp_path / "metrics.duckdb", data_dir=data)
    for value in (0.1, 0.2):  # the second write of block 1 replaces the first
        store.replace_block_rows("drift_results", "demo", "1", [
            {"feature": f, "test": "ks", "statistic": value, "drifted": False} for f in ("x1", "x2")])
    store.replace_block_rows("drift_results", "demo", "2", [{"feature": "x1", "test": "ks", "statistic": 0.5}])
    store.append_rows("quarantine", [{"pipeline": "demo", "file": "bad.csv", "reason": "empty"}])
    counts = "SELECT block, count(*) AS n, max(statistic) AS s FROM drift_results GROUP BY block ORDER BY block"
    assert store.query(counts).values.tolist() == [["1", 2, 0.2], ["2", 1, 0.5]]
    assert len(store.read_only_query("SELECT * FROM drift_results_history")) == 2  # the replaced rows
    assert len(store.query("SELECT * FROM quarantine")) == 1
    assert len(list((data / "drift_results" / "_delta_log").glob("*.json"))) == 4  # created, three commits

    assert store.compact("demo")["drift_results"] == (2, 1)
    assert store.query(counts).values.tolist() == [["1", 2, 0.2], ["2", 1, 0.5]]
    assert len(store.read_only_query("SELECT * FROM drift_results_history")) == 2
    assert not list(tmp_path.rglob("*.parquet"))  # every file went to the bucket
    loaded = duckdb.sql("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()
    assert ("httpfs",) not in loaded


def test_duckdb_asks_s3_about_a_metric_file_once_per_process(s3, tmp_path, monkeypatch):
    """Delta data files are written once, so what a HEAD request said about one is kept: a repeated query
    sends no HEAD at all. A ``_replaced.parquet`` this process rewrites is asked about again."""
    from calmops_dagster.store.metrics_store import REPLACED_FILE, MetricsStore

    data = StoragePath("s3", f"{BUCKET}/{uuid.uuid4().hex}/metrics")
    store = MetricsStore(tmp_path / "metrics.duckdb", data_dir=data)
    for block in ("1", "2"):
        store.replace_block_rows("drift_results", "demo", block, [{"feature": "x1", "test": "ks", "statistic": 0.1}])
    reader = storage.reader_filesystem(data)
    heads, call_s3 = [], reader._call_s3

    async def counting(method, *args, **kwargs):
        if method == "head_object":
            heads.append(kwargs["Key"])
        return await call_s3(method, *args, **kwargs)

    monkeypatch.setattr(reader, "_call_s3", counting)
    sql = "SELECT count(*) AS n FROM drift_results"
    assert store.query(sql, pipeline="demo")["n"].tolist() == [2]
    assert not [key for key in heads if "/part-" in key]  # a data file's size and time: from the Delta log
    asked = len(heads)
    for _ in range(3):
        assert store.query(sql, pipeline="demo")["n"].tolist() == [2]
    assert len(heads) == asked

    replaced = (data / "drift_results" / REPLACED_FILE).path.split("/", 1)[1]  # no bucket
    history = "SELECT count(*) AS n FROM drift_results_history"
    store.write_replaced("drift_results", None)
    assert store.query(history)["n"].tolist() == [0]
    asked = len(heads)
    store.write_replaced("drift_results", None)
    assert store.query(history)["n"].tolist() == [0]
    assert heads[asked:].count(replaced) == 1
    store.delete_pipeline_rows("demo")
    assert store.query(sql)["n"].tolist() == [0]


def test_a_query_is_retried_when_a_file_whose_info_was_kept_is_gone(s3, tmp_path, monkeypatch):
    """A vacuum elsewhere deletes a file this process read before: the file is listed, its kept info spares
    the HEAD that would have found it gone, and its GET fails. The query is tried again on a fresh listing
    and answers."""
    from calmops_dagster.store import delta_tables
    from calmops_dagster.store.metrics_store import MetricsStore

    data = StoragePath("s3", f"{BUCKET}/{uuid.uuid4().hex}/metrics")
    store = MetricsStore(tmp_path / "metrics.duckdb", data_dir=data)
    for block in ("1", "2"):
        store.replace_block_rows("drift_results", "demo", block, [{"feature": "x1", "test": "ks", "statistic": 0.2}])
    sql = "SELECT max(statistic) AS s FROM drift_results"
    assert store.query(sql, pipeline="demo")["s"].tolist() == [0.2]
    stale = delta_tables.live_file_facts(store._open("drift_results"), "demo")
    listed, live_file_facts = [], delta_tables.live_file_facts

    def stale_first(table, pipeline=None):
        listed.append(pipeline)
        return stale if len(listed) == 1 else live_file_facts(table, pipeline)

    store.compact("demo", days=1e-9)  # the two files become one; the old ones are deleted at once
    monkeypatch.setattr(delta_tables, "live_file_facts", stale_first)
    assert store.query(sql, pipeline="demo")["s"].tolist() == [0.2]
    assert len(listed) == 2  # the stale listing, then a fresh one


def _failure(state):
    """A breaker failure, with a widened window between reading the state and writing the next one."""
    from datetime import UTC, datetime

    from calmops_dagster.steps import circuit_breaker

    time.sleep(0.02)
    return circuit_breaker.on_failure(state, 100, 60, datetime.now(UTC), "boom")


def test_racing_breaker_updates_lose_no_failure_and_count_no_run_twice(root, tmp_path):
    """Two "machines" (each its own catalog and local locks) share the metric tables: each counts two
    failed runs of its own, and both report one shared run at the same moment. Every failure counts, once."""
    from calmops_dagster.store.metrics_store import MetricsStore

    stores = [MetricsStore(tmp_path / f"machine{i}" / "metrics.duckdb", data_dir=root / "metrics")
              for i in range(2)]
    runs = [["shared", f"{i}-a", f"{i}-b"] for i in range(2)]
    outcomes = race(2, lambda i: [stores[i].update_breaker("p", _failure, run_id=run) for run in runs[i]])
    assert sum(event is not None for results in outcomes for _, event in results) == 5
    state = stores[0].breaker_state("p")
    assert state.consecutive_failures == 5 and stores[1].breaker_state("p") == state
    events = stores[1].query("SELECT run_id, consecutive_failures FROM breaker_events "
                             "ORDER BY consecutive_failures")
    assert sorted(events["run_id"]) == sorted({run for mine in runs for run in mine})
    assert events["consecutive_failures"].tolist() == [1, 2, 3, 4, 5]  # each applied on top of the previous
    row = stores[0].rows("SELECT consecutive_failures FROM breaker_state WHERE pipeline = 'p'")
    assert row == [{"consecutive_failures": 5}]  # the newest row is the last transition's


def test_breaker_rows_a_dead_writer_left_unwritten_are_written_by_the_next(tmp_path, monkeypatch):
    """A writer that died between changing the breaker's head and writing its rows: the state counts its
    failure at once, and the next transition writes the missing rows (the head is storage-agnostic code, so
    the local disk stands for S3 here). A breaker with no head yet starts from its ``breaker_state`` row."""
    from calmops_dagster.store.metrics_store import BREAKER_HEADS, MetricsStore

    store = MetricsStore(tmp_path / "metrics.duckdb")
    store.update_breaker("p", _failure, run_id="r1")
    (tmp_path / "metrics" / BREAKER_HEADS / "p" / "head.json").unlink()  # as before heads existed
    write_rows = store._write_breaker_rows
    monkeypatch.setattr(store, "_write_breaker_rows", lambda *args: (_ for _ in ()).throw(OSError("died")))
    with pytest.raises(OSError, match="died"):
        store.update_breaker("p", _failure, run_id="r2")  # the head holds r2; its rows were never written
    assert store.breaker_state("p").consecutive_failures == 2
    monkeypatch.setattr(store, "_write_breaker_rows", write_rows)
    assert store.update_breaker("p", _failure, run_id="r2")[1] is None  # the head counted it already
    store.update_breaker("p", _failure, run_id="r3")
    events = store.query("SELECT run_id, consecutive_failures FROM breaker_events "
                         "ORDER BY consecutive_failures")
    assert events.values.tolist() == [["r1", 1], ["r2", 2], ["r3", 3]]
    assert store.query("SELECT consecutive_failures FROM breaker_state")["consecutive_failures"].tolist() == [3]
