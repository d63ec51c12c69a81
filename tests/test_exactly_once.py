"""Exactly once: every row of every file version is in exactly one processed block, whoever scans.

Through the real entry points: ``calmops run`` (the CLI's ``main``) and the file sensor
(``build_sensor_context``). Each test reproduces one problem of issue 12.
"""

from __future__ import annotations

import os
import shutil
import time

import pandas as pd
import pytest
from conftest import evaluate_file_sensor

from calmops_dagster.ingest import file_scan
from calmops_dagster.ingest.ingest_record import current_rows
from calmops_dagster.interfaces.cli import main
from calmops_dagster.store.metrics_store import MetricsStore


@pytest.fixture(autouse=True)
def _own_dagster_home(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # calmops run points it at CALMOPS_HOME/dagster


def age(path, seconds=60):
    old = time.time() - seconds
    os.utime(path, (old, old))
    return path


def rows_of(home, sql, params=()):
    return list(MetricsStore(home.metrics_db).query(sql, list(params)).itertuples(index=False, name=None))


def test_same_content_under_two_names_is_counted_once(demo_spec, home, block_files, capsys):
    for name in ("a.csv", "b.csv"):
        age(shutil.copy(block_files[0], demo_spec.data_dir / name))
    assert main(["run", "demo"]) == 0
    out = capsys.readouterr().out
    assert "ignored b.csv (same content as a.csv)" in out
    assert rows_of(home, "SELECT rows, source_file FROM blocks") == [(300, "a.csv")]
    assert rows_of(home, "SELECT status, note FROM data_files WHERE file = 'b.csv'") == [
        ("duplicate", "same content as a.csv")]
    assert main(["run", "demo"]) == 0
    assert "nothing pending" in capsys.readouterr().out  # said once, not on every run


@pytest.mark.parametrize("cut", ["no_newline", "short_line", "missing_block"])
def test_half_written_upload_waits_instead_of_quarantine(demo_spec, home, block_files, instance, cut):
    """A writer that pauses longer than settle_seconds with a truncated last line: waited for, then read."""
    target = demo_spec.data_dir / "upload.csv"
    full = block_files[0].read_text()
    lines = full.splitlines(keepends=True)
    partial = {"no_newline": "".join(lines[:100]) + lines[100][:9],
               "short_line": "".join(lines[:100]) + lines[100][:9] + "\n",
               "missing_block": "".join(lines[:100]) + lines[100].rsplit(",", 1)[0] + ",\n"}[cut]
    age(target.write_text(partial) and target)  # paused for a minute: longer than settle_seconds
    waiting = evaluate_file_sensor(demo_spec, home, instance)
    assert not waiting.run_requests
    assert not (demo_spec.data_dir / "quarantine").exists() and not rows_of(home, "SELECT * FROM quarantine")
    target.write_text(full)  # the writer finishes
    age(target, 30)
    again = evaluate_file_sensor(demo_spec, home, instance, cursor=waiting.cursor)
    done = evaluate_file_sensor(demo_spec, home, instance, cursor=again.cursor)
    assert [r.partition_key for r in (again.run_requests or done.run_requests)] == ["1"]
    assert rows_of(home, "SELECT rows FROM block_files WHERE status = 'current'") == [(300,)]


def test_truncated_file_is_quarantined_once_it_stops_looking_in_progress(demo_spec, home, block_files, instance):
    target = demo_spec.data_dir / "upload.parquet"
    pd.read_csv(block_files[0]).to_parquet(target)
    target.write_bytes(target.read_bytes()[:-200])  # header PAR1, footer never written
    age(target, 60)
    assert not evaluate_file_sensor(demo_spec, home, instance).run_requests
    assert target.is_file()  # waited for
    age(target, demo_spec.sensor.incomplete_wait_seconds + 60)  # the writer never came back
    evaluate_file_sensor(demo_spec, home, instance)
    assert (demo_spec.data_dir / "quarantine" / "upload.parquet").is_file()
    assert len(rows_of(home, "SELECT * FROM quarantine")) == 1


def test_changed_file_is_processed_again_by_calmops_run_with_all_its_rows(demo_spec, home, block_files, capsys):
    first = age(shutil.copy(block_files[0], demo_spec.data_dir / "a.csv"), 120)
    assert main(["run", "demo"]) == 0
    block_1 = pd.read_csv(block_files[0])
    more = block_1.sample(201, random_state=0)
    age(more.to_csv(demo_spec.data_dir / "more.csv", index=False) or demo_spec.data_dir / "more.csv", 90)
    assert main(["run", "demo"]) == 0  # a new file with more rows of an already-processed block
    out = capsys.readouterr().out
    assert "block 1: ok" in out.splitlines()[-1] and "501 rows" in out
    assert rows_of(home, "SELECT rows, source_file FROM blocks") == [(501, "a.csv,more.csv")]

    block_1.head(100).to_csv(first, index=False)  # a.csv rewritten: its old version's rows are replaced
    age(first, 60)
    assert main(["run", "demo"]) == 0
    assert rows_of(home, "SELECT rows FROM blocks") == [(301,)]
    assert rows_of(home, "SELECT rows FROM block_files WHERE file = 'a.csv' ORDER BY seq") == [(300,), (100,)]
    assert list(current_rows(MetricsStore(home.metrics_db), demo_spec)["rows"]) == [100, 201]
    kept = pd.read_parquet(home.blocks_dir("demo") / "1.parquet")
    assert len(kept) == 301  # the history window/replay_mix learn from holds the current rows only
    assert main(["run", "demo"]) == 0
    assert "nothing pending" in capsys.readouterr().out


def test_schema_problems_are_set_aside_and_the_run_exits_0(demo_spec, home, block_files, capsys):
    age(shutil.copy(block_files[0], demo_spec.data_dir / "good.csv"), 300)
    frame = pd.read_csv(block_files[1])
    frame.drop(columns="x4").to_csv(demo_spec.data_dir / "no_x4.csv", index=False)
    frame.assign(x2=["abc"] * len(frame)).to_csv(demo_spec.data_dir / "text_x2.csv", index=False)
    frame.assign(block="2/../x").to_csv(demo_spec.data_dir / "unsafe_block.csv", index=False)
    for name in ("no_x4.csv", "text_x2.csv", "unsafe_block.csv"):
        age(demo_spec.data_dir / name, 200)
    assert main(["run", "demo"]) == 0
    out = capsys.readouterr().out
    assert "set aside no_x4.csv: missing column(s) ['x4']" in out
    assert "set aside text_x2.csv: column 'x2' should be numeric" in out
    assert "set aside unsafe_block.csv: block value(s)" in out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("block ")] == ["block 1"]
    reasons = dict(rows_of(home, "SELECT file, reason FROM quarantine"))
    assert sorted(os.path.basename(f) for f in reasons) == ["no_x4.csv", "text_x2.csv", "unsafe_block.csv"]
    assert sorted(p.name for p in (demo_spec.data_dir / "quarantine").iterdir()) == sorted(
        os.path.basename(f) for f in reasons)

    # later files are checked against the champion's training schema
    age(frame.drop(columns="x1").to_csv(demo_spec.data_dir / "no_x1.csv", index=False)
        or demo_spec.data_dir / "no_x1.csv")
    assert main(["run", "demo"]) == 0
    assert "set aside no_x1.csv: missing column(s) ['x1']" in capsys.readouterr().out


def test_files_already_known_are_not_read_again_and_the_cursor_stays_small(demo_spec, home, block_files,
                                                                           instance, monkeypatch):
    for path in block_files[:3]:
        age(shutil.copy(path, demo_spec.data_dir))
    first = evaluate_file_sensor(demo_spec, home, instance)
    assert [r.partition_key for r in first.run_requests] == ["1", "2", "3"]
    read = []
    real = file_scan.incomplete_reason
    monkeypatch.setattr(file_scan, "incomplete_reason", lambda data, suffix: read.append(data) or real(data, suffix))
    age(shutil.copy(block_files[3], demo_spec.data_dir))
    tick = evaluate_file_sensor(demo_spec, home, instance, cursor=first.cursor)
    assert [r.partition_key for r in tick.run_requests] == ["4"] and len(tick.cursor) < 100
    fresh = evaluate_file_sensor(demo_spec, home, instance)  # no cursor, as calmops run and the schedule scan
    assert [r.partition_key for r in fresh.run_requests] == ["1", "2", "3", "4"]  # none processed yet
    assert len(read) == 1  # only the new file was opened, once
