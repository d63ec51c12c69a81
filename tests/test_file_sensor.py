"""The file sensor, evaluated with build_sensor_context on an ephemeral instance."""

from __future__ import annotations

import os
import shutil
import time

import duckdb
import pytest
from conftest import block_spec_dict, evaluate_file_sensor

from calmops_dagster.ingest import file_scan
from calmops_dagster.ingest.block_data import candidate_files
from calmops_dagster.ingest.file_scan import listing_fingerprint, settle_wait
from calmops_dagster.ingest.ingest_record import ingest_data_dir
from calmops_dagster.orchestration.ingest_registration import pipeline_dir
from calmops_dagster.orchestration.pipeline_defs import build_job
from calmops_dagster.sensors import file_sensor
from calmops_dagster.sensors.file_sensor import build_files_sensor, cursor_entries
from calmops_dagster.spec import parse_spec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore


def age(path, seconds=60):
    """Make a file look as if it was written ``seconds`` ago (stable)."""
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_new_file_adds_partitions_and_requests_runs_once(demo_spec, home, block_files, instance):
    target = demo_spec.data_dir / block_files[0].name
    shutil.copy(block_files[0], target)
    age(target)
    first = evaluate_file_sensor(demo_spec, home, instance)
    assert [r.partition_key for r in first.run_requests] == ["1"]
    assert first.dynamic_partitions_requests[0].partition_keys == ["1"]
    assert instance.get_dynamic_partitions(demo_spec.partitions_name) == ["1"]

    again = evaluate_file_sensor(demo_spec, home, instance, cursor=first.cursor)
    assert not again.run_requests and not again.dynamic_partitions_requests

    # the same content under another name is not processed twice
    copy = demo_spec.data_dir / "copy_of_block_1.csv"
    shutil.copy(target, copy)
    age(copy)
    duplicate = evaluate_file_sensor(demo_spec, home, instance, cursor=again.cursor)
    assert not duplicate.run_requests


def test_a_tick_over_unchanged_files_reads_nothing_but_their_stat(demo_spec, home, block_files, instance,
                                                                  monkeypatch):
    target = demo_spec.data_dir / block_files[0].name
    shutil.copy(block_files[0], target)
    age(target)
    first = evaluate_file_sensor(demo_spec, home, instance)
    ingest = file_sensor.ingest_data_dir

    def no_ingest(*args, **kwargs):
        raise AssertionError("an idle tick must not scan the record or read files")

    monkeypatch.setattr(file_sensor, "ingest_data_dir", no_ingest)
    idle = evaluate_file_sensor(demo_spec, home, instance, cursor=first.cursor)
    assert not idle.run_requests
    before, after = cursor_entries(first.cursor)[demo_spec.name], cursor_entries(idle.cursor)[demo_spec.name]
    assert after.pop("looked") >= before.pop("looked") and after == before
    monkeypatch.setattr(file_sensor, "ingest_data_dir", ingest)
    second = demo_spec.data_dir / block_files[1].name  # a new file: the tick ingests it, and only it is new
    shutil.copy(block_files[1], second)
    age(second)
    assert [r.partition_key for r in evaluate_file_sensor(demo_spec, home, instance, cursor=idle.cursor)
            .run_requests] == ["2"]


class _CountedEntry:
    """A ``DirEntry`` whose ``stat`` calls are counted (its ``is_file`` reads the folder's entry, no ``stat``)."""

    def __init__(self, entry, counts):
        self._entry, self._counts = entry, counts

    def stat(self, **kwargs):
        self._counts["stat"] += 1
        return self._entry.stat(**kwargs)

    def __getattr__(self, name):
        return getattr(self._entry, name)


class _CountedScandir:
    def __init__(self, iterator, counts):
        self._iterator, self._counts = iterator, counts

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._iterator.close()

    def __iter__(self):
        return (_CountedEntry(entry, self._counts) for entry in self._iterator)


def test_a_tick_stats_each_data_file_once(demo_spec, block_files, monkeypatch):
    for source in block_files[:3]:
        shutil.copy(source, demo_spec.data_dir / source.name)
    (demo_spec.data_dir / ".hidden.csv").write_text("x\n1\n")
    (demo_spec.data_dir / "notes.txt").write_text("not data")
    (demo_spec.data_dir / "quarantine").mkdir()
    counts = {"stat": 0}
    real_stat, real_scandir = os.stat, os.scandir

    def counted_stat(*args, **kwargs):
        counts["stat"] += 1
        return real_stat(*args, **kwargs)

    monkeypatch.setattr(os, "stat", counted_stat)
    monkeypatch.setattr(os, "scandir", lambda *args: _CountedScandir(real_scandir(*args), counts))
    listing_fingerprint(demo_spec)
    assert counts["stat"] == 3  # one per data file; none for the hidden file, other suffixes, subfolders


@pytest.mark.parametrize("pattern", ["*", "*.csv", "block_[12]*", "*.CSV", "sub/*.csv", "**/*.csv"])
def test_the_data_files_are_those_pathlib_globs(demo_spec, pattern):
    folder = demo_spec.data_dir
    (folder / "sub").mkdir()
    (folder / "dir.csv").mkdir()
    for name in ["block_1.csv", "block_2.parquet", "block_3.PQ", "other.csv", ".hidden.csv", "~lock.csv",
                 "notes.txt", "sub/block_4.csv"]:
        (folder / name).write_text("x\n")
    os.symlink(folder / "other.csv", folder / "link.csv")
    spec = demo_spec.model_copy(update={"file_pattern": pattern})
    globbed = sorted(path for path in folder.glob(pattern) if path.is_file() and not path.name.startswith((".", "~"))
                     and path.suffix.lower() in {".csv", ".parquet", ".pq"})
    assert candidate_files(spec) == globbed


def test_a_scan_recorded_by_another_entry_point_is_acted_on_by_the_next_tick(demo_spec, home, block_files,
                                                                             instance):
    target = demo_spec.data_dir / block_files[0].name
    shutil.copy(block_files[0], target)
    age(target)
    first = evaluate_file_sensor(demo_spec, home, instance)
    second = demo_spec.data_dir / block_files[1].name
    shutil.copy(block_files[1], second)
    age(second)
    models = ModelStore(home.models_dir(demo_spec.name))
    ingest_data_dir(demo_spec, MetricsStore(home.metrics_db), pipeline_dir(models))  # as `calmops run` scans
    later = evaluate_file_sensor(demo_spec, home, instance, cursor=first.cursor)
    assert [r.partition_key for r in later.run_requests] == ["2"]


def test_a_scan_by_another_entry_point_of_a_file_the_sensor_saw_settling_is_acted_on(demo_spec, home,
                                                                                      block_files, instance):
    spec = with_sensor(demo_spec, settle_seconds=30)
    target = spec.data_dir / block_files[0].name
    shutil.copy(block_files[0], target)
    first = evaluate_file_sensor(spec, home, instance)  # just landed: waits to settle
    assert not first.run_requests and cursor_entries(first.cursor)["demo"]["seen"]
    age(target)
    models = ModelStore(home.models_dir(spec.name))
    ingest_data_dir(spec, MetricsStore(home.metrics_db), pipeline_dir(models))  # as `calmops run` scans
    later = evaluate_file_sensor(spec, home, instance, cursor=first.cursor)
    assert [r.partition_key for r in later.run_requests] == ["1"]


def test_a_file_unreadable_between_its_stat_and_its_read_is_read_by_the_next_tick(demo_spec, home, block_files,
                                                                                instance, monkeypatch):
    target = demo_spec.data_dir / block_files[0].name
    shutil.copy(block_files[0], target)
    age(target)
    accept = file_scan.accept_block_file

    def vanished(*args, **kwargs):
        raise FileNotFoundError(target)

    monkeypatch.setattr(file_scan, "accept_block_file", vanished)
    first = evaluate_file_sensor(demo_spec, home, instance)
    assert not first.run_requests
    monkeypatch.setattr(file_scan, "accept_block_file", accept)
    later = evaluate_file_sensor(demo_spec, home, instance, cursor=first.cursor)
    assert [r.partition_key for r in later.run_requests] == ["1"]


def test_changed_file_is_a_new_version(demo_spec, home, block_files, instance):
    target = demo_spec.data_dir / "blocks.csv"
    shutil.copy(block_files[0], target)
    age(target, 120)
    first = evaluate_file_sensor(demo_spec, home, instance)
    with open(target, "a") as handle, open(block_files[1]) as extra:
        handle.writelines(extra.readlines()[1:])  # block 2 appended to the same file
    age(target, 60)
    second = evaluate_file_sensor(demo_spec, home, instance, cursor=first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["1", "2"]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key


def test_file_still_being_written_is_not_read(demo_spec, home, block_files, instance):
    spec = demo_spec.model_copy(update={"sensor": demo_spec.sensor.model_copy(update={"settle_seconds": 30})})
    target = spec.data_dir / block_files[0].name
    target.write_text(block_files[0].read_text()[:50])  # half-written, modified just now
    waiting = evaluate_file_sensor(spec, home, instance)
    assert not waiting.run_requests
    assert cursor_entries(waiting.cursor)[spec.name]["seen"][target.name][0] == 50
    assert not (spec.data_dir / "quarantine").exists()

    shutil.copy(block_files[0], target)  # the copy finishes
    age(target)
    changed = evaluate_file_sensor(spec, home, instance, cursor=waiting.cursor)
    assert not changed.run_requests  # its size changed since the last look: wait one more tick
    done = evaluate_file_sensor(spec, home, instance, cursor=changed.cursor)
    assert [r.partition_key for r in done.run_requests] == ["1"]


def with_sensor(spec, **sensor):
    return spec.model_copy(update={"sensor": spec.sensor.model_copy(update=sensor)})


def test_settle_wait_is_the_time_until_young_files_have_settled_when_sooner_than_the_next_tick(
        demo_spec, block_files):
    spec = with_sensor(demo_spec, settle_seconds=2, interval_seconds=5)
    target = spec.data_dir / block_files[0].name
    shutil.copy(block_files[0], target)
    now = target.stat().st_mtime
    assert settle_wait(spec, now=now + 0.5) == 1.5
    assert settle_wait(spec, now=now + 2.5) == 0  # settled already
    assert settle_wait(with_sensor(spec, interval_seconds=1), now=now + 0.5) == 0  # the next tick is sooner
    assert settle_wait(with_sensor(spec, settle_seconds=30, interval_seconds=60), now=now) == 0  # too long


def test_a_file_landing_just_before_a_tick_is_read_by_that_tick(demo_spec, home, block_files, instance):
    spec = with_sensor(demo_spec, settle_seconds=1, interval_seconds=5)
    target = spec.data_dir / block_files[0].name
    shutil.copy(block_files[0], target)  # modified just now: younger than settle_seconds
    result = evaluate_file_sensor(spec, home, instance)
    assert [r.partition_key for r in result.run_requests] == ["1"]
    assert time.time() - target.stat().st_mtime >= 1


def test_unreadable_file_is_reported_by_name_and_others_processed(demo_spec, home, block_files, instance, caplog):
    good = demo_spec.data_dir / block_files[1].name
    shutil.copy(block_files[1], good)
    bad = demo_spec.data_dir / "broken.parquet"
    bad.write_bytes(b"this is not a parquet file")
    for path in (good, bad):
        age(path)
    result = evaluate_file_sensor(demo_spec, home, instance)
    assert [r.partition_key for r in result.run_requests] == ["2"]
    assert (demo_spec.data_dir / "quarantine" / "broken.parquet").is_file()
    with duckdb.connect(str(home.metrics_db), read_only=True) as con:
        rows = con.execute("SELECT file, reason FROM quarantine").fetchall()
        status = con.execute("SELECT status FROM data_files WHERE file = 'broken.parquet'").fetchall()
    assert status == [("quarantined",)]
    assert len(rows) == 1 and rows[0][0].endswith("broken.parquet") and "not a Parquet file" in rows[0][1]


def test_the_daemon_evaluates_the_sensor_at_its_first_look_an_interval_after_the_previous_tick(tmp_path):
    """Dagster's own check (``is_under_min_interval``), at the daemon's look one loop (5 s) after a tick whose
    start was stamped 10 ms after the previous look: a file sensor with a 5-s interval is due. With
    ``minimum_interval_seconds`` = the interval it would wait one more loop (a tick every 10 s)."""
    from types import SimpleNamespace

    from dagster._core.scheduler.instigation import SensorInstigatorData
    from dagster._daemon.sensor import MIN_INTERVAL_LOOP_TIME, is_under_min_interval

    raw = block_spec_dict("every_five", tmp_path, sensor={"interval_seconds": MIN_INTERVAL_LOOP_TIME})
    spec = parse_spec(raw, tmp_path / "every_five" / "pipeline.yaml")
    file_sensor = build_files_sensor([spec], [build_job(spec)])
    ticked_at = time.time() - (MIN_INTERVAL_LOOP_TIME - 0.01)
    state = SimpleNamespace(instigator_data=SensorInstigatorData(last_tick_start_timestamp=ticked_at))
    assert not is_under_min_interval(state, SimpleNamespace(min_interval_seconds=file_sensor.minimum_interval_seconds))
    assert is_under_min_interval(state, SimpleNamespace(min_interval_seconds=spec.sensor.interval_seconds))
