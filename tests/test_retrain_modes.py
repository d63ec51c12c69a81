"""Each retrain mode on generated drifting data: the model changes the way the mode says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV

from calmops_dagster.errors import SpecError
from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.ingest.block_history import blocks_before, read_blocks
from calmops_dagster.learning.retrain_modes import StackedModel, history_needed, train_challenger
from calmops_dagster.learning.training import fit_full
from calmops_dagster.spec import parse_spec
from calmops_dagster.store.model_store import ModelStore
from tests.conftest import block_spec_dict

FEATURES = ["x1", "x2", "x3", "x4", "segment"]


def make_spec(tmp_path, **overrides):
    raw = block_spec_dict("p", str(tmp_path), **overrides)
    return parse_spec(raw, tmp_path / "p" / "pipeline.yaml")


@pytest.fixture(scope="module")
def blocks():
    frame = make_drifting_blocks(n_blocks=4, rows_per_block=300, drift_at=3, seed=11)
    return {b: part.drop(columns="block").reset_index(drop=True) for b, part in frame.groupby("block")}


def xy(frame):
    return frame[FEATURES], frame["y"]


def test_full_trains_a_fresh_model_on_the_block_only(tmp_path, blocks):
    spec = make_spec(tmp_path)
    champion = fit_full(spec, *xy(blocks[1]))
    trained = train_challenger(spec, *xy(blocks[3]), champion, None)
    assert trained.model is not champion and len(trained.rows) == 300
    assert not np.array_equal(trained.model.predict(blocks[3][FEATURES]), champion.predict(blocks[3][FEATURES]))


def test_incremental_continues_the_champion(tmp_path, blocks):
    spec = make_spec(tmp_path, retrain_mode="incremental",
                     model_spec={"module": "sklearn.linear_model", "class": "SGDClassifier",
                                 "params": {"loss": "log_loss", "random_state": 0}})
    champion = train_challenger(spec, *xy(blocks[1]), None, None).model
    before = champion.named_steps["model"].coef_.copy()
    updated = train_challenger(spec, *xy(blocks[3]), champion, None).model
    assert updated is not champion
    assert np.array_equal(champion.named_steps["model"].coef_, before)  # the champion itself is untouched
    assert not np.allclose(updated.named_steps["model"].coef_, before)
    assert updated.named_steps["encode"] is not champion.named_steps["encode"]
    assert updated.named_steps["model"].n_iter_ > 0


def test_incremental_needs_partial_fit_at_spec_load(tmp_path):
    with pytest.raises(SpecError, match="has no partial_fit"):
        make_spec(tmp_path, retrain_mode="incremental")


def test_window_uses_the_last_blocks_or_rows(tmp_path, blocks):
    spec = make_spec(tmp_path, retrain_mode="window", retrain={"window_blocks": 2})
    assert history_needed(spec) == (True, 1)
    trained = train_challenger(spec, *xy(blocks[3]), None, blocks[2])
    assert len(trained.rows) == 600
    by_rows = make_spec(tmp_path, retrain_mode="window", retrain={"window_rows": 450})
    assert history_needed(by_rows) == (True, None)
    history = pd.concat([blocks[1], blocks[2]], ignore_index=True)
    trained = train_challenger(by_rows, *xy(blocks[3]), None, history)
    assert len(trained.rows) == 450 and trained.rows.tail(300)["x1"].tolist() == blocks[3]["x1"].tolist()


def test_replay_mix_replays_a_stratified_share_of_old_rows(tmp_path, blocks):
    spec = make_spec(tmp_path, retrain_mode="replay_mix")
    history = pd.concat([blocks[1], blocks[2]], ignore_index=True)
    trained = train_challenger(spec, *xy(blocks[3]), None, history)
    replayed = len(trained.rows) - 300
    assert replayed == 200  # 40% of the training rows: 200 / 500
    old = trained.rows.iloc[300:]
    assert abs(old["y"].mean() - history["y"].mean()) < 0.03


def test_stacking_combines_champion_and_new_model(tmp_path, blocks):
    spec = make_spec(tmp_path, retrain_mode="stacking")
    champion = fit_full(spec, *xy(blocks[1]))
    trained = train_challenger(spec, *xy(blocks[3]), champion, None)
    assert isinstance(trained.model, StackedModel) and trained.model.base_models[0] is champion
    proba = trained.model.predict_proba(blocks[4][FEATURES])
    assert proba.shape == (300, 2) and np.allclose(proba.sum(axis=1), 1)
    assert trained.model.meta_.coef_.shape == (1, 4)  # two probabilities from each of two models


def test_recalibration_keeps_the_champions_model(tmp_path, blocks):
    spec = make_spec(tmp_path, retrain_mode="recalibration", retrain={"calibration": "isotonic"})
    champion = fit_full(spec, *xy(blocks[1]))
    trained = train_challenger(spec, *xy(blocks[2]), champion, None)
    assert isinstance(trained.model, CalibratedClassifierCV)
    assert trained.model.calibrated_classifiers_[0].estimator.estimator is champion
    assert trained.model.calibrated_classifiers_[0].calibrators[0].__class__.__name__ == "IsotonicRegression"


def test_recalibration_is_for_classifiers(tmp_path):
    with pytest.raises(SpecError, match="classifiers only"):
        make_spec(tmp_path, retrain_mode="recalibration", performance={},
                  model_spec={"module": "sklearn.linear_model", "class": "Ridge"})


def test_regression_modes(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3))
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": x @ [1.0, -2.0, 0.5]})
    for mode in ("full", "window", "stacking", "replay_mix"):
        spec = make_spec(tmp_path, retrain_mode=mode, performance={},
                         model_spec={"module": "sklearn.linear_model", "class": "Ridge"})
        champion = fit_full(spec, frame[["a", "b", "c"]][:300], frame["y"][:300])
        trained = train_challenger(spec, frame[["a", "b", "c"]][300:], frame["y"][300:], champion, frame[:300])
        predicted = trained.model.predict(frame[["a", "b", "c"]])
        assert np.sqrt(np.mean((predicted - frame["y"]) ** 2)) < 0.1, mode


def test_incremental_river_model_learns_the_new_concept(tmp_path, blocks):
    spec = make_spec(tmp_path, retrain_mode="incremental", trust_pickle=True,
                     model_spec={"module": "river.naive_bayes", "class": "GaussianNB"})
    assert spec.task == "classification"  # the river adapter is an sklearn classifier
    champion = train_challenger(spec, *xy(blocks[1]), None, None).model
    before = champion.predict_proba(blocks[4][FEATURES])
    updated = train_challenger(spec, *xy(blocks[3]), champion, None).model
    np.testing.assert_array_equal(champion.predict_proba(blocks[4][FEATURES]), before)  # champion untouched
    old_acc = (champion.predict(blocks[4][FEATURES]) == blocks[4]["y"]).mean()
    new_acc = (updated.predict(blocks[4][FEATURES]) == blocks[4]["y"]).mean()
    assert new_acc > old_acc + 0.2  # it learned the drifted concept of block 3
    store = ModelStore(tmp_path / "models")
    version = store.save(updated, reference=blocks[3])
    assert store.manifest(version)["format"] == "pickle"  # river state is not skops-vouchable
    np.testing.assert_array_equal(store.load(version, spec.pickle_trusted).predict(blocks[4][FEATURES]),
                                  updated.predict(blocks[4][FEATURES]))


def test_river_adapters_any_two_labels_and_regression():
    from river.linear_model import LinearRegression, LogisticRegression

    from calmops_dagster.learning.river_models import wrap_river

    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 2))
    labels = np.where(X[:, 0] > 0, "churn", "stay")
    clf = wrap_river(LogisticRegression()).fit(X, labels)
    assert list(clf.classes_) == ["churn", "stay"] and (clf.predict(X) == labels).mean() > 0.9
    with pytest.raises(ValueError, match="not among the classes"):
        clf.partial_fit(X[:5], ["other"] * 5)
    y = X @ [1.0, -0.5]
    reg = wrap_river(LinearRegression()).fit(X[:200], y[:200])
    first = np.sqrt(np.mean((reg.predict(X) - y) ** 2))
    reg.partial_fit(X[200:], y[200:])  # continues from where fit stopped
    assert np.sqrt(np.mean((reg.predict(X) - y) ** 2)) < min(first, 0.2)


def keep_block(blocks_dir, block: str, frame: pd.DataFrame) -> None:
    """``blocks_dir/<block>.parquet`` as the assets' IO manager keeps a block's rows."""
    blocks_dir.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(blocks_dir / f"{block}.parquet", index=False)


def test_blocks_before_follows_block_order_or_the_given_processing_order(tmp_path):
    for key in ("2", "10"):
        keep_block(tmp_path / "block", key, pd.DataFrame({"x": [1.0]}))
    assert blocks_before(tmp_path / "block", "10") == ["2"]  # numeric block order, not text order
    assert blocks_before(tmp_path / "block", "11", last=1) == ["10"]
    for value, key in enumerate(("b-1", "a-2"), start=2):
        keep_block(tmp_path, key, pd.DataFrame({"x": [float(value)]}))
    arrival = ["b-1", "a-2", "c-3"]  # stream keys in arrival order
    assert blocks_before(tmp_path, "c-3", order=arrival) == ["b-1", "a-2"]
    assert blocks_before(tmp_path, "c-3", last=1, order=arrival) == ["a-2"]
    assert blocks_before(tmp_path, "c-3", last=0, order=arrival) == []
    assert read_blocks(tmp_path, ["b-1", "a-2"])["x"].tolist() == [2.0, 3.0]
    assert read_blocks(tmp_path, ["a-2", "b-1"])["x"].tolist() == [3.0, 2.0]
    assert read_blocks(tmp_path, []).empty
    with pytest.raises(ValueError, match="not in the given processing order"):
        blocks_before(tmp_path, "zzz", order=arrival)
