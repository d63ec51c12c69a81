"""Tests for calmops_dagster.learning.ipip: the IPIP formulas, subsets, growth, pruning and the sklearn contract."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from sklearn.metrics import balanced_accuracy_score
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from calmops_dagster.learning.ipip import IPIPClassifier, draw_balanced_subset, grow_ensemble, ipip_sizes
from calmops_dagster.store.skops_io import skops_io


def _imbalanced(n_samples=600, seed=0, minority_weight=0.08, class_sep=1.5):
    return make_classification(
        n_samples=n_samples,
        n_features=6,
        n_informative=4,
        weights=[1 - minority_weight],
        class_sep=class_sep,
        flip_y=0,
        random_state=seed,
    )


class RecordingTree(DecisionTreeClassifier):
    """A decision tree that keeps the rows it was fitted on, to inspect IPIP's subsets."""

    def fit(self, X, y, sample_weight=None, check_input=True):
        self.X_seen_ = np.array(X, copy=True)
        self.y_seen_ = np.array(y, copy=True)
        return super().fit(X, y, sample_weight=sample_weight, check_input=check_input)


class FixedProba:
    """A 'fitted model' whose predict_proba returns a fixed (n_holdout, 2) array."""

    def __init__(self, proba_of_class1):
        p1 = np.asarray(proba_of_class1, dtype=float)
        self.proba = np.column_stack([1 - p1, p1])

    def predict_proba(self, X):
        return self.proba


# ---------------------------------------------------------------- formulas


# Hand computation, ln 0.01 = -4.605170:
#  n=2:    np = round(1.5) = 2 (ties to even); p: ln(1/2) = -0.693147, 4.605170 / (2 * 0.693147) = 3.32 -> 4;
#          b: same logarithm (np = 2) -> 4
#  n=6:    np = round(4.5) = 4 (ties to even, not 5); p: ln(5/6) = -0.182322,
#          4.605170 / (4 * 0.182322) = 6.31 -> 7; b: ln(3/4) = -0.287682, 4.605170 / 1.150728 = 4.002 -> 5
#  n=10:   np = round(7.5) = 8; p: ln(0.9) = -0.105361, 4.605170 / 0.842884 = 5.46 -> 6;
#          b: ln(7/8) = -0.133531, 4.605170 / 1.068251 = 4.31 -> 5
#  n=100:  np = 75; p: ln(0.99) = -0.0100503, 4.605170 / 0.753775 = 6.11 -> 7;
#          b: ln(74/75) = -0.0134230, 4.605170 / 1.006726 = 4.57 -> 5
#  n=1000: np = 750; p: ln(0.999) = -0.00100050, 4.605170 / 0.750375 = 6.14 -> 7;
#          b: ln(749/750) = -0.00133422, 4.605170 / 1.000667 = 4.60 -> 5
@pytest.mark.parametrize(
    "n_minority, expected",
    [(2, (2, 4, 4)), (6, (4, 7, 5)), (10, (8, 6, 5)), (100, (75, 7, 5)), (1000, (750, 7, 5))],
)
def test_ipip_sizes_match_hand_computation(n_minority, expected):
    assert ipip_sizes(n_minority) == expected
    assert all(type(v) is int for v in ipip_sizes(n_minority))


@pytest.mark.parametrize("bad", [1, 0, -3])
def test_ipip_sizes_refuses_degenerate_minority_counts(bad):
    with pytest.raises(ValueError, match="at least 2 minority-class rows"):
        ipip_sizes(bad)


@pytest.mark.parametrize("bad", [2.5, True, "10"])
def test_ipip_sizes_refuses_non_integers(bad):
    with pytest.raises(TypeError, match="n_minority must be an integer"):
        ipip_sizes(bad)


# ---------------------------------------------------------------- subsets


def test_subsets_from_spawned_streams_differ_and_have_the_requested_sizes():
    minority, majority = np.arange(0, 20), np.arange(20, 400)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(7).spawn(6)]
    subsets = [draw_balanced_subset(minority, majority, 15, 18, rng) for rng in streams]
    for subset in subsets:
        assert subset.shape == (33,)
        assert np.isin(subset[:15], minority).all() and np.isin(subset[15:], majority).all()
    for a, b in itertools.combinations(subsets, 2):
        assert not np.array_equal(a, b)


def test_each_ensemble_trains_on_its_own_subset():
    X, y = _imbalanced()
    clf = IPIPClassifier(RecordingTree(max_depth=3), random_state=0).fit(X, y)
    first_models = [ens[0] for ens in clf.ensembles_]
    assert len(first_models) == clf.p_ >= 2
    for model in first_models:
        # np_ minority rows (class 1 is the minority here) and round(np_ * 0.55 / 0.45) majority rows
        assert clf.minority_class_ == 1
        assert np.bincount(model.y_seen_, minlength=2).tolist() == [clf.n_majority_draw_, clf.np_]
        assert clf.n_majority_draw_ == round(clf.np_ * 0.55 / 0.45)
    # CalmOps reseeded every subset identically; here no two ensembles start from the same rows.
    for a, b in itertools.combinations(first_models, 2):
        assert not np.array_equal(a.X_seen_, b.X_seen_)


# ---------------------------------------------------------------- growth


def _improving_then_flat_holdout(n_positive=10):
    """Hold-out of one negative (code 0) then n_positive positives (code 1); X is ignored by the stubs."""
    y = np.array([0] + [1] * n_positive)
    return np.zeros((y.size, 1)), y


def _improving(i, n_positive=10):
    # Stub i is sure about positives 1..i and slightly wrong (0.49) on the rest, so with k such stubs the
    # mean probability exceeds 0.5 for exactly positives 1..k: balanced accuracy (1 + k / n) / 2 rises
    # strictly with every stub added.
    return FixedProba([0.0] + [1.0 if j <= i else 0.49 for j in range(1, n_positive + 1)])


def _useless(n_positive=10):
    # Adding it moves no mean probability across 0.5: the score stays the same, so it is rejected.
    return FixedProba([0.0] + [0.49] * n_positive)


def test_growth_stops_at_max_models_and_pulls_no_more_candidates():
    X_hold, y_hold = _improving_then_flat_holdout()
    pulled = []

    def candidates():
        for i in range(1, 11):
            pulled.append(i)
            yield _improving(i)

    models, score = grow_ensemble(candidates(), X_hold, y_hold, max_models=4, max_failures=5)
    assert len(models) == 4
    assert pulled == [1, 2, 3, 4]
    assert score == pytest.approx((1 + 4 / 10) / 2)


def test_growth_stops_after_max_consecutive_failures_and_failures_reset_on_success():
    X_hold, y_hold = _improving_then_flat_holdout()
    good = [_improving(i) for i in (1, 2, 3, 4)]
    sequence = (
        [good[0]]
        + [_useless() for _ in range(4)]
        + [good[1]]
        + [_useless() for _ in range(4)]
        + [good[2]]
        + [_useless() for _ in range(5)]
        + [good[3]]
    )
    pulled = []

    def candidates():
        for model in sequence:
            pulled.append(model)
            yield model

    models, score = grow_ensemble(candidates(), X_hold, y_hold, max_models=10, max_failures=5)
    # 4 failures twice do not stop growth; the 5 in a row after good[2] do, before good[3] is seen.
    assert models == good[:3]
    assert len(pulled) == 1 + 4 + 1 + 4 + 1 + 5
    assert score == pytest.approx((1 + 3 / 10) / 2)


def test_fitted_ensembles_respect_b():
    X, y = _imbalanced(seed=3)
    clf = IPIPClassifier(DecisionTreeClassifier(max_depth=2), max_failures=2, random_state=3).fit(X, y)
    assert all(1 <= len(ens) <= clf.b_ for ens in clf.ensembles_)
    assert len(clf.ensembles_) == len(clf.ensemble_scores_) == clf.p_


# ---------------------------------------------------------------- labels and validation


@pytest.mark.parametrize("pair", [(-1, 1), ("fraud", "ok"), (3, 7), (False, True)])
def test_any_two_labels_give_the_same_model_as_0_1(pair):
    X, y = _imbalanced(seed=1)
    to_label = np.array(pair)  # pair is sorted, so code 0 -> pair[0] and code 1 -> pair[1]
    labels = to_label[y]
    ref = IPIPClassifier(DecisionTreeClassifier(max_depth=4), random_state=5).fit(X, y)
    clf = IPIPClassifier(DecisionTreeClassifier(max_depth=4), random_state=5).fit(X, labels)
    assert clf.classes_.tolist() == list(pair)
    assert clf.minority_class_ == pair[1]
    # Same seed, same encoding: the same models, so the labelled predictions are the 0/1 ones relabelled.
    np.testing.assert_array_equal(clf.predict(X), to_label[ref.predict(X)])
    np.testing.assert_array_equal(clf.predict_proba(X), ref.predict_proba(X))


def test_string_labels_from_a_pandas_frame():
    X, y = _imbalanced(seed=2)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    target = pd.Series(np.where(y == 1, "yes", "no"))
    clf = IPIPClassifier(random_state=0).fit(frame, target)
    assert clf.feature_names_in_.tolist() == list(frame.columns)
    assert set(clf.predict(frame)) <= {"yes", "no"}
    assert balanced_accuracy_score(target, clf.predict(frame)) > 0.8


@pytest.mark.parametrize(
    "y, message",
    [
        (np.arange(90) % 3, r"found 3 class\(es\): \[0, 1, 2\]"),
        (np.array(["a"] * 90), r"found 1 class\(es\): \['a'\]"),
    ],
)
def test_non_binary_targets_are_refused_with_what_was_found(y, message):
    X = np.random.default_rng(0).normal(size=(90, 3))
    with pytest.raises(ValueError, match="Only binary classification is supported") as info:
        IPIPClassifier().fit(X, y)
    assert info.match(message)


def test_continuous_target_is_refused():
    X = np.random.default_rng(0).normal(size=(30, 2))
    with pytest.raises(ValueError, match="Unknown label type"):
        IPIPClassifier().fit(X, X[:, 0])


@pytest.mark.parametrize(
    "params, message",
    [
        ({"majority_share": 1.5}, "majority_share must be a float strictly between 0 and 1"),
        ({"holdout_size": 0}, "holdout_size must be a float strictly between 0 and 1"),
        ({"max_failures": 0}, "max_failures must be an int >= 1"),
        ({"estimator": LinearSVC()}, "estimator must be a classifier with fit and predict_proba"),
        ({"random_state": -1}, "random_state must be None, a non-negative int or a numpy.random.RandomState"),
    ],
)
def test_invalid_parameters_say_what_is_valid(params, message):
    X, y = _imbalanced(n_samples=200)
    with pytest.raises(ValueError, match=message):
        IPIPClassifier(**params).fit(X, y)


def test_too_few_rows_of_a_class_is_a_clear_error():
    X = np.random.default_rng(0).normal(size=(40, 2))
    y = np.array([1, 1] + [0] * 38)
    with pytest.raises(ValueError, match="at least 3 rows of each class"):
        IPIPClassifier().fit(X, y)


# ---------------------------------------------------------------- prediction


def test_predict_proba_rows_sum_to_one_and_predict_is_the_argmax():
    X, y = _imbalanced(seed=4)
    clf = IPIPClassifier(random_state=4).fit(X[:400], y[:400])
    proba = clf.predict_proba(X[400:])
    assert proba.shape == (200, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.predict(X[400:]), clf.classes_[proba.argmax(axis=1)])
    assert balanced_accuracy_score(y[400:], clf.predict(X[400:])) > 0.75


def test_seeded_fits_are_reproducible_and_seeds_matter():
    X, y = _imbalanced(seed=5)
    a = IPIPClassifier(random_state=11).fit(X, y).predict_proba(X)
    b = IPIPClassifier(random_state=11).fit(X, y).predict_proba(X)
    c = IPIPClassifier(random_state=12).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # sklearn's other random_state form, a RandomState, is accepted too.
    d = IPIPClassifier(random_state=np.random.RandomState(11)).fit(X, y).predict_proba(X)
    assert d.shape == a.shape


def test_predict_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError):
        IPIPClassifier().predict(np.zeros((2, 2)))
    with pytest.raises(NotFittedError):
        IPIPClassifier().update(np.zeros((2, 2)), np.array([0, 1]))


# ---------------------------------------------------------------- block update


def _blocks(seed=6):
    X, y = _imbalanced(n_samples=1500, seed=seed, class_sep=2.0)
    return (X[:500], y[:500]), (X[500:1000], y[500:1000]), (X[1000:], y[1000:])


def test_update_pools_and_keeps_the_best_p_on_the_prune_block():
    (Xa, ya), (Xb, yb), (Xc, yc) = _blocks()
    clf = IPIPClassifier(DecisionTreeClassifier(max_depth=3), random_state=0).fit(Xa, ya)
    old = list(clf.ensembles_)
    clf.update(Xb, yb, X_prune=Xc, y_prune=yc)

    assert clf.n_blocks_ == 2
    assert len(clf.ensembles_) == clf.p_
    n_old_kept = sum(any(ens is o for o in old) for ens in clf.ensembles_)
    assert clf.kept_new_share_ == pytest.approx(1 - n_old_kept / clf.p_)

    def score(ens):
        proba = np.mean([m.predict_proba(Xc) for m in ens], axis=0)
        return balanced_accuracy_score(yc, proba.argmax(axis=1))

    kept_scores = [score(ens) for ens in clf.ensembles_]
    np.testing.assert_allclose(clf.ensemble_scores_, kept_scores)
    assert kept_scores == sorted(kept_scores, reverse=True)
    dropped_old = [o for o in old if not any(o is ens for ens in clf.ensembles_)]
    assert all(score(o) <= min(kept_scores) for o in dropped_old)


def test_transductive_pruning_follows_the_concept_of_the_prune_block():
    (Xa, ya), (Xb, yb), (Xc, yc) = _blocks(seed=8)
    base = DecisionTreeClassifier(max_depth=3)
    # Block b and the prune block come from a mirrored concept: the old ensembles get it backwards.
    drifted = IPIPClassifier(base, random_state=1).fit(Xa, ya).update(-Xb, yb, X_prune=-Xc, y_prune=yc)
    assert drifted.kept_new_share_ == 1.0
    # Pruned on the old concept instead, the new (mirrored) ensembles lose.
    reverted = IPIPClassifier(base, random_state=1).fit(Xa, ya).update(-Xb, yb, X_prune=Xc, y_prune=yc)
    assert reverted.kept_new_share_ == 0.0


def test_update_without_prune_data_splits_the_block_and_is_reproducible():
    (Xa, ya), (Xb, yb), _ = _blocks(seed=9)
    runs = [IPIPClassifier(random_state=2).fit(Xa, ya).update(Xb, yb) for _ in range(2)]
    for clf in runs:
        assert clf.n_blocks_ == 2 and len(clf.ensembles_) == clf.p_
        assert 0.0 <= clf.kept_new_share_ <= 1.0
    np.testing.assert_array_equal(runs[0].predict_proba(Xb), runs[1].predict_proba(Xb))


def test_update_accepts_a_prune_block_holding_one_class():
    (Xa, ya), (Xb, yb), (Xc, yc) = _blocks(seed=10)
    clf = IPIPClassifier(random_state=0).fit(Xa, ya)
    only_majority = yc == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the score is that class's recall, without sklearn's warning
        clf.update(Xb, yb, X_prune=Xc[only_majority], y_prune=yc[only_majority])
    assert len(clf.ensembles_) == clf.p_
    assert np.all((clf.ensemble_scores_ >= 0) & (clf.ensemble_scores_ <= 1))


def test_update_refuses_labels_not_seen_in_fit():
    (Xa, ya), (Xb, yb), _ = _blocks()
    clf = IPIPClassifier(random_state=0).fit(Xa, np.where(ya == 1, "yes", "no"))
    with pytest.raises(ValueError, match=r"labels \['maybe'\] that were not seen in fit; valid labels are"):
        clf.update(Xb, np.where(yb == 1, "yes", "maybe"))
    with pytest.raises(ValueError, match="both X_prune and y_prune"):
        clf.update(Xb, np.where(yb == 1, "yes", "no"), X_prune=Xb)


# ---------------------------------------------------------------- serialization


def test_pickle_and_skops_round_trips_predict_identically(tmp_path):
    (Xa, ya), (Xb, yb), (Xc, yc) = _blocks()
    labels = np.array(["neg", "pos"])
    clf = IPIPClassifier(random_state=0).fit(Xa, labels[ya]).update(Xb, labels[yb])
    expected = clf.predict_proba(Xc)

    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(Xc), expected)

    path = tmp_path / "ipip.skops"
    skops_io().dump(clf, path)
    untrusted = skops_io().get_untrusted_types(file=path)
    # What a model store must allow-list for the default base tree (skops 0.16 does not trust Tree itself).
    assert sorted(untrusted) == ["calmops_dagster.learning.ipip.IPIPClassifier", "sklearn.tree._tree.Tree"]
    loaded = skops_io().load(path, trusted=untrusted)
    np.testing.assert_array_equal(loaded.predict_proba(Xc), expected)
    np.testing.assert_array_equal(loaded.predict(Xc), clf.predict(Xc))
    assert (loaded.p_, loaded.b_, loaded.np_, loaded.kept_new_share_) == (
        clf.p_,
        clf.b_,
        clf.np_,
        clf.kept_new_share_,
    )
    # The restored model keeps learning exactly like the original.
    np.testing.assert_array_equal(
        loaded.update(Xc, labels[yc]).predict_proba(Xa), clf.update(Xc, labels[yc]).predict_proba(Xa)
    )


# ---------------------------------------------------------------- scikit-learn contract

# Run in a child process because check_array_api_input needs SCIPY_ARRAY_API=1 set before scipy is
# imported (otherwise it is skipped); with it every check runs.
_CHECK_SCRIPT = textwrap.dedent(
    """
    import json
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.utils.estimator_checks import check_estimator
    from calmops_dagster.learning.ipip import IPIPClassifier

    # No expected failures: IPIPClassifier sets the tag classifier_tags.multi_class = False, which is
    # sklearn's own mechanism for binary-only classifiers. sklearn then binarizes the targets of its
    # checks, drops the multiclass ones, and adds check_classifier_not_supporting_multiclass (fit must
    # raise "Only binary classification is supported." on a 3-class target).
    EXPECTED_FAILED_CHECKS = {}
    results = check_estimator(
        IPIPClassifier(DecisionTreeClassifier(max_depth=3), random_state=0),
        expected_failed_checks=EXPECTED_FAILED_CHECKS, on_fail=None, on_skip=None,
    )
    print(json.dumps([[r["check_name"], r["status"], repr(r["exception"])] for r in results]))
    """
)


def test_check_estimator_passes_every_check():
    env = dict(os.environ, SCIPY_ARRAY_API="1")
    proc = subprocess.run(
        [sys.executable, "-c", _CHECK_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    names = {name for name, _, _ in results}
    assert {
        "check_classifier_not_supporting_multiclass",
        "check_fit_idempotent",
        "check_estimators_unfitted",
        "check_array_api_input",
    } <= names
    not_passed = [r for r in results if r[1] != "passed"]
    assert not_passed == [], not_passed
