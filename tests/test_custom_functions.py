"""Bring your own training: the spec's ``custom_functions`` (train, retrain, fallback) from a real user package
written to a temporary folder and put on ``sys.path``/``PYTHONPATH``, run through whole pipelines in-process."""

from __future__ import annotations

import hashlib
import json
import logging
import sys

import pandas as pd
import pytest
from conftest import block_spec_dict
from dagster import AssetKey, Definitions

from calmops_dagster.errors import SpecError
from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.interfaces.pipeline_report import build_pipeline_report
from calmops_dagster.learning.custom_functions import cannot_rerun, function_lineage, resolve_function
from calmops_dagster.learning.training_context import TrainingContext
from calmops_dagster.orchestration.headless_runs import run_pending
from calmops_dagster.orchestration.ingest_registration import register_new_blocks
from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
from calmops_dagster.resources import build_resources
from calmops_dagster.spec import parse_spec, save_spec
from calmops_dagster.steps.train_challenger import make_challenger
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore

TRAINING = '''\
"""A team's own training code: a feature added inside the model, a warm start, a simpler fallback."""
import json
import os

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder


def _features():
    return ColumnTransformer([("segment", OneHotEncoder(handle_unknown="ignore"), ["segment"]),
                              ("x1_squared", FunctionTransformer(np.square), ["x1"])], remainder="passthrough")


def _note(role, X, context, **extra):
    with open(os.environ["MY_PROJECT_CALLS"], "a") as calls:
        calls.write(json.dumps({"role": role, "rows": len(X), "pipeline": context.pipeline, "block": context.block,
                                "retrain_mode": context.retrain_mode, "source_blocks": list(context.source_blocks),
                                "random_state": context.random_state, **extra}) + "\\n")
    context.logger.info(f"my_project: {role} on {len(X)} rows")


def train(X, y, context):
    _note("train", X, context)
    forest = RandomForestClassifier(n_estimators=10, random_state=context.random_state)
    return Pipeline([("features", _features()), ("model", forest)]).fit(X, y)


def retrain(champion, X, y, context):
    _note("retrain", X, context, champion=type(champion).__name__)
    if os.environ.get("MY_PROJECT_RETRAIN") == "raise":
        raise RuntimeError("warm start diverged\\n(on purpose)")
    if os.environ.get("MY_PROJECT_RETRAIN") == "dict":
        return {"weights": [1, 2]}
    trees = champion.named_steps["model"].n_estimators
    return champion.set_params(model__warm_start=True, model__n_estimators=trees + 10).fit(X, y)


def fallback(error, X, y, context):
    _note("fallback", X, context, error=repr(error))
    if os.environ.get("MY_PROJECT_FALLBACK") == "none":
        return None
    if os.environ.get("MY_PROJECT_FALLBACK") == "raise":
        raise KeyError("no simpler model either")
    return Pipeline([("features", _features()), ("model", LogisticRegression(max_iter=1000))]).fit(X, y)
'''

BAD = '''\
"""Functions that are wrong in every way a spec or a block must refuse."""
from subprocess import run  # a function, but not the user's

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder
from sklearn.svm import LinearSVC

NOT_A_FUNCTION = 3


class Callable:
    def __call__(self, X, y, context):
        return None


callable_object = Callable()


def two_arguments(X, y):
    return None


def keyword_only(X, y, *, context):
    return None


def _encoded(model, *steps):
    encode = ColumnTransformer([("segment", OneHotEncoder(handle_unknown="ignore"), ["segment"])],
                               remainder="passthrough")
    return Pipeline([("encode", encode), *steps, ("model", model)])


def _own_feature(X):
    return np.column_stack([X, X[:, -1] * 2])


class Broken:
    def predict(self, X):
        raise ValueError("weights not loaded")


class Plain:
    classes_ = np.array([0, 1])

    def predict(self, X):
        return np.zeros(len(X), dtype=int)

    def predict_proba(self, X):
        return np.full((len(X), 2), 0.5)


def no_predict(X, y, context):
    return {"weights": [1, 2]}


def unstorable(X, y, context):
    return _encoded(LogisticRegression(max_iter=1000), ("own", FunctionTransformer(_own_feature))).fit(X, y)


def no_proba(X, y, context):
    return _encoded(LinearSVC()).fit(X, y)


def broken(X, y, context):
    return Broken()


def not_clonable(X, y, context):
    return Plain()


def regressor_on_labels(X, y, context):
    return _encoded(LinearRegression()).fit(X, y)
'''

EVIL = '''\
import os
open(os.environ["EVIL_MARKER"], "w").close()  # importing this module is what must not happen


def train(X, y, context):
    return None
'''

TRAIN, RETRAIN, FALLBACK = "my_project.training:train", "my_project.training:retrain", "my_project.training:fallback"


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """The package ``my_project`` (``training``, ``bad``) and the module ``evil`` in a folder on
    ``sys.path`` and ``PYTHONPATH``, as a user's own code is; forgotten again after the test."""
    root = tmp_path / "usercode"
    (root / "my_project").mkdir(parents=True)
    (root / "my_project" / "__init__.py").write_text("")
    (root / "my_project" / "training.py").write_text(TRAINING)
    (root / "my_project" / "bad.py").write_text(BAD)
    (root / "evil.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", str(root))
    monkeypatch.setenv("MY_PROJECT_CALLS", str(tmp_path / "calls.jsonl"))
    yield root
    for name in [n for n in sys.modules if n.split(".")[0] in ("my_project", "evil")]:
        del sys.modules[name]


def calls(tmp_path) -> list[dict]:
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def spec_dict(data_dir, custom_functions, **overrides):
    return block_spec_dict("demo", data_dir, custom_functions={"allow_modules": ["my_project"], **custom_functions},
                           **overrides)


# ---- the spec: every bad path and signature refused at load, naming the field ---------------------------

@pytest.mark.parametrize(("functions", "field", "message"), [
    ({"train": TRAIN, "allow_modules": []}, "train",
     "module 'my_project.training' is not in custom_functions.allow_modules []"),
    ({"train": "my_project.training.train"}, "train", "'my_project.training.train' is not 'module.path:function'"),
    ({"train": "my_project.missing:train"}, "train", "cannot import module 'my_project.missing': no such module"),
    ({"train": "my_project.training:nothing"}, "train", "module 'my_project.training' has no 'nothing'"),
    ({"train": "my_project.bad:NOT_A_FUNCTION"}, "train", "is not a function (it is of type int)"),
    ({"train": "my_project.bad:callable_object"}, "train", "is not a function (it is of type Callable)"),
    ({"train": "my_project.bad:Broken"}, "train", "is not a function (it is of type type)"),
    ({"train": "my_project.bad:run"}, "train", "'my_project.bad:run' is subprocess.run, defined outside allow_modules"),
    ({"train": "my_project.bad:two_arguments"}, "train",
     "'my_project.bad:two_arguments(X, y)' cannot be called as train(X, y, context): too many positional arguments"),
    ({"train": "my_project.bad:keyword_only"}, "train", "cannot be called as train(X, y, context)"),
    ({"retrain": TRAIN}, "retrain",
     "'my_project.training:train(X, y, context)' cannot be called as retrain(champion, X, y, context)"),
    ({"fallback": "my_project.bad:two_arguments"}, "fallback", "cannot be called as fallback(error, X, y, context)"),
    ({"train": TRAIN, "allow_modules": ["my project"]}, "allow_modules", "'my project' is not a dotted module name"),
])
def test_a_bad_function_is_refused_at_spec_load_naming_the_field(user_code, tmp_path, functions, field, message):
    raw = spec_dict(tmp_path / "data", functions)
    with pytest.raises(SpecError) as refused:
        parse_spec(raw, tmp_path / "demo" / "pipeline.yaml")
    text = str(refused.value)
    assert f"field 'custom_functions.{field}': " in text and message in text, text
    assert "\n" not in text


def test_modules_are_checked_against_allow_modules_before_anything_is_imported(user_code, tmp_path, monkeypatch):
    marker = tmp_path / "evil-was-imported"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    for import_model in (True, False):
        with pytest.raises(SpecError, match=r"custom_functions.train': module 'evil' is not in custom_functions"):
            parse_spec(spec_dict(tmp_path, {"train": "evil:train"}), tmp_path / "demo" / "pipeline.yaml",
                       import_model=import_model)
    assert not marker.exists() and "evil" not in sys.modules


@pytest.mark.parametrize(("overrides", "message"), [
    ({"retrain_mode": "stacking"}, "retrain_mode only chooses the rows they learn from"),
    ({"type": "ipip"}, "'custom_functions' train models: not for prediction_only or ipip pipelines"),
])
def test_modes_that_build_the_model_themselves_are_refused_with_custom_training(user_code, tmp_path, overrides,
                                                                               message):
    raw = spec_dict(tmp_path, {"train": TRAIN}, **overrides)
    if overrides.get("type") == "ipip":
        raw["performance"] = {}
    with pytest.raises(SpecError, match=message):
        parse_spec(raw, tmp_path / "demo" / "pipeline.yaml")


def test_a_valid_section_loads_and_is_saved_as_written(user_code, tmp_path):
    functions = {"train": TRAIN, "retrain": RETRAIN, "fallback": FALLBACK}
    path = tmp_path / "demo" / "pipeline.yaml"
    spec = parse_spec(spec_dict(tmp_path, functions), path)
    save_spec(spec, path)
    again = parse_spec(__import__("yaml").safe_load(path.read_text()), path)
    assert again.custom_functions.model_dump() == {"allow_modules": ["my_project"], **functions}


# ---- what a custom function returns: refused with its message, nothing stored ---------------------------

@pytest.fixture
def block_one(tmp_path):
    frame = make_drifting_blocks(n_blocks=1, rows_per_block=200, seed=3)
    return frame.drop(columns="block")


@pytest.mark.parametrize(("function", "overrides", "message"), [
    ("no_predict", {}, "returned a builtins.dict without a predict method; no challenger"),
    ("unstorable", {}, ("returned a sklearn.pipeline.Pipeline: a model skops cannot store within the allow-list "
                       "(it holds ['my_project.bad._own_feature']): it would be a pickle, which this pipeline does "
                       "not load without trust_pickle: true; no challenger")),
    ("no_proba", {"performance": {"metric": "roc_auc"}},
     "returned a sklearn.pipeline.Pipeline without predict_proba, which the metric roc_auc needs"),
    ("broken", {}, ("returned a my_project.bad.Broken whose prediction fails on the block's held-out rows "
                   "(ValueError: weights not loaded)")),
    ("not_clonable", {}, "returned a my_project.bad.Plain that sklearn.base.clone cannot copy"),
])
def test_an_unusable_model_is_refused_with_why_and_nothing_is_stored(user_code, tmp_path, block_one, function,
                                                                     overrides, message):
    spec = parse_spec(spec_dict(tmp_path, {"train": f"my_project.bad:{function}"}, **overrides),
                      tmp_path / "demo" / "pipeline.yaml")
    store = ModelStore(tmp_path / "pipelines" / "demo" / "models", key=None)
    outcome = make_challenger(spec, store, "1", block_one, "no champion yet")
    assert outcome.version is None and store.versions() == []
    assert outcome.reason.startswith(f"no champion yet; custom_functions.train my_project.bad:{function} ")
    assert message in outcome.reason, outcome.reason


def test_a_model_holding_the_users_own_code_is_kept_as_pickle_when_the_spec_trusts_it(user_code, tmp_path,
                                                                                      block_one):
    spec = parse_spec(spec_dict(tmp_path, {"train": "my_project.bad:unstorable"}, trust_pickle=True),
                      tmp_path / "demo" / "pipeline.yaml")
    store = ModelStore(tmp_path / "pipelines" / "demo" / "models", key=None)
    outcome = make_challenger(spec, store, "1", block_one, "no champion yet")
    assert outcome.version == "v0001" and store.manifest("v0001")["format"] == "pickle"
    assert store.manifest("v0001")["trained_by"]["function"] == "my_project.bad:unstorable"


# ---- whole pipelines --------------------------------------------------------------------------------------

def run_pipeline(home, spec, instance):
    """What `calmops run` does: register new blocks, then execute every pending one in order."""
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    metrics, models = MetricsStore(home.metrics_db), ModelStore(home.models_dir(spec.name))
    register_new_blocks(instance, spec, metrics, models, logging.getLogger("test"))
    return run_pending(instance, spec, defs.resolve_job_def(job_name(spec)), metrics), defs


def pipeline(home, tmp_path, blocks, functions, **overrides):
    """The spec ``demo`` with ``functions`` over the drifting blocks ``blocks`` (drift from block 3)."""
    frame = make_drifting_blocks(n_blocks=4, rows_per_block=300, drift_at=3, seed=7)
    data_dir = tmp_path / "data"
    write_blocks(frame[frame["block"].isin(blocks)], data_dir, block_col="block")
    spec = parse_spec(spec_dict(data_dir, functions, **overrides), home.spec_path("demo"))
    save_spec(spec, home.spec_path("demo"))
    return spec


def promotions(home) -> pd.DataFrame:
    return MetricsStore(home.metrics_db).query(
        "SELECT block, challenger, decision, reason, champion_after, trained_by FROM promotions ORDER BY block"
    ).set_index("block")


def test_custom_train_builds_the_first_champion_and_retrain_a_challenger(home, tmp_path, user_code, instance):
    spec = pipeline(home, tmp_path, [1, 2, 3], {"train": TRAIN, "retrain": RETRAIN, "fallback": FALLBACK},
                    retrain_mode="window", retrain={"window_blocks": 2})
    results, defs = run_pipeline(home, spec, instance)
    assert [(r.block, r.success) for r in results] == [("1", True), ("2", True), ("3", True)], results

    store = ModelStore(home.models_dir("demo"))
    module = user_code / "my_project" / "training.py"
    digest = hashlib.sha256(module.read_bytes()).hexdigest()
    first, second = store.manifest("v0001"), store.manifest("v0002")
    assert first["trained_by"] == {"role": "train", "function": TRAIN, "module_file": str(module.resolve()),
                                   "module_sha256": digest}
    assert second["trained_by"]["role"] == "retrain" and second["trained_by"]["function"] == RETRAIN
    assert second["note"] == f"custom_functions.retrain {RETRAIN} on the last 510 rows"
    assert store.champion_version() == "v0002"

    decided = promotions(home)
    assert decided.loc["1", ["challenger", "decision", "trained_by"]].tolist() == ["v0001", "promoted", TRAIN]
    assert decided.loc["2", "challenger"] is None and decided.loc["2", "trained_by"] is None  # no drift: none
    assert decided.loc["3", ["challenger", "trained_by"]].tolist() == ["v0002", RETRAIN]
    assert decided.loc["3", "decision"] in ("promoted", "rejected")

    made = calls(tmp_path)  # what the functions were given: the rows the window chose, a champion copy
    assert [(c["role"], c["block"], c["source_blocks"], c["rows"]) for c in made] == [
        ("train", "1", ["1"], 210), ("retrain", "3", ["2", "3"], 510)]
    assert made[1]["champion"] == "Pipeline" and {c["random_state"] for c in made} == {spec.seed}
    assert {(c["pipeline"], c["retrain_mode"]) for c in made} == {("demo", "window")}
    meta = instance.get_latest_materialization_event(AssetKey(["demo", "challenger_model"]))
    assert meta.asset_materialization.metadata["trained_by"].value == RETRAIN
    table = build_pipeline_report(home, "demo").split("<table id='promotions'>")[1].split("</table>")[0]
    assert "<th>trained_by</th>" in table and f"<td>{RETRAIN}</td>" in table  # the report names the function

    # a rerun of block 3 re-scores the challenger the recorded function built, and says whether that function
    # could still be run as it was
    job = defs.resolve_job_def(job_name(spec))

    def rerun_note():
        result = job.execute_in_process(instance=instance, partition_key="3",
                                        asset_selection=[AssetKey(["demo", "challenger_model"])])
        assert result.success
        (event,) = result.asset_materializations_for_node("demo__challenger_and_champion")
        return event.metadata["note"].value

    assert rerun_note().endswith(f"re-scored as stored; {RETRAIN} is unchanged")
    module.write_text(module.read_text() + "\n# tuned later\n")
    changed = rerun_note()
    assert f"{RETRAIN} could not be run again as it was: the module file of {RETRAIN} changed since it was " \
           f"recorded ({module.resolve()}: sha256 {digest[:12]}... then" in changed, changed
    assert promotions(home).loc["3", "trained_by"] == RETRAIN and store.champion_version() == "v0002"


def test_fallback_trains_the_challenger_after_a_raising_retrain(home, tmp_path, user_code, instance, monkeypatch):
    spec = pipeline(home, tmp_path, [1, 3], {"train": TRAIN, "retrain": RETRAIN, "fallback": FALLBACK})
    monkeypatch.setenv("MY_PROJECT_RETRAIN", "raise")
    results, _ = run_pipeline(home, spec, instance)
    assert all(r.success for r in results), results

    store = ModelStore(home.models_dir("demo"))
    manifest = store.manifest("v0002")
    assert manifest["trained_by"]["role"] == "fallback" and manifest["trained_by"]["function"] == FALLBACK
    failure = f"custom_functions.retrain {RETRAIN} raised RuntimeError: warm start diverged (on purpose)"
    assert manifest["note"] == f"{failure}; custom_functions.fallback {FALLBACK} on the block's training rows"
    assert promotions(home).loc["3", ["challenger", "trained_by"]].tolist() == ["v0002", FALLBACK]
    assert [c["role"] for c in calls(tmp_path)] == ["train", "retrain", "fallback"]
    assert "RuntimeError('warm start diverged" in calls(tmp_path)[-1]["error"]
    state = MetricsStore(home.metrics_db).breaker_state("demo")
    assert state.consecutive_failures == 0  # the fallback made a challenger: nothing failed


@pytest.mark.parametrize(("retrain", "fallback", "success", "reason"), [
    ("raise", "none", True,
     (f"custom_functions.retrain {RETRAIN} raised RuntimeError: warm start diverged (on purpose); "
     f"custom_functions.fallback {FALLBACK} returned None: no challenger")),
    ("dict", None, True,
     f"custom_functions.retrain {RETRAIN} returned a builtins.dict without a predict method; no challenger"),
    ("raise", "raise", False,
     (f"custom_functions.retrain {RETRAIN} raised RuntimeError: warm start diverged (on purpose); "
     f"custom_functions.fallback {FALLBACK} raised KeyError: 'no simpler model either'")),
    ("raise", None, False,
     (f"custom_functions.retrain {RETRAIN} raised RuntimeError: warm start diverged (on purpose); "
     "no custom_functions.fallback")),
])
def test_no_challenger_keeps_the_champion_and_only_a_failed_fallback_counts_in_the_breaker(
        home, tmp_path, user_code, instance, monkeypatch, retrain, fallback, success, reason):
    functions = {"train": TRAIN, "retrain": RETRAIN}
    if fallback is not None:
        functions["fallback"] = FALLBACK
        monkeypatch.setenv("MY_PROJECT_FALLBACK", fallback)
    spec = pipeline(home, tmp_path, [1, 3], functions)
    monkeypatch.setenv("MY_PROJECT_RETRAIN", retrain)
    results, _ = run_pipeline(home, spec, instance)
    assert [(r.block, r.success) for r in results] == [("1", True), ("3", success)], results

    store = ModelStore(home.models_dir("demo"))
    assert store.versions() == ["v0001"] and store.champion_version() == "v0001"
    state = MetricsStore(home.metrics_db).breaker_state("demo")
    if success:
        decided = promotions(home).loc["3"]
        assert decided["decision"] == "kept" and decided["challenger"] is None and decided["trained_by"] is None
        assert decided["reason"].endswith(reason), decided["reason"]
        assert state.consecutive_failures == 0
    else:
        assert state.consecutive_failures == 1
        failure = f"demo__challenger_and_champion: calmops_dagster.errors.CustomFunctionError: {reason}"
        assert state.last_reason == f"block 3: {failure}"  # one line: the function and its exception
        assert results[1].summary == failure


def test_the_context_is_a_small_frozen_record():
    context = TrainingContext("demo", "3", "full", ("3",), 0, logging.getLogger("demo"))
    with pytest.raises(AttributeError):
        context.block = "4"


def test_a_fallback_alone_takes_over_when_the_retrain_mode_raises(user_code, tmp_path, block_one, monkeypatch):
    model_spec = {"module": "calmops_dagster.learning.testing_models", "class": "ControlledTree"}
    spec = parse_spec(spec_dict(tmp_path, {"fallback": FALLBACK}, model_spec=model_spec),
                      tmp_path / "demo" / "pipeline.yaml")
    store = ModelStore(tmp_path / "pipelines" / "demo" / "models", key=None)
    assert make_challenger(spec, store, "1", block_one, "no champion yet").trained_by is None  # the mode trains

    monkeypatch.setenv("CALMOPS_TEST_FIT_FAIL", "1")
    outcome = make_challenger(spec, store, "2", block_one, "drift")
    assert outcome.version == "v0002" and outcome.trained_by == FALLBACK
    assert outcome.note == ("retrain_mode full (calmops_dagster.learning.testing_models.ControlledTree) raised "
                            "RuntimeError: injected training failure (CALMOPS_TEST_FIT_FAIL=1); "
                            f"custom_functions.fallback {FALLBACK} on the block's training rows")

    without = parse_spec(spec_dict(tmp_path, {}, model_spec=model_spec), tmp_path / "demo" / "pipeline.yaml")
    with pytest.raises(RuntimeError, match="injected training failure"):  # no fallback: the mode's own error
        make_challenger(without, store, "3", block_one, "drift")


def test_a_recorded_function_that_no_longer_resolves_says_why(user_code, tmp_path):
    function = resolve_function("retrain", RETRAIN, ["my_project"])
    lineage = function_lineage("retrain", RETRAIN, function)
    assert cannot_rerun(lineage, ["my_project"]) is None
    assert cannot_rerun(lineage, []) == (f"{RETRAIN} no longer resolves: module 'my_project.training' is not in "
                                         "custom_functions.allow_modules []; add it there to import it")
    assert cannot_rerun({"role": "train"}, ["my_project"]) == \
        "the manifest's trained_by {'role': 'train'} names no function"
