"""The headless CLI: init, run, list, demo (in-process, on a temporary CALMOPS_HOME)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from calmops_dagster.errors import PipelineNameError
from calmops_dagster.interfaces.cli import main
from calmops_dagster.store.model_store import ModelStore
from calmops_dagster.store.paths import check_pipeline_name
from tests.conftest import block_spec_dict


def test_init_run_list(home, tmp_path, block_files, capsys, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    data = tmp_path / "incoming"
    data.mkdir()
    old = time.time() - 60  # copied a minute ago: stable for the default settle time
    for path in block_files[:3]:
        os.utime(shutil.copy(path, data), (old, old))
    assert main(["init", "churn", "--type", "block", "--data-dir", str(data), "--target", "y",
                 "--block-col", "block", "--model", "sklearn.ensemble.RandomForestClassifier",
                 "--param", "n_estimators=20", "--param", "random_state=0"]) == 0
    spec = yaml.safe_load(home.spec_path("churn").read_text())
    assert spec["model_spec"] == {"module": "sklearn.ensemble", "class": "RandomForestClassifier",
                                  "params": {"n_estimators": 20, "random_state": 0}, "allow_any_module": False}

    assert main(["run", "churn"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("block ")]
    assert [line.split(":")[0] for line in lines] == ["block 1", "block 2", "block 3"]
    assert "promoted, champion v0001: first champion" in lines[0]
    assert "drift" in lines[2] and "promoted, champion v0002" in lines[2]
    assert (home.dagster_home / "dagster.yaml").is_file()  # the instance `dagster dev` shares

    assert main(["run", "churn"]) == 0
    assert "nothing pending" in capsys.readouterr().out

    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "churn" in listing and "v0002" in listing and "block" in listing


def test_init_refuses_to_overwrite_and_reports_bad_specs(home, tmp_path, capsys):
    args = ["init", "p", "--data-dir", str(tmp_path), "--target", "y", "--block-col", "b"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already exists; use --force" in capsys.readouterr().err
    assert main([*args[:1], "q", *args[2:], "--model", "os.system"]) == 2
    assert "not in the trusted modules" in capsys.readouterr().err


def test_demo_creates_pipeline_and_data(home, capsys):
    assert main(["demo", "--blocks", "3", "--rows-per-block", "50", "--initial", "1"]) == 0
    assert home.spec_path("demo").is_file()
    assert len(list((home.root / "demo" / "demo" / "blocks").glob("*.csv"))) == 3
    assert len(list((home.root / "demo" / "demo" / "data").glob("*.csv"))) == 1


@pytest.mark.parametrize("name", ["../victim", "../../victim", "/tmp/victim", "a/b", "a\\b", "..", ".", "",
                                  "demo\n", "9lives"])
def test_check_pipeline_name_refuses_paths(name):
    with pytest.raises(PipelineNameError, match="is not a pipeline name"):
        check_pipeline_name(name)


@pytest.mark.parametrize("command", [
    ["run"], ["rollback"], ["relaunch"], ["update", "--seed", "1"], ["delete", "--yes"], ["logs"],
    ["serve"], ["report"],
    ["init", "--data-dir", ".", "--target", "y", "--block-col", "block"],
])
def test_every_command_refuses_a_name_that_leaves_the_home(home, tmp_path, command, capsys):
    """A spec outside the home, reachable by ``..``, must not be read (``calmops run`` ran it)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "pipeline.yaml").write_text(yaml.safe_dump(block_spec_dict("victim", tmp_path / "data")))
    home.pipelines_dir.mkdir(parents=True)
    relative = "../../victim"  # home.pipelines_dir/../../victim is tmp_path/victim
    assert (home.pipelines_dir / relative / "pipeline.yaml").is_file()
    for name in (relative, str(victim)):
        assert main([command[0], name, *command[1:]]) == 2
        assert "is not a pipeline name" in capsys.readouterr().err
    assert sorted(p.name for p in victim.iterdir()) == ["pipeline.yaml"]


def test_model_key_advice_and_a_key_file_inside_the_home_is_refused(home, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CALMOPS_MODEL_KEY", raising=False)
    monkeypatch.delenv("CALMOPS_MODEL_KEY_FILE", raising=False)
    assert main(["init", "p", "--data-dir", str(tmp_path), "--target", "y", "--block-col", "b"]) == 0
    out = capsys.readouterr().out
    assert "no model signing key is set" in out and "export CALMOPS_MODEL_KEY_FILE=" in out
    inside = home.root / "model.key"
    inside.write_text("x" * 64)
    monkeypatch.setenv("CALMOPS_MODEL_KEY_FILE", str(inside))
    assert main(["list"]) == 2
    assert "lies inside" in capsys.readouterr().err


def test_rollback_refuses_a_planted_pickle(home, tmp_path, data_frame_and_model, capsys, monkeypatch):
    """Hole 1: ``calmops rollback`` unpickled a version whose manifest vouched for a planted pickle."""
    from tests.test_model_files import plant_pickle

    monkeypatch.delenv("CALMOPS_MODEL_KEY", raising=False)
    monkeypatch.delenv("CALMOPS_MODEL_KEY_FILE", raising=False)
    X, model = data_frame_and_model
    path = home.spec_path("p")
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(block_spec_dict("p", tmp_path / "data")))
    store = ModelStore(home.models_dir("p"))
    old, new = store.save(model, reference=X), store.save(model, reference=X)
    store.set_champion(old, "1", "promoted")
    store.set_champion(new, "2", "promoted")
    marker = tmp_path / "payload-ran"
    plant_pickle(store, old, marker)
    assert main(["rollback", "p"]) == 2
    assert "set trust_pickle: true" in capsys.readouterr().err
    assert not marker.exists() and store.champion_version() == new
    monkeypatch.setenv("CALMOPS_MODEL_KEY", "k" * 40)  # with a key, the unsigned versions are refused too
    assert main(["rollback", "p"]) == 2
    assert "manifest is not signed" in capsys.readouterr().err


def test_rollback_names_versions_of_its_own_pipeline_only(home, tmp_path, data_frame_and_model, capsys,
                                                         monkeypatch):
    """``--to ../../other/models/v0001`` made another pipeline's model the champion; ``--to /etc/passwd`` ended
    in a traceback. Both are one line and exit 2; ``--to`` repairs a pointer edited to such a path."""
    monkeypatch.setenv("CALMOPS_MODEL_KEY", "k" * 40)
    X, model = data_frame_and_model
    stores = {}
    for name in ("p", "other"):
        path = home.spec_path(name)
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(block_spec_dict(name, tmp_path / "data")))
        stores[name] = ModelStore(home.models_dir(name))
        stores[name].set_champion(stores[name].save(model, reference=X), "1", "promoted")
    store = stores["p"]
    store.set_champion(store.save(model, reference=X), "2", "promoted")
    for target in ("../../other/models/v0001", "/etc/passwd", str(stores["other"].root / "v0001")):
        assert main(["rollback", "p", "--to", target]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"error: '{target}' is not a model version of pipeline 'p'" in err
        assert store.champion_version() == "v0002"
    (store.root / "champion.json").write_text(json.dumps({"version": "../../other/models/v0001", "history": []}))
    assert main(["rollback", "p"]) == 2
    assert "champion pointer names '../../other/models/v0001', which is not a model version" in capsys.readouterr().err
    assert main(["rollback", "p", "--to", "v0001"]) == 0
    out = capsys.readouterr()
    assert "champion none -> v0001" in out.out and "the champion pointer named no version" in out.err
    assert store.champion_version() == "v0001"


@pytest.fixture
def data_frame_and_model():
    import numpy as np
    import pandas as pd
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    return X, DecisionTreeClassifier(random_state=0).fit(X, (X["a"] > 0).astype(int))


def test_demo_tells_one_story_and_next_drops_the_blocks_in_order(home, capsys):
    assert main(["demo", "--blocks", "4", "--rows-per-block", "30", "--drift-at", "3", "--initial", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    blocks_dir, data_dir = home.root / "demo" / "demo" / "blocks", home.root / "demo" / "demo" / "data"
    names = sorted(p.name for p in blocks_dir.glob("*.csv"))
    assert names == ["block_001.csv", "block_002.csv", "block_003.csv", "block_004.csv"]
    for name in names:  # file number = block number
        assert set(pd.read_csv(blocks_dir / name)["block"]) == {int(name[6:9])}
    story = [line.split() for line in out if line.strip().startswith("block_")]
    assert [(s[0], s[2], s[3]) for s in story] == [("block_001.csv", "1", "in"), ("block_002.csv", "2", "next"),
                                                   ("block_003.csv", "3", "waiting"), ("block_004.csv", "4", "waiting")]
    assert "abrupt drift" in out[out.index(next(line for line in out if "block_003.csv" in line))]
    assert out[-1].strip() == "drop the next one with: calmops demo --next"

    for expected in ("block_002.csv (block 2)", "block_003.csv (block 3)", "block_004.csv (block 4)"):
        assert main(["demo", "--next"]) == 0
        assert capsys.readouterr().out.startswith(f"copied {expected} into {data_dir}")
    assert sorted(p.name for p in data_dir.iterdir()) == names  # no temporary file left
    assert main(["demo", "--next"]) == 0
    assert "the demo is complete" in capsys.readouterr().out


def test_demo_next_without_a_demo_says_what_to_run(home, capsys):
    assert main(["demo", "--next"]) == 2
    assert "run `calmops demo` first" in capsys.readouterr().err


def test_serve_and_dev_warn_without_a_model_key(home, capsys, monkeypatch):
    from calmops_dagster.interfaces import server

    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # `calmops dev` sets it: restored after the test
    monkeypatch.delenv("CALMOPS_MODEL_KEY", raising=False)
    monkeypatch.delenv("CALMOPS_MODEL_KEY_FILE", raising=False)
    monkeypatch.setattr(server, "serve", lambda *args, **kwargs: 0)
    monkeypatch.setattr(os, "execvpe", lambda *args: 0)  # what `calmops dev` would exec: dagster dev
    for command in (["serve"], ["dev"]):
        assert main(command) == 0
        assert "WARNING: no model signing key" in capsys.readouterr().err
    monkeypatch.setenv("CALMOPS_MODEL_KEY", "k" * 40)
    for command in (["serve"], ["dev"]):
        assert main(command) == 0
        assert "WARNING" not in capsys.readouterr().err


def test_a_reader_that_stops_reading_ends_the_command_quietly(home):
    """`calmops demo --next | head -1` and the like: the pipe closes before the command prints; it exits with
    the closed pipe's status (141), and no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "calmops_dagster.interfaces.cli", "--home", str(home.root), "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the command has imported what it needs, let alone printed
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
