"""detect_drift: interface, decision rule, false-alarm rate, power and bad input."""

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from calmops_dagster.drift import (
    DriftConfig,
    DriftInputError,
    DriftReport,
    MissingFeatureError,
    columns,
    detect_drift,
)
from calmops_dagster.drift.report import DATASET, FRAME_COLUMNS, NOT_TESTED
from calmops_dagster.errors import CalmOpsError

UNI = DriftConfig(multivariate=False)


def _frame(rng, n, n_num=5, shift=0.0, scale=1.0, probs=(0.5, 0.3, 0.2)):
    df = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(n_num)})
    df["x0"] = df["x0"] * scale + shift
    df["cat"] = rng.choice(["a", "b", "c"], size=n, p=list(probs))
    return df


def test_interface_and_frame_shape():
    rng = np.random.default_rng(0)
    report = detect_drift(_frame(rng, 2000), _frame(rng, 2000, shift=1.0), config=UNI)
    assert isinstance(report, DriftReport)
    frame = report.to_frame()
    assert list(frame.columns[: len(FRAME_COLUMNS)]) == FRAME_COLUMNS
    assert (frame["feature"] == DATASET).sum() == 1
    agg = frame[frame["feature"] == DATASET].iloc[0]
    assert agg["test"] == "decision" and bool(agg["drifted"]) == report.drift_detected
    per_feature = frame[frame["feature"] != DATASET]
    assert set(per_feature["feature"]) == {"x0", "x1", "x2", "x3", "x4", "cat"}
    assert set(per_feature["test"]) == {"ks", "psi", "wasserstein", "chi2", "js"}
    assert report.drift_detected and report.drifted_features == ["x0"]
    assert report.drift_share == pytest.approx(1 / 6)
    summary = report.summary()
    assert summary["n_drifted"] == 1 and summary["n_tested"] == 6 and summary["top_features"] == ["x0"]
    assert all(isinstance(v, (bool, int, float, str, list)) for v in summary.values())
    assert report.multivariate is None


def test_features_argument_restricts_and_missing_feature_raises():
    rng = np.random.default_rng(1)
    ref, cur = _frame(rng, 500), _frame(rng, 500)
    report = detect_drift(ref, cur, UNI, features=["x1", "cat"])
    assert set(report.rows["feature"]) == {"x1", "cat"}
    with pytest.raises(MissingFeatureError, match="missing in current: \\['nope'\\]") as err:
        detect_drift(ref, cur.assign(nope=1.0).drop(columns="nope"), UNI, features=["x1", "nope"])
    assert isinstance(err.value, CalmOpsError) and err.value.missing_in_reference == ["nope"]


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValidationError, match="extra"):
        DriftConfig(alpah=0.01)
    with pytest.raises(ValidationError):
        DriftConfig(correction="sidak")
    with pytest.raises(ValidationError, match="p-value"):
        DriftConfig(numeric_tests=["wasserstein"])
    with pytest.raises(ValidationError, match="unknown tests"):
        DriftConfig(min_effect={"kss": 0.2})
    cfg = DriftConfig.model_validate({"alpha": 0.01, "correction": "fdr_bh", "min_effect": {"ks": 0.2}})
    assert cfg.effect_threshold("ks") == 0.2 and cfg.effect_threshold("psi") == 0.10


def test_tiny_significant_shift_on_many_rows_is_no_alarm():
    rng = np.random.default_rng(2)
    n = 200_000
    ref = pd.DataFrame({"x": rng.normal(size=n)})
    cur = pd.DataFrame({"x": rng.normal(0.03, size=n)})
    report = detect_drift(ref, cur, UNI)
    ks = report.rows.set_index("test").loc["ks"]
    assert ks["p_adjusted"] < 1e-6          # highly significant ...
    assert ks["effect_size"] < 0.05         # ... but tiny
    assert not report.drift_detected


def test_false_alarm_rate_on_fifty_no_drift_features():
    """40 seeded blocks of 1000 rows x 50 null features (45 numeric, 5 categorical): at most 5% flagged.

    Holm keeps the rate at most alpha whatever the size; measured on 1000 blocks it is 4.5% at 300 rows
    (effect gates not binding) and 2.5% on 200 blocks at 1000 rows, where the effect gates start to bind.
    """
    rng = np.random.default_rng(123)
    flagged = 0
    for _ in range(40):
        n = 1000
        ref = pd.DataFrame(rng.normal(size=(n, 45)), columns=[f"x{i}" for i in range(45)])
        cur = pd.DataFrame(rng.normal(size=(n, 45)), columns=[f"x{i}" for i in range(45)])
        for j in range(5):
            ref[f"c{j}"] = rng.choice(list("abcd"), size=n)
            cur[f"c{j}"] = rng.choice(list("abcd"), size=n)
        flagged += detect_drift(ref, cur, UNI).drift_detected
    assert flagged / 40 <= 0.05


@pytest.mark.parametrize("correction", ["bonferroni", "fdr_bh"])
def test_other_corrections_also_keep_null_blocks_quiet(correction):
    rng = np.random.default_rng(9)
    cfg = DriftConfig(multivariate=False, correction=correction)
    flagged = sum(
        detect_drift(pd.DataFrame(rng.normal(size=(300, 50))).add_prefix("x"),
                     pd.DataFrame(rng.normal(size=(300, 50))).add_prefix("x"), cfg).drift_detected
        for _ in range(15)
    )
    assert flagged <= 1


@pytest.mark.parametrize("kind, kwargs", [
    ("mean", {"shift": 0.5}),
    ("variance", {"scale": 2.0}),
    ("categorical", {"probs": (0.25, 0.35, 0.4)}),
])
def test_power_on_single_feature_shifts_among_fifty(kind, kwargs):
    rng = np.random.default_rng(4)
    hits = 0
    for _ in range(5):
        ref, cur = _frame(rng, 1000, n_num=49), _frame(rng, 1000, n_num=49, **kwargs)
        report = detect_drift(ref, cur, UNI)
        target = "cat" if kind == "categorical" else "x0"
        hits += report.drift_detected and report.drifted_features == [target]
    assert hits == 5


def test_min_drift_share_gates_the_decision():
    rng = np.random.default_rng(6)
    ref, cur = _frame(rng, 1000), _frame(rng, 1000, shift=1.0)
    assert detect_drift(ref, cur, DriftConfig(multivariate=False)).drift_detected
    report = detect_drift(ref, cur, DriftConfig(multivariate=False, min_drift_share=0.5))
    assert report.drifted_features == ["x0"] and not report.drift_detected


# ---------------------------------------------------------------- bad input


def _not_tested(report, feature):
    rows = report.rows[report.rows["feature"] == feature]
    assert list(rows["test"]) == [NOT_TESTED]
    assert not rows["drifted"].any()
    assert feature in report.not_tested
    return rows["note"].iloc[0]


def test_all_nan_and_constant_columns_get_not_tested_rows():
    rng = np.random.default_rng(8)
    ref, cur = _frame(rng, 400), _frame(rng, 400)
    ref["empty"], cur["empty"] = np.nan, rng.normal(size=400)
    ref["flat"], cur["flat"] = 3.0, 3.0
    ref["flat_txt"], cur["flat_txt"] = "z", "z"
    report = detect_drift(ref, cur, UNI.model_copy(update={"missing_values": False}))
    assert "all values missing in reference" in _not_tested(report, "empty")
    assert "constant" in _not_tested(report, "flat")
    assert "constant" in _not_tested(report, "flat_txt")
    assert report.n_tested == 6 and report.drift_share == 0.0
    # with the missing-value test on, a column that was empty and now has values is a drift
    with_missing = detect_drift(ref, cur, UNI)
    assert with_missing.drifted_features == ["empty"] and "empty" in with_missing.not_tested


def test_constant_that_changes_value_is_drift():
    rng = np.random.default_rng(8)
    ref, cur = _frame(rng, 400), _frame(rng, 400)
    ref["flag"], cur["flag"] = 0.0, 1.0
    report = detect_drift(ref, cur, UNI)
    assert report.drifted_features == ["flag"]


def test_column_on_one_side_only_is_not_tested_unless_requested():
    rng = np.random.default_rng(10)
    ref, cur = _frame(rng, 300), _frame(rng, 300)
    ref["old"] = 1.0
    cur["new"] = "x"
    report = detect_drift(ref, cur, UNI)
    assert "missing in current" in _not_tested(report, "old")
    assert "missing in reference" in _not_tested(report, "new")
    assert report.n_tested == 6


def test_single_row_gives_not_tested_rows_and_no_alarm():
    rng = np.random.default_rng(11)
    report = detect_drift(_frame(rng, 500), _frame(rng, 1), DriftConfig())
    assert report.n_tested == 0 and not report.drift_detected
    assert "only 1 non-null values in current" in _not_tested(report, "x0")
    assert report.multivariate is None and "not run: no testable feature" in report.multivariate_note
    assert "no feature could be tested" in report.to_frame().iloc[-1]["note"]


def test_mixed_types_are_compared_as_categories_with_a_note():
    rng = np.random.default_rng(12)
    ref, cur = _frame(rng, 300), _frame(rng, 300)
    ref["m"] = rng.choice(np.array([1, 2, "x"], dtype=object), size=300)
    cur["m"] = rng.choice(np.array([1, 2, "x"], dtype=object), size=300)
    ref["t"] = rng.normal(size=300)
    cur["t"] = rng.choice(["1.5", "oops"], size=300)
    report = detect_drift(ref, cur, UNI)
    rows = report.rows.set_index(["feature", "test"])
    assert "mixed value types" in rows.loc[("m", "chi2"), "note"]
    assert "type mismatch, float64 in reference and object in current" in _not_tested(report, "t")


def test_declared_numeric_with_text_is_not_tested():
    rng = np.random.default_rng(13)
    ref, cur = _frame(rng, 300), _frame(rng, 300)
    cur["x1"] = cur["x1"].astype(str)
    report = detect_drift(ref, cur, DriftConfig(multivariate=False, numeric_columns=["x1"]))
    assert "declared numeric" in _not_tested(report, "x1")


@pytest.mark.parametrize("ref, cur, match", [
    (np.zeros((3, 2)), pd.DataFrame({"a": [1]}), "must be a pandas DataFrame"),
    (pd.DataFrame({"a": []}), pd.DataFrame({"a": [1.0]}), "reference has no rows"),
    (pd.DataFrame({"a": [1.0]}), pd.DataFrame({"b": [1.0]}), "no column in common"),
])
def test_inputs_that_cannot_be_compared_raise_typed_errors(ref, cur, match):
    with pytest.raises(DriftInputError, match=match):
        detect_drift(ref, cur, UNI)


def test_high_cardinality_categories_are_pooled():
    rng = np.random.default_rng(14)
    ref = pd.DataFrame({"id": [f"u{i}" for i in rng.integers(0, 5000, 3000)]})
    cur = pd.DataFrame({"id": [f"u{i}" for i in rng.integers(0, 5000, 3000)]})
    report = detect_drift(ref, cur, DriftConfig(multivariate=False, max_categories=20))
    assert "pooled as __other__" in report.rows["note"].iloc[0]


def test_missing_value_drift_is_caught_and_stable_missingness_is_not():
    rng = np.random.default_rng(21)
    n = 2000
    ref = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n), "z": rng.normal(size=n)})
    ref.loc[rng.random(n) < 0.05, "y"] = np.nan  # 5% missing on both sides: no alarm
    cur = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n), "z": np.nan})
    cur.loc[rng.random(n) < 0.05, "y"] = np.nan
    cur.loc[rng.random(n) < 0.30, "x"] = np.nan  # x goes 30% missing; z goes wholly empty
    report = detect_drift(ref, cur, DriftConfig(multivariate=False))
    frame = report.to_frame()
    missing = frame[frame["test"] == "missing"].set_index("feature")
    assert set(missing.index) == {"x", "y", "z"}
    assert missing.loc["x", "drifted"] and missing.loc["z", "drifted"] and not missing.loc["y", "drifted"]
    assert missing.loc["x", "effect_size"] == pytest.approx(cur["x"].isna().mean(), abs=1e-9)
    assert report.drift_detected and set(report.drifted_features) == {"x", "z"}
    assert report.drift_share == pytest.approx(2 / 3)
    off = detect_drift(ref, cur, DriftConfig(multivariate=False, missing_values=False))
    assert "z" not in off.drifted_features and "missing" not in set(off.to_frame()["test"])


@pytest.mark.parametrize("limit", [3, 10, 100])
def test_numeric_columns_with_few_distinct_values_are_categories_up_to_the_limit(limit):
    """``max_categorical_unique`` distinct values (both sides pooled) make a numeric column categorical,
    one more keeps it numeric; found by binary-search jumps up to ``JUMP_LIMIT``, by one pass above."""
    rng = np.random.default_rng(14)
    ref = pd.DataFrame({"at": rng.integers(0, limit, 3000).astype(float), "over": rng.integers(0, limit + 1, 3000)})
    cur = pd.DataFrame({"at": rng.integers(0, limit, 3000).astype(float), "over": rng.integers(0, limit + 1, 3000)})
    cur.loc[:9, "at"] = np.nan
    config = UNI.model_copy(update={"max_categorical_unique": limit})
    kinds = detect_drift(ref, cur, config).rows.groupby("feature")["kind"].agg(set)
    assert kinds["at"] == {"categorical", "missing"} and kinds["over"] == {"numeric"}
    assert columns._distinct_upto(np.sort(ref["over"].to_numpy(float)), limit) is None
    np.testing.assert_array_equal(columns._distinct_upto(np.sort(ref["at"].to_numpy(float)), limit),
                                  np.arange(limit, dtype=float))


def test_missing_counts_match_isna_for_every_kind_of_column():
    """The missing-value rows count what pandas calls missing (NaN, None, pd.NA) in float, nullable
    integer, object and category columns, from the values each test already prepared."""
    rng = np.random.default_rng(15)
    n = 2000

    def frame(missing_share):
        holes = rng.random(n) < missing_share
        df = pd.DataFrame({
            "float": rng.normal(size=n),
            "nullable": pd.array(rng.integers(0, 1000, n), dtype="Int64"),
            "text": rng.choice(["a", "b", "c"], size=n).astype(object),
            "category": pd.Categorical(rng.choice(["u", "v"], size=n)),
        })
        for name in df.columns:
            df.loc[holes, name] = None
        return df

    ref, cur = frame(0.01), frame(0.2)
    rows = detect_drift(ref, cur, UNI).rows
    missing = rows[rows["test"] == "missing"].set_index("feature")
    assert set(missing.index) == set(ref.columns)
    for name in ref.columns:
        rates = ref[name].isna().mean(), cur[name].isna().mean()
        assert missing.loc[name, "note"] == f"missing {rates[0]:.1%} -> {rates[1]:.1%}"
        assert missing.loc[name, "effect_size"] == pytest.approx(abs(rates[1] - rates[0]), abs=1e-12)


def test_category_counts_keep_first_appearance_order_and_the_columns_values():
    """Categories in order of first appearance (reference first), missing values not counted, values as
    they were in the column (Python ``7``, not ``np.int64(7)``), values equal in Python one category."""
    ref = pd.Series(np.array(["b", None, "a", "b", 1, True, 1.0], dtype=object))
    cur = pd.Series(np.array(["c", "a", np.nan, 1, "c"], dtype=object))
    categories, ref_counts, cur_counts = columns._category_counts(columns._value_counts(ref), cur)
    assert list(categories) == ["b", "a", 1, "c"]
    assert ref_counts.tolist() == [2, 1, 3, 0] and cur_counts.tolist() == [0, 1, 1, 2]
    ints, unused = pd.Series([7] * 6), pd.Series(pd.Categorical(["u", "u"], categories=["z", "u"]))
    assert repr(columns._category_counts(columns._value_counts(ints), ints)[0][0]) == "7"
    assert list(columns._category_counts(columns._value_counts(unused), unused)[0]) == ["u"]
    note = _not_tested(detect_drift(pd.DataFrame({"k": ints}), pd.DataFrame({"k": ints}),
                                    UNI.model_copy(update={"categorical_columns": ["k"]})), "k")
    assert note == "not tested: constant, the single value 7 on both sides"


def test_inputs_are_left_as_they_were():
    """Columns are sorted in place after their one copy: the caller's frames, nullable ones too, keep their order."""
    rng = np.random.default_rng(16)
    ref = pd.DataFrame({"f": rng.normal(size=500), "n": pd.array(rng.normal(size=500), dtype="Float64"),
                        "i": pd.array(rng.integers(0, 1000, 500), dtype="Int64"), "c": rng.choice(list("ab"), 500)})
    cur = ref.sample(frac=1.0, random_state=1).reset_index(drop=True)
    before = ref.copy(deep=True), cur.copy(deep=True)
    detect_drift(ref, cur, UNI)
    pd.testing.assert_frame_equal(ref, before[0])
    pd.testing.assert_frame_equal(cur, before[1])
