"""Per-pipeline log files written by the Dagster logger, and `calmops logs`."""

from __future__ import annotations

import logging

from calmops_dagster.interfaces.cli import main
from calmops_dagster.orchestration.pipeline_logs import LOG_FILE, logs_dir, pipeline_logger, tail_lines
from calmops_dagster.store.paths import CalmOpsHome


def test_runs_write_every_block_decision_to_the_pipelines_log(processed_home):
    home, _ = processed_home
    text = (logs_dir(home, "demo") / LOG_FILE).read_text()
    for block in ("1", "2", "3", "4"):
        assert f"block {block}: " in text
    assert "block 3: promoted" in text and "demo_job" in text


def test_calmops_logs_prints_the_latest_lines(processed_home, capsys):
    home, _ = processed_home
    assert main(["--home", str(home.root), "logs", "demo", "-n", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "block 4: kept" in out[-1]
    assert main(["--home", str(home.root), "logs", "nope"]) == 2
    assert main(["--home", str(home.root), "logs", "../demo"]) == 2


def test_tail_reads_across_rotated_files(tmp_path):
    home = CalmOpsHome(tmp_path / "home")
    (home.pipelines_dir / "p").mkdir(parents=True)
    folder = logs_dir(home, "p")
    folder.mkdir()
    (folder / f"{LOG_FILE}.1").write_text("old 1\nold 2\n")
    (folder / LOG_FILE).write_text("new 1\n")
    assert tail_lines(home, "p", 2) == ["old 2", "new 1"]
    assert tail_lines(home, "p", 10) == ["old 1", "old 2", "new 1"]
    assert tail_lines(home, "p", 0) == []


def test_python_logger_for_code_outside_runs(tmp_path):
    home = CalmOpsHome(tmp_path / "home")
    log = pipeline_logger(home, "solo")
    log.info("served by the prediction server")
    log.debug("not at INFO")
    for handler in log.handlers:
        handler.flush()
    assert tail_lines(home, "solo", 5)[-1].endswith("INFO served by the prediction server")
    assert pipeline_logger(home, "solo") is log


def test_a_pipeline_of_the_same_name_in_another_home_writes_to_its_own_file_only(tmp_path):
    first, second = CalmOpsHome(tmp_path / "first"), CalmOpsHome(tmp_path / "second")
    pipeline_logger(first, "demo").info("a line of the first home")
    pipeline_logger(second, "demo").info("a line of the second home")
    for handler in logging.getLogger().manager.loggerDict.values():
        for h in getattr(handler, "handlers", []):
            h.flush()
    assert tail_lines(first, "demo", 5) and tail_lines(first, "demo", 5)[-1].endswith("a line of the first home")
    assert tail_lines(second, "demo", 5)[-1].endswith("a line of the second home")
    assert len(tail_lines(first, "demo", 5)) == 1 and len(tail_lines(second, "demo", 5)) == 1
