"""`calmops tutorials` copies runnable scripts; each is run here as a user would run it (own process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from calmops_dagster.interfaces.cli import main
from calmops_dagster.interfaces.tutorials import tutorial_files

SCRIPTS = ["01_block_pipeline.py", "02_stream_pipeline.py", "03_ipip_pipeline.py", "04_generators.py", "05_prediction_server.py"]
EXPECTED = {
    "01_block_pipeline.py": ["block 3: ok", "promoted, champion v0002", "wrote ", "block 4: kept"],
    "02_stream_pipeline.py": ["events: 1 new block(s): export_01h-", "drift (share 0.60), promoted, champion v0002",
                              "quarantined data file export_05h.csv: missing column(s) ['y']",
                              "events: nothing pending", "200 rows, no drift", "stream       5 v0002"],
    "03_ipip_pipeline.py": ["fraud: 3 new block(s): 1, 2, 3", "versions: ['v0001', 'v0002', 'v0003']"],
    "04_generators.py": ["block 2: drift=False", "block 3: drift=True, drifted features=['x3']"],
    "05_prediction_server.py": ["columns/data form: 200", "(404, {'detail': \"unknown pipeline 'nope'",
                                "after the promotion: 200 v0002"],
}


@pytest.fixture(scope="module")
def copied(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tutorials") / "calmops-tutorials"
    assert main(["tutorials", "--out", str(out)]) == 0
    return out


def test_tutorials_are_copied_with_their_readme(copied, capsys):
    assert set(SCRIPTS) | {"README.md", "_common.py"} == set(tutorial_files())
    assert {p.name for p in copied.iterdir()} == set(tutorial_files())
    for script in SCRIPTS:
        assert f"`{script}`" in (copied / "README.md").read_text()
    assert main(["tutorials", "--out", str(copied)]) == 2  # no silent overwrite
    assert "--force" in capsys.readouterr().err
    assert main(["tutorials", "--out", str(copied), "--force"]) == 0


@pytest.mark.parametrize("script", SCRIPTS)
def test_tutorial_runs(copied, script, tmp_path):
    done = subprocess.run([sys.executable, script, "--home", str(tmp_path / "home")], check=False, cwd=copied,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr  # log lines (quarantine errors) go to stderr
    for text in EXPECTED[script]:
        assert text in output, (text, output[-3000:])
