"""Bad input at the edges (docs/bad-input.md): each case ends in one clear line or a recorded decision, and
leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.interfaces.cli import main
from calmops_dagster.learning.block_assessment import assess_block
from calmops_dagster.learning.training import too_few_rows_to_train
from calmops_dagster.spec import parse_spec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from tests.conftest import block_spec_dict


def write_spec(home, name, data_dir, **overrides):
    path = home.spec_path(name)
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(block_spec_dict(name, data_dir, **overrides)))
    return parse_spec(block_spec_dict(name, data_dir, **overrides), path)


def settled_csv(frame: pd.DataFrame, path) -> None:
    """``frame`` written to ``path`` a minute ago: stable for any settle time."""
    frame.to_csv(path, index=False)
    old = time.time() - 60
    os.utime(path, (old, old))


KILLED_PUBLISH = """
import os, signal, sys
import pandas as pd
from sklearn.tree import DecisionTreeClassifier
from calmops_dagster.store.model_store import ModelStore
X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
model = DecisionTreeClassifier(random_state=0).fit(X, [0, 1, 0, 1])
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # killed while the version is being published
ModelStore(sys.argv[1], key=None).save(model, reference=X)
"""


def test_run_removes_the_staging_folders_of_a_killed_publish_and_only_those(home, tmp_path, capsys, monkeypatch):
    """A publish killed mid-way left ``models/.staging-*`` behind for ever."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    (tmp_path / "data").mkdir()
    write_spec(home, "p", tmp_path / "data")
    models = home.models_dir("p")
    killed = subprocess.run([sys.executable, "-c", KILLED_PUBLISH, str(models)], capture_output=True, text=True,
                            check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (left,) = models.glob(".staging-*")  # the killed process's, holding its model file
    assert (left / "model.skops").is_file() and not ModelStore(models).versions()
    in_progress = models / f".staging-{os.getpid()}@{socket.gethostname()}-live"  # this process: publishing
    in_progress.mkdir()
    old = models / ".staging-abandoned"  # no owner named, two hours old
    old.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert main(["run", "p"]) == 0
    out = capsys.readouterr().out
    names = ", ".join(sorted([left.name, old.name]))
    assert f"p: removed 2 staging folder(s) of a model publish that did not finish ({names})" in out
    assert sorted(p.name for p in models.iterdir()) == [in_progress.name]


@pytest.fixture(scope="module")
def blocks():
    return make_drifting_blocks(n_blocks=2, rows_per_block=300, drift_at=3, seed=7)


@pytest.mark.parametrize(("rows", "eval_fraction", "said"), [
    (1, 0.3, ("too few rows to train: 1 row cannot be split into training and evaluation rows (eval_fraction 0.3); "
              "at least 2 are needed")),
    (2, 0.6, ("too few rows to train: 2 rows cannot be split into training and evaluation rows (eval_fraction 0.6); "
              "at least 3 are needed")),
    (5, 0.3, "too few rows to train: the 3 training rows of the block's 5 hold one class (0); a classifier needs two"),
    (300, 0.3, None),
])
def test_too_few_rows_to_train_says_why(tmp_path, blocks, rows, eval_fraction, said):
    spec = parse_spec(block_spec_dict("p", tmp_path, performance={"eval_fraction": eval_fraction}),
                      tmp_path / "p" / "pipeline.yaml")
    first = blocks[blocks.block == 1].head(rows)
    assert too_few_rows_to_train(first, spec) == said
    decision = assess_block(spec, first).decision  # the first block: no champion yet
    assert decision.retrain == (said is None)
    if said is not None:
        assert decision.reason == f"{said}; no champion yet: a later block with enough rows trains the first one"


@pytest.mark.parametrize("rows", [1, 5])
def test_a_first_block_too_small_to_train_is_a_decision_not_sklearns_message(home, tmp_path, blocks, capsys,
                                                                             monkeypatch, rows):
    """A 1-row first block failed with sklearn's "With n_samples=1, test_size=0.3 ... the resulting train set will
    be empty", a 5-row one with a single-class ValueError. Now the block is decided: nothing trained, why, and
    nothing to predict with; the next block with enough rows trains the first champion."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    write_spec(home, "p", data)
    settled_csv(blocks[blocks.block == 1].head(rows), data / "block_1.csv")
    assert main(["run", "p"]) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("block 1:")]
    assert line.startswith("block 1: ok in ") and f"{rows} rows, no drift (share 0.00), kept, champion none: " \
        "too few rows to train: " in line
    assert line.endswith("no champion yet: a later block with enough rows trains the first one")
    assert "n_samples" not in out and "Error" not in out
    decided = MetricsStore(home.metrics_db).query("SELECT decision, reason, champion_after FROM promotions")
    assert decided["reason"][0].startswith("too few rows to train: ") and decided["champion_after"].isna().all()
    assert not list(home.predictions_dir("p").glob("*"))  # no champion: nothing predicted
    settled_csv(blocks[blocks.block == 2], data / "block_2.csv")
    assert main(["run", "p"]) == 0
    out = capsys.readouterr().out
    assert "block 2: ok" in out and "promoted, champion v0001: first champion" in out
    assert "block 1:" not in out  # decided: on the store's record, not pending again


def test_run_with_a_tampered_champion_says_why_in_one_line_and_runs_nothing(processed_home, tmp_path, capfd,
                                                                           monkeypatch):
    """Each block's step failed on the champion, and the reason came after 60 lines of Dagster's stack trace."""
    from processed_home import copy_home

    home = copy_home(processed_home, tmp_path)
    monkeypatch.setenv("CALMOPS_HOME", str(home.root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    store = ModelStore(home.models_dir("demo"))
    model = store.root / store.champion_version() / "model.skops"
    model.write_bytes(model.read_bytes()[:-10] + b"x" * 10)
    assert main(["run", "demo"]) == 2
    out, err = capfd.readouterr()
    assert err.startswith("error: champion v0002 of 'demo' cannot be loaded, no block was run: ") and err.count("\n") == 1
    assert "does not match the manifest" in err and "calmops rollback demo --to VERSION" in err
    assert "Traceback" not in out + err and "Stack Trace" not in out + err and "block " not in out


def test_sql_left_aligns_text_and_right_aligns_numbers(tmp_path, capsys):
    """pandas right-aligned every column, names and reasons too."""
    store = MetricsStore(tmp_path / "metrics.duckdb")
    store.replace_block_rows("promotions", "demo", "1", [{"decision": "promoted", "reason": "first champion",
                                                          "champion_score": 0.5}])
    store.replace_block_rows("promotions", "demo", "10", [{"decision": "kept", "reason": "no drift\nat all",
                                                           "champion_score": 0.875}])
    assert main(["--home", str(tmp_path), "sql",
                 "SELECT block, decision, reason, champion_score FROM promotions ORDER BY block"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "block  decision  reason            champion_score",
        "1      promoted  first champion             0.500",
        "10     kept      no drift\\nat all           0.875",
    ]
