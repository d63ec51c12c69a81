"""Model files: skops behind a hash manifest and an explicit type allow-list; anything else is refused."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.tree import DecisionTreeClassifier

from calmops_dagster.errors import ModelIntegrityError, ModelVersionError
from calmops_dagster.learning.ipip import IPIPClassifier
from calmops_dagster.learning.model_factory import build_model
from calmops_dagster.learning.retrain_modes import StackedModel
from calmops_dagster.spec import ModelSpec
from calmops_dagster.store import model_store
from calmops_dagster.store.model_store import TRUSTED_TYPES, ModelStore, file_sha256
from calmops_dagster.store.skops_io import skops_io


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(4)
    X = pd.DataFrame({"a": rng.normal(size=240), "b": rng.normal(size=240), "s": rng.choice(["u", "v"], 240)})
    y = ((X["a"] + (X["s"] == "u")) > 0.5).astype(int)
    return X, y


def spec_model(module, cls, X, **params):
    return build_model(ModelSpec.model_validate({"module": module, "class": cls, "params": params}), X)


@pytest.fixture(scope="module")
def models(data):
    X, y = data
    forest = spec_model("sklearn.ensemble", "RandomForestClassifier", X, n_estimators=5, random_state=0).fit(X, y)
    lgbm = spec_model("lightgbm", "LGBMClassifier", X, n_estimators=5, verbose=-1).fit(X, y)
    imbalanced = np.r_[np.ones(30), np.zeros(210)].astype(int)
    ipip = spec_model("sklearn.tree", "DecisionTreeClassifier", X, random_state=0)
    ipip.steps[-1] = ("model", IPIPClassifier(estimator=DecisionTreeClassifier(random_state=0), random_state=0))
    return {
        "forest": forest,
        "lgbm": lgbm,
        "calibrated": CalibratedClassifierCV(FrozenEstimator(forest), method="sigmoid").fit(X, y),
        "stacked": StackedModel([forest, lgbm], "classification").fit(X, y),
        "ipip": ipip.fit(X, imbalanced),
    }


@pytest.mark.parametrize("name", ["forest", "lgbm", "calibrated", "stacked", "ipip"])
def test_every_model_the_platform_makes_round_trips_as_skops(tmp_path, data, models, name):
    X, _ = data
    store = ModelStore(tmp_path)
    version = store.save(models[name], reference=X, trained_on_blocks=["1"], metrics={"accuracy": 0.9})
    manifest = store.manifest(version)
    assert manifest["format"] == "skops" and manifest["model_file"] == "model.skops"
    assert manifest["sha256"] == file_sha256(tmp_path / version / "model.skops")
    assert {"python", "scikit-learn", "numpy", "skops"} <= set(manifest["libraries"])
    assert manifest["trained_on_blocks"] == ["1"] and manifest["metrics"] == {"accuracy": 0.9}
    np.testing.assert_array_equal(store.load(version).predict_proba(X), models[name].predict_proba(X))
    assert not list(tmp_path.glob(".staging-*"))  # assembled aside, renamed into place


def test_a_file_failing_its_hash_is_never_deserialized(tmp_path, data, models, monkeypatch):
    X, _ = data
    store = ModelStore(tmp_path)
    version = store.save(models["forest"], reference=X)
    path = tmp_path / version / "model.skops"
    path.write_bytes(path.read_bytes()[:-4] + b"evil")

    def must_not_run(*args, **kwargs):
        raise AssertionError("deserialized a file that failed its hash")

    monkeypatch.setattr(skops_io(), "load", must_not_run)
    monkeypatch.setattr(skops_io(), "loads", must_not_run)
    monkeypatch.setattr(skops_io(), "get_untrusted_types", must_not_run)
    with pytest.raises(ModelIntegrityError, match="does not match the manifest"):
        store.load(version)



def test_a_version_loaded_again_is_a_copy_of_the_model_deserialized_before(tmp_path, data, models, monkeypatch):
    """Loading a version again in the same process deserializes nothing: it is a deep copy (a change to one
    copy reaches no other). The file is still checked at every load: changed on disk, it is refused."""
    X, _ = data
    store = ModelStore(tmp_path)
    version = store.save(models["forest"], reference=X)
    first = store.load(version)

    def must_not_run(*args, **kwargs):
        raise AssertionError("deserialized the same file twice")

    monkeypatch.setattr(model_store, "load_skops", must_not_run)
    second = store.load(version)
    assert second is not first
    np.testing.assert_array_equal(second.predict_proba(X), first.predict_proba(X))
    first.steps[-1][1].classes_ = np.array([7, 8])
    assert store.load(version).steps[-1][1].classes_.tolist() == [0, 1]
    path = tmp_path / version / "model.skops"
    path.write_bytes(path.read_bytes()[:-4] + b"evil")
    with pytest.raises(ModelIntegrityError, match="does not match the manifest"):
        store.load(version)

def test_a_tampered_pickle_is_never_unpickled(tmp_path, data, monkeypatch):
    X, y = data
    store = ModelStore(tmp_path)
    model = DecisionTreeClassifier(random_state=0).fit(X[["a", "b"]], y)
    monkeypatch.setattr(model_store, "_serialize", lambda m: ("pickle", pickle.dumps(m)))  # as for river models
    version = store.save(model, reference=X)
    assert store.manifest(version)["format"] == "pickle"
    np.testing.assert_array_equal(store.load(version, trust_pickle=True).predict(X[["a", "b"]]),
                                  model.predict(X[["a", "b"]]))
    (tmp_path / version / "model.pickle").write_bytes(pickle.dumps(model) + b"\x00")
    monkeypatch.setattr(model_store.pickle, "load", lambda *a: pytest.fail("unpickled an unvouched file"))
    with pytest.raises(ModelIntegrityError, match="does not match the manifest"):
        store.load(version, trust_pickle=True)


def forge_manifest(store: ModelStore, version: str, **fields) -> None:
    """Rewrite fields of a version's manifest, as someone with write access to the model folder could."""
    (store.root / version / "manifest.json").write_text(json.dumps({**store.manifest(version), **fields}))


def test_a_file_with_the_right_hash_but_the_wrong_format_is_refused(tmp_path, data, models):
    X, _ = data
    store = ModelStore(tmp_path)
    version = store.save(models["forest"], reference=X)
    path = tmp_path / version / "model.skops"
    path.write_bytes(b"this is not a zip archive")
    forge_manifest(store, version, sha256=file_sha256(path))  # vouches for the bytes; they are not a model
    with pytest.raises(ModelIntegrityError, match="neither a skops file nor a pickle"):
        store.load(version)
    path.write_bytes(b"PK\x03\x04 a broken zip")
    forge_manifest(store, version, sha256=file_sha256(path), format="yaml")  # the manifest's word is ignored
    with pytest.raises(ModelIntegrityError, match="cannot be loaded as skops"):
        store.load(version)


class Payload:
    """A pickle that runs code when loaded: it creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_pickle(store: ModelStore, version: str, marker, name: str = "model.pkl") -> None:
    """Someone with write access to the model folder plants a pickle and a manifest vouching for it."""
    path = (store.root / version / name)
    path.write_bytes(pickle.dumps(Payload(marker)))
    forge_manifest(store, version, format="pickle", model_file=name, sha256=file_sha256(path))


def test_a_planted_pickle_is_refused_unless_the_spec_trusts_pickle(tmp_path, data, models):
    """Hole 1: the manifest vouched for itself and the pickle ran on load."""
    X, _ = data
    store = ModelStore(tmp_path / "models", key=None)
    version = store.save(models["forest"], reference=X)
    marker = tmp_path / "payload-ran"
    plant_pickle(store, version, marker)
    with pytest.raises(ModelIntegrityError, match="a pickle runs code when loaded: set trust_pickle: true"):
        store.load(version)
    assert not marker.exists()
    # the format comes from the bytes: calling the pickle "model.skops" changes nothing
    plant_pickle(store, version, marker, name="model.skops")
    forge_manifest(store, version, format="skops")
    with pytest.raises(ModelIntegrityError, match="set trust_pickle: true"):
        store.load(version)
    assert not marker.exists()


def test_with_a_key_an_unsigned_or_forged_manifest_is_refused_before_anything(tmp_path, data, models):
    X, _ = data
    key = b"k" * 40
    store = ModelStore(tmp_path / "models", key=key)
    version = store.save(models["forest"], reference=X, metrics={"accuracy": 0.9})
    assert store.manifest(version)["signature"].startswith("hmac-sha256:")
    np.testing.assert_array_equal(store.load(version).predict(X), models["forest"].predict(X))
    assert len(store.reference(version)) == len(X)
    marker = tmp_path / "payload-ran"
    plant_pickle(store, version, marker)  # keeps the old signature: it no longer matches
    with pytest.raises(ModelIntegrityError, match="signature does not match"):
        store.load(version, trust_pickle=True)  # even a pipeline that trusts pickle
    manifest = store.manifest(version)
    del manifest["signature"]
    (store.root / version / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="manifest is not signed"):
        store.load(version, trust_pickle=True)
    with pytest.raises(ModelIntegrityError, match="manifest is not signed"):
        store.reference(version)
    assert not marker.exists()
    other = ModelStore(tmp_path / "models", key=b"o" * 40)  # signed with another key
    fresh = store.save(models["forest"], reference=X)
    with pytest.raises(ModelIntegrityError, match="signature does not match"):
        other.load(fresh)


def test_model_file_must_stay_in_its_version_folder(tmp_path, data, models):
    """Hole 1b: ``"model_file": "../../outside.bin"`` ran a pickle from outside the model store."""
    X, _ = data
    store = ModelStore(tmp_path / "pipelines" / "p" / "models", key=None)
    version = store.save(models["forest"], reference=X)
    outside = tmp_path / "outside.bin"
    marker = tmp_path / "payload-ran"
    outside.write_bytes(pickle.dumps(Payload(marker)))
    for name in ("../../outside.bin", str(outside)):
        forge_manifest(store, version, format="pickle", model_file=name, sha256=file_sha256(outside))
        with pytest.raises(ModelIntegrityError, match="lies outside the version folder"):
            store.load(version, trust_pickle=True)
    (store.root / version / "model.bin").symlink_to(outside)
    forge_manifest(store, version, format="pickle", model_file="model.bin", sha256=file_sha256(outside))
    with pytest.raises(ModelIntegrityError, match="lies outside the version folder"):
        store.load(version, trust_pickle=True)
    assert not marker.exists()


NOT_VERSIONS = ["../../other/models/v0001", "/etc/passwd", "v0001/../v0002", "v0001/", "v1", "V0001", "v0001\n",
                "", None, 1]


@pytest.mark.parametrize("name", NOT_VERSIONS)
def test_a_version_is_a_folder_of_the_pipelines_own_models(tmp_path, data, models, name):
    """``calmops rollback p --to ../../other/models/v0001`` made another pipeline's model p's champion."""
    X, _ = data
    ModelStore(tmp_path / "pipelines" / "other" / "models", key=None).save(models["forest"], reference=X)
    store = ModelStore(tmp_path / "pipelines" / "p" / "models", key=None)
    version = store.save(models["forest"], reference=X)
    store.set_champion(version, "1", "promoted")
    for read in (store.load, store.manifest, store.verified_manifest, store.reference,
                 lambda v: store.set_champion(v, "2", "rolled_back")):
        with pytest.raises(ModelVersionError, match="is not a model version of pipeline 'p'"):
            read(name)
    assert store.champion_version() == version and len(store.champion_history()) == 1


@pytest.mark.parametrize("name", [n for n in NOT_VERSIONS if isinstance(n, str)])
def test_a_champion_pointer_naming_no_version_is_refused_and_a_new_champion_repairs_it(tmp_path, data, models,
                                                                                         name):
    X, _ = data
    ModelStore(tmp_path / "pipelines" / "other" / "models", key=None).save(models["forest"], reference=X)
    store = ModelStore(tmp_path / "pipelines" / "p" / "models", key=None)
    version = store.save(models["forest"], reference=X)
    (store.root / "champion.json").write_text(json.dumps({"version": name, "history": []}))
    with pytest.raises(ModelVersionError, match=r"champion.json: champion pointer names .* not a model version"):
        store.champion_version()
    store.set_champion(version, "manual", "rolled_back")
    assert store.champion_version() == version


def test_a_signed_version_is_believed_only_in_its_own_folder(tmp_path, data, models):
    """A signed v0001 copied to v0009, or into another pipeline's models, keeps a valid signature: the manifest
    names its version and pipeline, so the copy is refused."""
    X, _ = data
    key = b"k" * 40
    store = ModelStore(tmp_path / "pipelines" / "p" / "models", key=key)
    other = ModelStore(tmp_path / "pipelines" / "other" / "models", key=key)
    version, foreign = store.save(models["forest"], reference=X), other.save(models["forest"], reference=X)
    assert (store.manifest(version)["version"], store.manifest(version)["pipeline"]) == ("v0001", "p")
    shutil.copytree(store.root / version, store.root / "v0009")
    shutil.copytree(other.root / foreign, store.root / "v0005")
    for copy, named in (("v0009", "'v0001' of pipeline 'p'"), ("v0005", "'v0001' of pipeline 'other'")):
        for read in (store.load, store.reference, store.verified_manifest):
            with pytest.raises(ModelIntegrityError, match=f"manifest is of version {named}, not {copy} of 'p'"):
                read(copy)
    store.load(version)  # the original stays good
    with pytest.raises(ValueError, match="this store holds the models of 'p'"):
        store.save(models["forest"], reference=X, pipeline="other")


def test_a_publish_removes_stale_staging_folders_and_leaves_others_publishing(tmp_path, data, models):
    import os
    import time

    X, _ = data
    store = ModelStore(tmp_path / "pipelines" / "p" / "models", key=None)
    store.root.mkdir(parents=True)
    old, young = store.root / ".staging-abandoned", store.root / ".staging-unknown-owner"
    old.mkdir()
    young.mkdir()
    stamp = time.time() - model_store.STALE_STAGING_SECONDS - 60
    os.utime(old, (stamp, stamp))
    assert store.save(models["forest"], reference=X) == "v0001"
    assert sorted(p.name for p in store.root.iterdir()) == [young.name, "v0001"]


def test_the_signing_key_comes_from_the_environment_and_never_from_the_home(tmp_path, monkeypatch):
    from calmops_dagster.errors import ModelKeyError
    from calmops_dagster.store.model_signing import MODEL_KEY_ENV, MODEL_KEY_FILE_ENV, model_key

    home = tmp_path / "home"
    monkeypatch.setenv("CALMOPS_HOME", str(home))
    monkeypatch.delenv(MODEL_KEY_ENV, raising=False)
    monkeypatch.delenv(MODEL_KEY_FILE_ENV, raising=False)
    assert model_key() is None and ModelStore(home / "pipelines" / "p" / "models").key is None
    inside = home / "model.key"
    inside.parent.mkdir(parents=True)
    inside.write_text("s" * 64)
    monkeypatch.setenv(MODEL_KEY_FILE_ENV, str(inside))
    with pytest.raises(ModelKeyError, match="lies inside"):
        ModelStore(home / "pipelines" / "p" / "models").key  # noqa: B018
    outside = tmp_path / "model.key"
    outside.write_text("s" * 64 + "\n")
    monkeypatch.setenv(MODEL_KEY_FILE_ENV, str(outside))
    assert ModelStore(home / "pipelines" / "p" / "models").key == b"s" * 64
    monkeypatch.setenv(MODEL_KEY_ENV, "t" * 64)
    with pytest.raises(ModelKeyError, match="set one"):
        model_key()
    monkeypatch.delenv(MODEL_KEY_FILE_ENV)
    assert model_key() == b"t" * 64
    monkeypatch.setenv(MODEL_KEY_ENV, "short")
    with pytest.raises(ModelKeyError, match="at least 32 characters"):
        model_key()


def test_a_type_outside_the_allow_list_is_refused_even_with_a_matching_hash(tmp_path, data, models):
    X, _ = data
    store = ModelStore(tmp_path)
    version = store.save(models["forest"], reference=X)
    # someone swaps the file for one that calls eval, and rewrites the manifest's hash to match
    path = tmp_path / version / "model.skops"
    skops_io().dump(Pipeline([("f", FunctionTransformer(func=eval)), ("m", DecisionTreeClassifier())]), path)
    forge_manifest(store, version, sha256=file_sha256(path))
    assert "builtins.eval" in skops_io().get_untrusted_types(file=path)
    with pytest.raises(ModelIntegrityError, match=r"outside the allow-list: \['builtins.eval'\]"):
        store.load(version)
    # skops enforces the same list while loading: the allow-list names types, not "whatever the file holds"
    with pytest.raises(skops_io().exceptions.UntrustedTypesFoundException):
        skops_io().load(path, trusted=sorted(TRUSTED_TYPES))
    assert not any(t.startswith("builtins.") for t in TRUSTED_TYPES)


def test_a_corrupt_champion_pointer_and_a_missing_version_are_integrity_errors(tmp_path, data, models):
    X, _ = data
    store = ModelStore(tmp_path)
    version = store.save(models["forest"], reference=X)
    store.set_champion(version, "1", "promoted")
    with pytest.raises(ModelIntegrityError, match="does not exist"):
        store.set_champion("v0042", "2", "promoted")
    assert store.champion_version() == version
    (tmp_path / "champion.json").write_text("{not json")
    with pytest.raises(ModelIntegrityError, match="champion pointer is not valid JSON"):
        store.champion_version()
    for shape in ("[]", '{"version": 3, "history": []}', '{"version": "v0001"}'):
        (tmp_path / "champion.json").write_text(shape)
        with pytest.raises(ModelIntegrityError, match="champion pointer is not"):
            store.champion_history()


def test_a_model_skops_cannot_vouch_for_is_stored_as_pickle_behind_the_hash(tmp_path, data):
    X, _ = data
    store = ModelStore(tmp_path)
    own = Pipeline([("f", FunctionTransformer(func=abs)), ("m", DecisionTreeClassifier(random_state=0))])
    own.fit(X[["a", "b"]].abs(), (X["a"] > 0).astype(int))
    version = store.save(own, reference=X)  # builtins.abs is not on the allow-list
    assert store.manifest(version)["format"] == "pickle"
    with pytest.raises(ModelIntegrityError, match="set trust_pickle: true"):
        store.load(version)
    np.testing.assert_array_equal(store.load(version, trust_pickle=True).predict(X[["a", "b"]].abs()),
                                  own.predict(X[["a", "b"]].abs()))


def test_a_store_reads_each_manifest_once_and_hands_out_copies(tmp_path, data, models, monkeypatch):
    """A step asks for the same manifests many times: one read each per store object (one GET on S3)."""
    X, _ = data
    store = ModelStore(tmp_path / "models")
    version = store.save(models["forest"], reference=X, features=list(X.columns))
    reads = []
    original = ModelStore._read_manifest
    monkeypatch.setattr(ModelStore, "_read_manifest", lambda self, v: reads.append(v) or original(self, v))
    first = store.manifest(version)
    first["features"] = ["changed by a caller"]
    assert store.manifest(version)["features"] == list(X.columns) and reads == [version]
    ModelStore(tmp_path / "models").manifest(version)  # another store object reads it again
    assert reads == [version, version]
