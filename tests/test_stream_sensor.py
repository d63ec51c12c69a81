"""Stream pipelines, the hardened file sensor and the schedule (build_sensor_context/build_schedule_context)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd
import pytest
from conftest import block_spec_dict, evaluate_file_sensor
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    SkipReason,
    build_schedule_context,
)
from dagster._core.test_utils import create_run_for_test

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.ingest import file_scan
from calmops_dagster.ingest.block_data import (
    STREAM_KEY,
    file_sha256,
    incoming_dir,
    load_stream_block,
    stream_key,
)
from calmops_dagster.ingest.file_scan import listing_fingerprint
from calmops_dagster.orchestration.headless_runs import pending_blocks, run_pending
from calmops_dagster.orchestration.ingest_registration import register_new_blocks
from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
from calmops_dagster.resources import build_resources
from calmops_dagster.sensors.file_sensor import cursor_entries
from calmops_dagster.sensors.schedules import MAX_SCHEDULED_ATTEMPTS
from calmops_dagster.spec import parse_spec, save_spec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore

log = logging.getLogger("test")


def make_stream_spec(home, data_dir, name="events", **overrides):
    raw = block_spec_dict(name, data_dir, type="stream", **overrides)
    raw.pop("block_col")
    path = home.spec_path(name)
    spec = parse_spec(raw, path)
    save_spec(spec, path)
    return spec


def stamp(path, seconds_ago):
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


def quarantine_rows(home):
    if not home.metrics_db.exists():
        return pd.DataFrame(columns=["file", "reason", "moved_to"])
    with duckdb.connect(str(home.metrics_db), read_only=True) as con:
        return con.execute("SELECT file, reason, moved_to FROM quarantine").df()


def small_frame(rng, n=20):
    return pd.DataFrame({"x1": rng.normal(size=n).round(6), "x2": rng.normal(size=n).round(6),
                         "y": rng.integers(0, 2, size=n)})


def test_stream_key_is_safe_and_names_file_and_content():
    sha = "0123456789abcdef" * 4
    assert stream_key("day 1 (copy).csv", sha) == "day_1_copy-0123456789ab"
    assert STREAM_KEY.match(stream_key("ü" * 300 + ".parquet", sha))
    assert stream_key("a.csv", sha) != stream_key("a.csv", "f" * 64)


def test_hundred_files_at_once(home, tmp_path, instance):
    """60 good, 10 duplicates by content, 15 corrupt, 15 half-written: one run request per good file
    version (the half-written ones once finished), one quarantine record per bad file."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    spec = make_stream_spec(home, data_dir, sensor={"interval_seconds": 1, "settle_seconds": 30})
    rng = np.random.default_rng(0)
    good = []
    for i in range(60):
        path = data_dir / f"good_{i:03d}.csv"
        small_frame(rng).to_csv(path, index=False)
        stamp(path, 300 - i)
        good.append(path)
    for i in range(10):  # same bytes as a good file, another name, arriving later
        path = data_dir / f"dup_{i:03d}.csv"
        shutil.copy(good[i * 5], path)
        stamp(path, 100)
    corrupt = []
    for i in range(15):
        path = data_dir / (f"bad_{i:03d}.parquet" if i % 3 == 0 else f"bad_{i:03d}.csv")
        if i % 3 == 0:
            path.write_bytes(b"not parquet " * (i + 1))  # (PAR1 without its footer would be waited for)
        elif i % 3 == 1:
            path.write_text("")
        else:
            small_frame(rng).drop(columns="y").to_csv(path, index=False)  # no target column
        stamp(path, 200)
        corrupt.append(path.name)
    finished = {}
    for i in range(15):  # still being copied: a prefix of their final bytes, modified just now
        path = data_dir / f"late_{i:03d}.csv"
        text = small_frame(rng).to_csv(index=False)
        path.write_text(text[: len(text) // 2])
        finished[path] = text

    first = evaluate_file_sensor(spec, home, instance)
    keys = [r.partition_key for r in first.run_requests]
    assert len(keys) == len(set(keys)) == 60
    assert keys == [stream_key(p.name, file_sha256(p)) for p in good]  # arrival order
    assert len({r.run_key for r in first.run_requests}) == 60
    assert instance.get_dynamic_partitions(spec.partitions_name) == keys
    bad = quarantine_rows(home)
    assert sorted(bad["file"].map(lambda f: f.rsplit("/", 1)[-1])) == sorted(corrupt)
    assert bad["moved_to"].notna().all()
    assert sorted(p.name for p in (data_dir / "quarantine").iterdir()) == sorted(corrupt)
    cursor = cursor_entries(first.cursor)[spec.name]
    assert sorted(cursor["seen"]) == sorted(p.name for p in finished)
    with duckdb.connect(str(home.metrics_db), read_only=True) as con:
        duplicates = con.execute("SELECT file, note FROM data_files WHERE status = 'duplicate'").fetchall()
    assert len(duplicates) == 10 and all(note.startswith("same content as") for _file, note in duplicates)

    for path, text in finished.items():  # the copies finish
        path.write_text(text)
        stamp(path, 60)
    settling = evaluate_file_sensor(spec, home, instance, cursor=first.cursor)
    assert not settling.run_requests  # size changed since the last look: one more tick
    done = evaluate_file_sensor(spec, home, instance, cursor=settling.cursor)
    assert sorted(r.partition_key for r in done.run_requests) == sorted(
        stream_key(p.name, file_sha256(p)) for p in finished)
    # a restarted daemon gets the stored cursor back: nothing is requested again
    restarted = evaluate_file_sensor(spec, home, instance, cursor=json.loads(json.dumps(done.cursor)))
    assert not restarted.run_requests and isinstance(restarted.skip_reason, SkipReason)
    assert len(quarantine_rows(home)) == 15
    assert len(instance.get_dynamic_partitions(spec.partitions_name)) == 75
    assert len(list(incoming_dir(home.pipeline_dir(spec.name)).glob("*.csv"))) == 75


def run_pipeline(home, spec, instance):
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    metrics, models = MetricsStore(home.metrics_db), ModelStore(home.models_dir(spec.name))
    register_new_blocks(instance, spec, metrics, models, log)
    return run_pending(instance, spec, defs.resolve_job_def(job_name(spec)), metrics)


def test_stream_pipeline_changed_file_is_a_new_partition_and_old_key_keeps_old_content(home, tmp_path, instance):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    spec = make_stream_spec(home, data_dir)
    frame = make_drifting_blocks(n_blocks=3, rows_per_block=200, drift_at=3, seed=3)
    # names in reverse of arrival: the partitions follow arrival (mtime), not names
    for age, (block, rows) in zip((300, 200, 100), frame.groupby("block"), strict=True):
        path = data_dir / f"part_{9 - block}.csv"
        rows.drop(columns="block").to_csv(path, index=False)
        stamp(path, age)
    results = run_pipeline(home, spec, instance)
    assert [r.block.split("-")[0] for r in results] == ["part_8", "part_7", "part_6"]
    assert all(r.success for r in results), [r.summary for r in results]
    old_key = results[0].block

    changed = data_dir / "part_8.csv"
    frame[frame["block"] == 3].drop(columns="block").head(150).to_csv(changed, index=False)
    stamp(changed, 50)
    again = run_pipeline(home, spec, instance)
    assert len(again) == 1 and again[0].success and again[0].block.startswith("part_8-")
    assert again[0].block != old_key
    store = incoming_dir(home.pipeline_dir(spec.name))
    assert len(load_stream_block(spec, old_key, store).frame) == 200  # the old version, unchanged
    assert len(load_stream_block(spec, again[0].block, store).frame) == 150
    with duckdb.connect(str(home.metrics_db), read_only=True) as con:
        rows = dict(con.execute("SELECT block, rows FROM blocks").fetchall())
    assert rows[old_key] == 200 and rows[again[0].block] == 150 and len(rows) == 4
    assert run_pipeline(home, spec, instance) == []  # nothing new, nothing run twice

    stored = store / f"{old_key}.csv"  # a tampered store copy is refused, never silently used
    stored.write_text(stored.read_text().replace("1", "2", 1))
    with pytest.raises(Exception, match="no longer matches"):
        load_stream_block(spec, old_key, store)


def test_read_only_folder_records_quarantine_once(demo_spec, home, instance, monkeypatch):
    bad = demo_spec.data_dir / "broken.csv"
    bad.write_text("x1,x2\n1,2\n")  # no target, no block column
    stamp(bad, 60)

    def refuse(*_args, **_kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(file_scan.shutil, "move", refuse)
    result = evaluate_file_sensor(demo_spec, home, instance)
    assert not result.run_requests and bad.is_file()
    rows = quarantine_rows(home)
    assert len(rows) == 1 and rows["moved_to"].isna().all() and "missing column" in rows["reason"][0]
    # cursor-less scans (`calmops run`) see the file again and again: it is recorded once
    metrics, models = MetricsStore(home.metrics_db), ModelStore(home.models_dir("demo"))
    for _ in range(2):
        register_new_blocks(instance, demo_spec, metrics, models, log)
    assert len(quarantine_rows(home)) == 1


def test_cursor_stays_small_and_removed_files_content_is_still_known(demo_spec, home, block_files, instance):
    target = demo_spec.data_dir / block_files[0].name
    shutil.copy(block_files[0], target)
    stamp(target, 60)
    first = evaluate_file_sensor(demo_spec, home, instance)
    cursor = json.loads(first.cursor)["pipelines"][demo_spec.name]  # the file index lives in DuckDB, not here
    assert cursor.pop("listing") == listing_fingerprint(demo_spec) and cursor.pop("looked") > 0
    assert cursor == {"seq": 1}
    target.unlink()
    gone = evaluate_file_sensor(demo_spec, home, instance, cursor=first.cursor)
    cursor = json.loads(gone.cursor)["pipelines"][demo_spec.name]
    assert len(cursor.pop("listing")) == 16 and cursor.pop("looked") > 0 and cursor == {"seq": 1}
    shutil.copy(block_files[0], demo_spec.data_dir / "back_again.csv")
    stamp(demo_spec.data_dir / "back_again.csv", 60)
    back = evaluate_file_sensor(demo_spec, home, instance, cursor=gone.cursor)
    assert not back.run_requests


def test_schedule_requests_every_pending_block_in_order(home, tmp_path, block_files):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = home.spec_path("sched")
    spec = parse_spec(block_spec_dict("sched", data_dir, schedule={"type": "interval", "params": {"minutes": 10}}),
                      path)
    save_spec(spec, path)
    schedule = build_pipeline_definitions(spec).schedules[0]
    assert schedule.cron_schedule == "*/10 * * * *"
    tick = datetime(2026, 1, 1, 12, 10, tzinfo=UTC)
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:  # schedules need an instance ref
        resources = {k: v for k, v in build_resources(home).items() if k in ("home", "metrics")}

        def evaluate():
            """One tick; the context is closed after it (it opens its own instance from the instance's ref,
            which would otherwise be disposed at some later garbage collection, in another test)."""
            with build_schedule_context(instance=instance, scheduled_execution_time=tick,
                                        resources=resources) as context:
                return schedule(context)

        assert isinstance(evaluate(), SkipReason)
        for file in block_files[:3]:
            stamp(shutil.copy(file, data_dir), 60)
        requests = evaluate()  # the schedule ingests data_dir itself, as the sensor does
        assert [r.partition_key for r in requests] == ["1", "2", "3"]
        assert all(r.tags["calmops/pipeline"] == "sched" for r in requests)
        assert len({r.run_key for r in requests}) == 3
        assert pending_blocks(instance, spec) == ["1", "2", "3"]

        for _ in range(MAX_SCHEDULED_ATTEMPTS):  # block 2 keeps failing: the schedule stops asking for it
            create_run_for_test(instance, job_name=job_name(spec), status=DagsterRunStatus.FAILURE,
                                tags={"calmops/pipeline": "sched", "dagster/partition": "2"})
        requests = evaluate()
        assert [r.partition_key for r in requests] == ["1", "3"]
        assert pending_blocks(instance, spec) == ["1", "2", "3"]  # still pending for calmops relaunch / run


def test_stream_window_mode_learns_from_the_files_that_arrived_before(home, tmp_path, instance):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    spec = make_stream_spec(home, data_dir, retrain_mode="window", retrain={"window_blocks": 3},
                            drift={"decision_rule": "drift"})
    frame = make_drifting_blocks(n_blocks=4, rows_per_block=200, drift_at=4, seed=3)
    # names sort against arrival: a window by name would pick the wrong files
    for age, (block, rows) in zip((400, 300, 200, 100), frame.groupby("block"), strict=True):
        path = data_dir / f"part_{9 - block}.csv"
        rows.drop(columns="block").to_csv(path, index=False)
        stamp(path, age)
    results = run_pipeline(home, spec, instance)
    assert all(r.success for r in results), [r.summary for r in results]
    keys = [r.block for r in results]
    store = ModelStore(home.models_dir(spec.name))
    drifted = [store.manifest(v) for v in store.versions() if store.manifest(v)["trained_on_blocks"] == [keys[3]]]
    assert len(drifted) == 1, "the drifted last file must have been retrained on"
    assert drifted[0]["history_blocks"] == keys[1:3]  # the two files that arrived just before, oldest first
    assert len(store.reference(store.versions()[-1])) > 200  # trained on more than the block's own rows
