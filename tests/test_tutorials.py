"""`calmops tutorials` copies runnable scripts; each is run here as ``python SCRIPT --home DIR`` runs it, in its
own process. The processes are forked from one that has already imported the libraries the scripts use
(``preloaded_python.py``): a fresh interpreter per script spent 4-5 s of CPU on those imports, and the module
took 55-62 s of CPU instead of 66-72 s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from preloaded_python import PreloadedPython

from calmops_dagster.interfaces.cli import main
from calmops_dagster.interfaces.tutorials import tutorial_files

SCRIPTS = ["01_block_pipeline.py", "02_stream_pipeline.py", "03_ipip_pipeline.py", "04_generators.py",
           "05_prediction_server.py", "06_custom_training.py"]
EXPECTED = {
    "01_block_pipeline.py": ["block 3: ok", "promoted, champion v0002", "wrote ", "block 4: kept"],
    "02_stream_pipeline.py": ["events: 1 new block(s): export_01h-", "drift (share 0.60), promoted, champion v0002",
                              "quarantined data file export_05h.csv: missing column(s) ['y']",
                              "events: nothing pending", "200 rows, no drift", "stream       5 v0002"],
    "03_ipip_pipeline.py": ["fraud: 3 new block(s): 1, 2, 3", "versions: ['v0001', 'v0002', 'v0003']"],
    "04_generators.py": ["block 2: drift=False", "block 3: drift=True, drifted features=['x3']"],
    "05_prediction_server.py": ["columns/data form: 200", "(404, {'detail': \"unknown pipeline 'nope'",
                                "after the promotion: 200 v0002"],
    "06_custom_training.py": ["promoted, champion v0001", "v0001: train my_training:train",
                              "my_training:train raised ConnectionError: feature store unreachable",
                              "block 3: ok", "v0002: fallback my_training:fallback"],
}


@pytest.fixture(scope="module")
def copied(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tutorials") / "calmops-tutorials"
    assert main(["tutorials", "--out", str(out)]) == 0
    return out


def test_tutorials_are_copied_with_their_readme(copied, capsys):
    assert set(SCRIPTS) | {"README.md", "_common.py", "my_training.py"} == set(tutorial_files())
    assert {p.name for p in copied.iterdir()} == set(tutorial_files())
    for script in SCRIPTS:
        assert f"`{script}`" in (copied / "README.md").read_text()
    assert main(["tutorials", "--out", str(copied)]) == 2  # no silent overwrite
    assert "--force" in capsys.readouterr().err
    assert main(["tutorials", "--out", str(copied), "--force"]) == 0


@pytest.fixture(scope="module")
def python():
    preloaded = PreloadedPython()
    yield preloaded
    preloaded.close()


@pytest.mark.parametrize("script", SCRIPTS)
def test_tutorial_runs(copied, python, script, tmp_path):
    code, stdout, stderr = python.run(script, ["--home", str(tmp_path / "home")], cwd=copied,
                                      output=tmp_path / "output", timeout=600)
    assert code == 0, stdout[-2000:] + stderr[-3000:]
    output = stdout + stderr  # log lines (quarantine errors) go to stderr
    for text in EXPECTED[script]:
        assert text in output, (text, output[-3000:])


PROBE = """
import os, sys
print(__name__, sys.argv, os.getcwd(), sys.path[0] == os.path.dirname(os.path.abspath(__file__)))
if sys.argv[1] == "message":
    raise SystemExit("stopped: bad input")
if sys.argv[1] == "code":
    sys.exit(3)
if sys.argv[1] == "error":
    raise ValueError("boom")
"""


@pytest.mark.parametrize("outcome", ["ok", "message", "code", "error"])
def test_a_forked_script_runs_and_ends_as_under_its_own_interpreter(python, outcome, tmp_path):
    """What the tutorials' runs rest on: module, arguments, folder, path, output and exit code as `python
    SCRIPT` gives them (a traceback differs only in runpy's frames above the script's, so its last line is
    compared)."""
    script, cwd = tmp_path / "probe.py", tmp_path / "elsewhere"
    script.write_text(PROBE)
    cwd.mkdir()
    fresh = subprocess.run([sys.executable, str(script), outcome], cwd=cwd, capture_output=True, text=True,
                           check=False)
    code, stdout, stderr = python.run(str(script), [outcome], cwd=cwd, output=tmp_path / "output")
    assert (code, stdout) == (fresh.returncode, fresh.stdout)
    assert stderr.splitlines()[-1:] == fresh.stderr.splitlines()[-1:]
    assert stdout.startswith("__main__ ") and stdout.rstrip().endswith("True")
