"""The pipeline prepares the champion's drift reference once: in memory for the blocks of one process, and
as a file beside the model for the next process (a forked run worker)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from conftest import block_spec_dict
from sklearn.dummy import DummyClassifier
from test_block_pipeline import query, run_pipeline

from calmops_dagster.drift import DriftConfig, detect_drift
from calmops_dagster.drift.profile import ReferenceProfile
from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.spec import parse_spec, save_spec
from calmops_dagster.steps import drift_profile
from calmops_dagster.store.model_store import ModelStore

log = logging.getLogger("test_drift_profile_pipeline")


@pytest.fixture
def builds(monkeypatch) -> list[int]:
    """Rows of every reference a profile is built from, with the process's profiles forgotten first."""
    monkeypatch.setattr(drift_profile, "_PROFILES", type(drift_profile._PROFILES)())
    built, real = [], ReferenceProfile.build.__func__

    def counting(cls, reference, config=None, source=""):
        built.append(len(reference))
        return real(cls, reference, config, source)

    monkeypatch.setattr(ReferenceProfile, "build", classmethod(counting))
    return built


def test_two_blocks_through_the_pipeline_prepare_the_reference_once(home, tmp_path, instance, builds):
    frame = make_drifting_blocks(n_blocks=3, rows_per_block=300, drift_at=3, seed=7)
    write_blocks(frame, tmp_path / "data", block_col="block")
    spec = parse_spec(block_spec_dict("demo", tmp_path / "data"), home.spec_path("demo"))
    save_spec(spec, home.spec_path("demo"))
    results = run_pipeline(home, spec, instance)
    assert [r.block for r in results] == ["1", "2", "3"] and all(r.success for r in results)

    judged = query(home, "SELECT block, reference_version FROM drift_summary ORDER BY block")
    assert judged["reference_version"].tolist()[1:] == ["v0001", "v0001"]  # blocks 2 and 3: one reference
    store = ModelStore(home.models_dir("demo"))
    assert builds == [len(store.reference("v0001"))]  # prepared for block 2, reused for block 3
    assert len(list(store.folder("v0001").glob(f"{drift_profile.PROFILE_PREFIX}*.npz"))) == 1

    # what was stored is what the reference frame gives
    features = store.manifest("v0001")["features"]
    block3 = pd.read_parquet(home.blocks_dir("demo") / "3.parquet")  # the rows as the pipeline read them
    expected = detect_drift(store.reference("v0001")[features], block3[features], spec.drift).rows
    stored = query(home, "SELECT feature, test, p_value, statistic FROM drift_results WHERE block = '3'")
    merged = expected.merge(stored, on=["feature", "test"], suffixes=("", "_stored"))
    assert len(merged) == len(expected)
    np.testing.assert_array_equal(merged["statistic"], merged["statistic_stored"])
    np.testing.assert_array_equal(merged["p_value"], merged["p_value_stored"])


@pytest.fixture
def champion(tmp_path):
    """A model store with one version whose reference has a numeric, a categorical and a label column."""
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"x": rng.normal(size=500), "c": rng.choice(["a", "b"], 500),
                              "y": rng.integers(0, 2, 500)})
    store = ModelStore(tmp_path / "pipelines" / "demo" / "models", key=None)
    version = store.save(DummyClassifier().fit(reference[["x"]], reference["y"]), reference, features=["x", "c"])
    return store, version


def _profile(store, version, config=None):
    return drift_profile.champion_profile(store, version, store.manifest(version), config or DriftConfig(),
                                          lambda: store.reference(version), log)


def test_the_profile_file_serves_a_new_process_and_is_rebuilt_when_bad(champion, builds, caplog, monkeypatch):
    store, version = champion
    first = _profile(store, version)
    assert builds == [500] and _profile(store, version) is first  # in memory
    (path,) = store.folder(version).glob(f"{drift_profile.PROFILE_PREFIX}*.npz")
    assert list(first.columns) == ["x", "c"] and first.source == store.manifest(version)["reference_sha256"]

    monkeypatch.setattr(drift_profile, "_PROFILES", type(drift_profile._PROFILES)())  # another process
    from_file = _profile(store, version)
    assert builds == [500] and from_file is not first
    np.testing.assert_array_equal(from_file.column("x").sorted_values, first.column("x").sorted_values)

    caplog.set_level(logging.WARNING)
    for bad, why in ((b"half a file", "not a readable drift profile"),
                     (ReferenceProfile.build(pd.DataFrame({"x": [1.0] * 30, "c": ["a"] * 30}), DriftConfig(),
                                             source="another").to_npz(), "of another reference or settings")):
        builds.clear()
        path.write_bytes(bad)
        monkeypatch.setattr(drift_profile, "_PROFILES", type(drift_profile._PROFILES)())
        caplog.clear()
        _profile(store, version)
        assert builds == [500]
        (line,) = [r.getMessage() for r in caplog.records]
        assert line.startswith(f"{path}: ") and why in line and "\n" not in line
        assert ReferenceProfile.from_npz(path.read_bytes()).source == first.source  # rewritten

    builds.clear()
    other = _profile(store, version, DriftConfig(seed=1))  # other settings: another profile, another file
    assert builds == [500] and other.settings.seed == 1
    assert len(list(store.folder(version).glob(f"{drift_profile.PROFILE_PREFIX}*.npz"))) == 2


def test_with_a_signing_key_a_planted_profile_is_refused(tmp_path, builds, caplog):
    """Whoever can write the model store cannot hide drift behind a profile file of their own."""
    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"x": rng.normal(size=300), "y": rng.integers(0, 2, 300)})
    store = ModelStore(tmp_path / "pipelines" / "demo" / "models", key=b"s" * 32)
    version = store.save(DummyClassifier().fit(reference[["x"]], reference["y"]), reference, features=["x"])
    honest = _profile(store, version)
    (path,) = store.folder(version).glob(f"{drift_profile.PROFILE_PREFIX}*.npz")
    planted = ReferenceProfile.build(pd.DataFrame({"x": rng.normal(5.0, size=300)}), DriftConfig(),
                                     source=honest.source)
    path.write_bytes(planted.to_npz())  # right source and fingerprint, no signature
    drift_profile._PROFILES.clear()
    caplog.set_level(logging.WARNING)
    again = _profile(store, version)
    assert builds == [300] * 3 and "not signed with the model signing key" in caplog.text  # honest, planted, again
    np.testing.assert_array_equal(again.column("x").sorted_values, honest.column("x").sorted_values)


def test_a_manifest_without_a_reference_hash_is_not_cached(champion, builds):
    """Nothing to key the profile by: it is built from the reference (whose read checks the version) each time."""
    store, version = champion
    manifest = {k: v for k, v in store.manifest(version).items() if k != "reference_sha256"}
    for _ in range(2):
        drift_profile.champion_profile(store, version, manifest, DriftConfig(), lambda: store.reference(version), log)
    assert builds == [500, 500] and not drift_profile._PROFILES
    assert not list(store.folder(version).glob(f"{drift_profile.PROFILE_PREFIX}*"))
