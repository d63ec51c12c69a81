"""A metric table that cannot be used as it is: one line naming the table and what to do, no traceback,
nothing half-committed. A table written by a newer Delta version, a damaged commit file, a bucket gone."""

from __future__ import annotations

import json
import uuid

import pytest

from calmops_dagster.errors import StoreUnavailableError
from calmops_dagster.interfaces.cli import main
from calmops_dagster.store import delta_tables, metrics_store
from calmops_dagster.store.delta_tables import MetricTableError
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.storage import StoragePath
from tests.moto_s3 import RestartableS3


def fresh_process_view(store: MetricsStore) -> None:
    """Forget what this process knows of the tables, as a new process would."""
    delta_tables.forget_tables()
    metrics_store._TABLES_SEEN.clear()
    metrics_store._READY.clear()


@pytest.fixture
def store(tmp_path):
    store = MetricsStore(tmp_path / "metrics.duckdb")
    store.replace_block_rows("promotions", "demo", "1", [{"decision": "kept"}])
    return store


def one_line_error(capsys, *args) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return code, err


def test_a_table_written_by_a_newer_delta_version_is_named_with_what_to_do(store, tmp_path, capsys):
    log = store.data_dir / "promotions" / "_delta_log"
    (log / "00000000000000000002.json").write_text(
        json.dumps({"protocol": {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": ["fromTheFuture"],
                                 "writerFeatures": ["fromTheFuture"]}}) + "\n"
        + json.dumps({"commitInfo": {"timestamp": 1}}) + "\n")
    fresh_process_view(store)
    code, err = one_line_error(capsys, "--home", str(tmp_path), "sql", "SELECT * FROM promotions")
    assert code == 2
    assert "metric table promotions" in err and "newer Delta Lake version" in err and "upgrade" in err
    with pytest.raises(MetricTableError, match="promotions"):
        store.replace_block_rows("promotions", "demo", "2", [{"decision": "kept"}])
    assert max(p.name for p in log.glob("*.json")) == "00000000000000000002.json"  # nothing committed


def test_a_damaged_commit_file_is_named_with_what_to_do(store, tmp_path, capsys):
    store.replace_block_rows("promotions", "demo", "2", [{"decision": "kept"}])
    newest = store.data_dir / "promotions" / "_delta_log" / "00000000000000000002.json"
    good = newest.read_bytes()
    newest.write_bytes(good[: len(good) // 2])  # cut short
    fresh_process_view(store)
    code, err = one_line_error(capsys, "--home", str(tmp_path), "sql", "SELECT * FROM promotions")
    assert code == 2
    assert "metric table promotions" in err and "_delta_log" in err and "restore" in err
    newest.write_bytes(good)  # restored: everything is there again
    fresh_process_view(store)
    assert store.query("SELECT block FROM promotions ORDER BY block")["block"].tolist() == ["1", "2"]


def test_a_bucket_that_vanishes_between_writes_is_named_with_the_table(tmp_path, monkeypatch, capsys):
    with RestartableS3("vanishing-bucket") as s3:
        for key, value in s3.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("CALMOPS_STORAGE_URL", f"s3://vanishing-bucket/{uuid.uuid4().hex}")
        store = MetricsStore(tmp_path / "metrics.duckdb")
        assert isinstance(store.data_dir, StoragePath)
        store.replace_block_rows("promotions", "demo", "1", [{"decision": "kept"}])
        s3.stop()
        with pytest.raises(StoreUnavailableError, match=r"^object store s3://vanishing-bucket/.*metric table "
                                                        r"promotions") as failed:
            store.replace_block_rows("promotions", "demo", "2", [{"decision": "kept"}])
        assert "\n" not in str(failed.value)
