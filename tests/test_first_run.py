"""`calmops run` right after its files were written: it waits them out once and processes them, and a file
that stays incomplete ends the command with its own exit status (issue 30, point 1)."""

from __future__ import annotations

import shutil
import time

import pytest

from calmops_dagster.ingest import file_scan
from calmops_dagster.interfaces.cli import EXIT_WAITING, main
from calmops_dagster.spec import parse_spec, save_spec
from tests.conftest import block_spec_dict


@pytest.fixture
def fresh_pipeline(home, tmp_path, monkeypatch):
    """A block pipeline with a 1.5 s settle time, its data folder empty."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    raw = block_spec_dict("fresh", data, sensor={"interval_seconds": 30, "settle_seconds": 1.5})
    save_spec(parse_spec(raw, home.spec_path("fresh")), home.spec_path("fresh"))
    return data


class YoungFilesClock:
    """The scan's clock (``file_scan.time``): its first reading is ``age`` seconds after the files' mtime, then it
    runs in real time. A run that starts slowly on a loaded machine then still meets files written a moment
    ago, as a script that writes its files and calls ``calmops run`` at once does."""

    def __init__(self, mtime: float, age: float):
        self.mtime, self.age, self.first = mtime, age, None

    def time(self) -> float:
        now = time.time()
        self.first = now if self.first is None else self.first
        return self.mtime + self.age + (now - self.first)

    def __getattr__(self, name):
        return getattr(time, name)


def test_files_written_a_moment_ago_are_processed_in_the_same_run(fresh_pipeline, block_files, capsys,
                                                                  monkeypatch):
    for path in block_files[:2]:
        shutil.copy(path, fresh_pipeline)  # mtime: now
    newest = max(p.stat().st_mtime for p in fresh_pipeline.iterdir())
    monkeypatch.setattr(file_scan, "time", YoungFilesClock(newest, age=0.3))

    assert main(["run", "fresh"]) == 0
    out = capsys.readouterr().out
    waits = [line for line in out.splitlines() if "to settle" in line]
    assert len(waits) == 1 and waits[0].startswith("fresh: waiting ") and waits[0].endswith("for 2 files to settle")
    assert 1.0 <= float(waits[0].split()[2]) <= 1.5
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("block ")] == ["block 1", "block 2"]
    assert "nothing pending" not in out and "changed since the last look" not in out


def test_a_file_that_stays_cut_short_is_named_and_the_exit_status_says_wait(fresh_pipeline, block_files, capsys):
    shutil.copy(block_files[0], fresh_pipeline)
    text = block_files[1].read_text()
    (fresh_pipeline / "batch_2.csv").write_text(text[: text.rindex("\n") - 3])  # last line cut short

    assert main(["run", "fresh"]) == EXIT_WAITING
    captured = capsys.readouterr()
    assert "block 1: ok" in captured.out
    waiting = [line for line in captured.out.splitlines() if "waiting for batch_2.csv" in line]
    assert len(waiting) == 1 and "still being written" in waiting[0], captured.out
    assert f"exit status {EXIT_WAITING}" in captured.err
    assert "nothing pending" not in captured.out
