"""The labels sensor's work is proportional to what changed: an idle tick stats its label files and hashes
and reads none; a tick hashes only the files that are new or whose size or mtime changed; a file touched but
not changed requests nothing; a cursor of the earlier form (file -> sha256) requests nothing after upgrade.

Reads and hashes are counted by wrapping the functions the labels module calls (never timed)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from dagster import SensorResult, build_sensor_context

from calmops_dagster.ingest import labels as labels_module
from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions
from calmops_dagster.resources import build_resources
from calmops_dagster.spec import parse_spec
from calmops_dagster.store.metrics_store import MetricsStore
from tests.conftest import block_spec_dict

#: Label files in the folder, one labelled id each; the kept block has one id more, so it lacks one label.
FILES = 200
#: Every label file's mtime (an hour ago and more: settled).
OLD = 1_700_000_000


def write_label(folder: Path, i: int, y: int, mtime: int = OLD) -> Path:
    path = folder / f"l{i:04d}.csv"
    path.write_text(f"id,y\n{i},{y}\n")
    os.utime(path, (mtime, mtime))
    return path


class LabelsSensorTicks:
    """The labels sensor of one pipeline whose kept block ``1`` (ids 0..FILES, no target) has FILES label
    files, and the names it hashed and the label files it read in the last tick."""

    def __init__(self, home, tmp_path: Path, instance, monkeypatch):
        data, self.labels_dir = tmp_path / "data", tmp_path / "labels"
        data.mkdir()
        self.labels_dir.mkdir()
        spec = parse_spec(block_spec_dict("late", data, labels={"dir": str(self.labels_dir), "id_col": "id"}),
                          home.spec_path("late"))
        kept = Path(home.blocks_dir("late"))
        kept.mkdir(parents=True)
        pd.DataFrame({"id": range(FILES + 1), "x1": 0.5, "x2": 0.5}).to_parquet(kept / "1.parquet")
        for i in range(FILES):
            write_label(self.labels_dir, i, i % 2)
        self.sensor = next(s for s in build_pipeline_definitions(spec).sensors if s.name == "late_labels")
        resources = build_resources(home)
        self.resources = {key: resources[key] for key in ("home", "metrics")}
        self.instance, self.db = instance, MetricsStore(home.metrics_db)
        self.hashed: list[str] = []
        self.read: list[str] = []
        sha256, read = labels_module.file_sha256, labels_module.read_data_file
        monkeypatch.setattr(labels_module, "file_sha256", lambda path: self.hashed.append(Path(path).name)
                            or sha256(path))
        monkeypatch.setattr(labels_module, "read_data_file", lambda path, *a, **k: self.read.append(Path(path).name)
                            or read(path, *a, **k))
        self.cursor = None

    def tick(self) -> list[str]:
        """One tick from the last cursor; the blocks it requested (the cursor moves on as the daemon's)."""
        self.hashed.clear()
        self.read.clear()
        result = self.sensor(build_sensor_context(instance=self.instance, cursor=self.cursor,
                                                  resources=self.resources))
        if isinstance(result, SensorResult):
            self.cursor = result.cursor if result.cursor is not None else self.cursor
            self.run_keys = [request.run_key for request in result.run_requests or []]
            return [request.partition_key for request in result.run_requests or []]
        self.run_keys = []
        return []

    def missing(self) -> int:
        return int(self.db.query("SELECT missing FROM labels WHERE block = '1'")["missing"].iloc[0])


@pytest.fixture
def ticks(home, tmp_path, instance, monkeypatch) -> LabelsSensorTicks:
    return LabelsSensorTicks(home, tmp_path, instance, monkeypatch)


def test_an_idle_tick_hashes_and_reads_no_label_file(ticks):
    assert ticks.tick() == [] and len(ticks.hashed) == FILES  # the first tick learns every file
    assert ticks.missing() == 1
    assert ticks.tick() == []
    assert ticks.hashed == [] and ticks.read == []


def test_a_new_label_file_is_the_only_one_hashed_and_requests_its_block(ticks):
    ticks.tick()
    write_label(ticks.labels_dir, FILES, 1)
    assert ticks.tick() == ["1"]
    assert ticks.hashed == [f"l{FILES:04d}.csv"]
    assert ticks.missing() == 0


def test_a_label_file_touched_but_unchanged_is_hashed_once_and_requests_nothing(ticks):
    ticks.tick()
    write_label(ticks.labels_dir, FILES, 1)
    assert ticks.tick() == ["1"]
    os.utime(ticks.labels_dir / "l0007.csv", (OLD + 60, OLD + 60))
    assert ticks.tick() == []
    assert ticks.hashed == ["l0007.csv"] and ticks.read == []  # not matched again: nothing changed
    assert ticks.tick() == [] and ticks.hashed == []  # the cursor holds its new mtime


def test_a_label_file_rewritten_with_new_content_or_removed_is_matched_again(ticks):
    ticks.tick()
    last = write_label(ticks.labels_dir, FILES, 1)
    assert ticks.tick() == ["1"]
    first_key = ticks.run_keys[0]
    write_label(ticks.labels_dir, 7, 0, mtime=OLD + 60)  # label 1 -> 0
    assert ticks.tick() == ["1"] and ticks.run_keys[0] != first_key  # a new version of the labels
    assert ticks.hashed == ["l0007.csv"]
    last.unlink()
    assert ticks.tick() == [] and ticks.hashed == []
    assert ticks.missing() == 1


def test_a_label_file_still_being_written_waits_its_settle_time(ticks, home):
    ticks.tick()
    spec = parse_spec(block_spec_dict("late", ticks.labels_dir.parent / "data", sensor={"settle_seconds": 3600},
                                      labels={"dir": str(ticks.labels_dir), "id_col": "id"}), home.spec_path("late"))
    ticks.sensor = next(s for s in build_pipeline_definitions(spec).sensors if s.name == "late_labels")
    (ticks.labels_dir / f"l{FILES:04d}.csv").write_text(f"id,y\n{FILES},1\n")  # modified just now
    assert ticks.tick() == [] and ticks.hashed == []
    os.utime(ticks.labels_dir / f"l{FILES:04d}.csv", (OLD, OLD))  # settled
    assert ticks.tick() == ["1"] and ticks.hashed == [f"l{FILES:04d}.csv"]


def test_a_cursor_of_the_earlier_form_requests_nothing_after_upgrade(ticks):
    write_label(ticks.labels_dir, FILES, 1)
    assert ticks.tick() == ["1"]
    files = sorted(ticks.labels_dir.iterdir())
    ticks.cursor = json.dumps({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}, sort_keys=True)
    assert ticks.tick() == [] and ticks.read == []  # every file hashed once, none changed
    assert len(ticks.hashed) == FILES + 1
    assert ticks.tick() == [] and ticks.hashed == []
    write_label(ticks.labels_dir, 7, 0, mtime=OLD + 60)
    assert ticks.tick() == ["1"] and ticks.hashed == ["l0007.csv"]


def test_an_unreadable_cursor_matches_again_with_the_same_run_keys(ticks):
    write_label(ticks.labels_dir, FILES, 1)
    assert ticks.tick() == ["1"]
    keys = ticks.run_keys
    ticks.cursor = "{not json"
    assert ticks.tick() == ["1"] and ticks.run_keys == keys  # Dagster runs a run key once: no second run
