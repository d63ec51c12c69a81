"""Spec validation: every problem names the file and the field."""

from __future__ import annotations

import sys

import pytest
import yaml

from calmops_dagster.errors import SpecError
from calmops_dagster.spec import load_spec
from tests.conftest import block_spec_dict


def write(home, name, raw) -> str:
    path = home.spec_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_valid_spec_loads_with_defaults(home, tmp_path):
    spec = load_spec(write(home, "ok", block_spec_dict("ok", "data")))
    assert spec.data_dir == (home.pipeline_dir("ok") / "data").resolve()
    assert spec.task == "classification" and spec.performance.metric == "balanced_accuracy"
    assert spec.circuit_breaker.max_failures == 3 and spec.circuit_breaker.backoff_minutes == 120
    assert spec.partitions_name == "ok_blocks"


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"colour": "blue"}, "colour", "unknown key"),
        ({"type": "river"}, "type", "'block', 'stream' or 'ipip'"),
        ({"performance": {"thresholds": "high"}}, "performance.thresholds", "valid dictionary"),
        ({"drift": {"alpha": "small"}}, "drift.alpha", "valid number"),
        ({"schedule": {"type": "interval", "params": {"weeks": 1}}}, "schedule", "exactly one of"),
        ({"schedule": {"type": "cron", "params": {"cron": "61 * * * *"}}}, "schedule", "valid cron string"),
        ({"schedule": {"type": "cron", "params": {"cron": "0 0 31 2 *"}}}, "schedule", "valid cron string"),
        ({"schedule": {"type": "cron", "params": {"cron": "hourly"}}}, "schedule", "valid cron string"),
        ({"circuit_breaker": {"max_failures": 0}}, "circuit_breaker.max_failures", "greater than or equal"),
        ({"performance": {"thresholds": {"precision@k": 0.5}}}, "(top level)", "unknown classification metric"),
    ],
)
def test_invalid_field_is_named_with_the_file(home, change, field, words):
    raw = {**block_spec_dict("bad", "data"), **change}
    path = write(home, "bad", raw)
    with pytest.raises(SpecError) as error:
        load_spec(path)
    message = str(error.value)
    assert str(path) in message and f"field '{field}'" in message and words in message


@pytest.mark.parametrize("cron", ["0 * * * *", "*/10 * * * *", "@daily", "0 9 * * 1-5"])
def test_a_cron_schedule_dagster_accepts_is_valid(home, cron):
    raw = {**block_spec_dict("ok", "data"), "schedule": {"type": "cron", "params": {"cron": cron}}}
    assert load_spec(write(home, "ok", raw)).schedule.params == {"cron": cron}


def test_missing_field_is_named(home):
    raw = block_spec_dict("bad", "data")
    del raw["model_spec"]
    with pytest.raises(SpecError, match=r"pipeline.yaml: field 'model_spec': Field required"):
        load_spec(write(home, "bad", raw))


def test_block_pipeline_needs_block_col_and_target(home):
    raw = block_spec_dict("bad", "data")
    del raw["block_col"]
    with pytest.raises(SpecError, match="'block_col' is required for a block pipeline"):
        load_spec(write(home, "bad", raw))
    raw = block_spec_dict("bad", "data")
    del raw["target"]
    with pytest.raises(SpecError, match="'target' is required unless prediction_only"):
        load_spec(write(home, "bad", raw))


def test_model_spec_imports_only_trusted_packages_unless_opted_in(home, tmp_path, monkeypatch):
    raw = block_spec_dict("bad", "data", model_spec={"module": "collections", "class": "OrderedDict"})
    with pytest.raises(SpecError, match=r"field 'model_spec': module 'collections' is not in the trusted"):
        load_spec(write(home, "bad", raw))
    (tmp_path / "own_models.py").write_text(
        "from sklearn.tree import DecisionTreeClassifier\n\n"
        "class OwnTree(DecisionTreeClassifier):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = block_spec_dict("bad", "data", model_spec={"module": "own_models", "class": "OwnTree"})
    with pytest.raises(SpecError, match=r"module 'own_models' is not in the trusted modules"):
        load_spec(write(home, "bad", raw))
    raw["model_spec"]["allow_any_module"] = True
    spec = load_spec(write(home, "bad", raw))
    assert spec.model_spec.class_name == "OwnTree" and spec.task == "classification"


@pytest.mark.parametrize("module, klass, words", [
    # the package root alone is not enough: only the modules where estimators live
    ("calmops_dagster.interfaces.tutorials._common", "Path", "not in the trusted modules"),
    ("calmops_dagster.interfaces.cli", "CalmOpsHome", "not in the trusted modules"),
    ("calmops_dagster.interfaces.tutorials.04_generators", "X", "not a dotted module path"),
    ("sklearnx.evil", "Model", "not in the trusted modules"),  # a prefix of the name is not the package
    ("sklearn.utils", "Bunch", "not an estimator"),
    ("sklearn.no_such_module", "Model", "no such module"),
])
def test_allow_list_matches_full_dotted_module_paths(home, module, klass, words):
    raw = block_spec_dict("bad", "data", model_spec={"module": module, "class": klass})
    with pytest.raises(SpecError, match=words):
        load_spec(write(home, "bad", raw))


def test_a_refused_module_is_never_imported(home, tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "calmops_hostile.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = block_spec_dict("bad", "data", model_spec={"module": "calmops_hostile", "class": "Model"})
    with pytest.raises(SpecError, match="not in the trusted modules"):
        load_spec(write(home, "bad", raw))
    assert not marker.exists() and "calmops_hostile" not in sys.modules


def test_validating_a_spec_instantiates_no_estimator(home, tmp_path, monkeypatch):
    """Task inference and the incremental check read the class; only training builds an instance."""
    marker = tmp_path / "instantiated"
    (tmp_path / "noisy_models.py").write_text(
        "from sklearn.linear_model import SGDClassifier\n\n"
        "class NoisySGD(SGDClassifier):\n"
        "    def __init__(self, **kw):\n"
        f"        open({str(marker)!r}, 'w').close()\n"
        "        super().__init__(**kw)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = block_spec_dict("noisy", "data", retrain_mode="incremental",
                          model_spec={"module": "noisy_models", "class": "NoisySGD", "allow_any_module": True})
    spec = load_spec(write(home, "noisy", raw))
    assert spec.task == "classification" and not marker.exists()
    from calmops_dagster.interfaces.cli import main

    assert main(["list"]) == 0
    assert not marker.exists()
    spec.model_spec.make_estimator()
    assert marker.exists()


def test_unknown_class_and_name_folder_mismatch(home):
    raw = block_spec_dict("bad", "data", model_spec={"module": "sklearn.ensemble", "class": "RandomForrest"})
    with pytest.raises(SpecError, match="has no class 'RandomForrest'"):
        load_spec(write(home, "bad", raw))
    with pytest.raises(SpecError, match="'other' does not match its folder 'bad'"):
        load_spec(write(home, "bad", block_spec_dict("other", "data")))


def test_spec_is_parsed_by_libyaml_to_the_same_values(home, monkeypatch):
    """Every run process loads every spec, so the spec's YAML goes through libyaml's parser (PyYAML's wheels
    ship it), not PyYAML's pure-Python scanner, and gives what ``yaml.safe_load`` gives."""
    assert yaml.__with_libyaml__, "PyYAML without libyaml: specs would be parsed by the slow pure-Python parser"
    raw = block_spec_dict("ok", "data")
    path = write(home, "ok", raw)
    expected = load_spec(path)

    def pure_python_scanner(*_args, **_kwargs):
        raise AssertionError("the spec went through PyYAML's pure-Python scanner")

    monkeypatch.setattr(yaml.scanner.Scanner, "__init__", pure_python_scanner)
    assert load_spec(path) == expected


def test_not_yaml_and_not_a_mapping(home):
    path = home.spec_path("bad")
    path.parent.mkdir(parents=True)
    path.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(path)


def test_river_models_need_trust_pickle(home):
    raw = block_spec_dict("river", "data", model_spec={"module": "river.naive_bayes", "class": "GaussianNB"})
    with pytest.raises(SpecError, match="river models are stored as pickle.*set trust_pickle: true"):
        load_spec(write(home, "river", raw))
    assert load_spec(write(home, "river", {**raw, "trust_pickle": True})).pickle_trusted
