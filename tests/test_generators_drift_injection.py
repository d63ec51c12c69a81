"""DriftInjector: each kind of drift lands where the ground truth says, and only there."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from calmops_dagster.generators.drift_injection import DriftInjector, transition_curve
from calmops_dagster.generators.errors import GeneratorConfigError, UnknownOptionError

BLOCKS, ROWS = 6, 500


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    n = BLOCKS * ROWS
    a, b = rng.normal(size=n), rng.normal(size=n)
    return pd.DataFrame(
        {
            "a": a,
            "b": b,
            "c": rng.exponential(2.0, n),
            "cat": rng.choice(["u", "v", "w"], n),
            "y": (a + rng.normal(0, 1, n) > 0).astype(int),
            "t": np.arange(n, dtype=float),
            "block": np.repeat(np.arange(BLOCKS), ROWS),
        }
    )


def ks_p(frame, column, block, reference=0):
    x = frame.loc[frame.block == reference, column].dropna()
    y = frame.loc[frame.block == block, column].dropna()
    return stats.ks_2samp(x, y).pvalue


def drifted_cells(frame, truth, columns):
    """(column, block) pairs the ground truth marks as drifted."""
    return {(c, b) for rec in truth for c in rec.get("columns", []) if c in columns for b in rec["blocks"]}


def test_ks_finds_injected_drift_where_ground_truth_says_and_nowhere_else(table):
    inj = DriftInjector(table, seed=1, block_col="block")
    inj.feature_drift(["a"], kind="shift", magnitude=0.5, blocks=[2])
    inj.feature_drift(["b"], kind="scale", magnitude=2.0, blocks=[3, 4])
    inj.feature_drift(["c"], kind="noise", magnitude=1.0, blocks=[5])
    truth = inj.ground_truth
    columns = ["a", "b", "c"]
    expected = drifted_cells(inj.frame, truth, columns)
    assert expected == {("a", 2), ("b", 3), ("b", 4), ("c", 5)}
    figures = {}
    for column in columns:
        for block in range(1, BLOCKS):
            figures[(column, block)] = p = ks_p(inj.frame, column, block)
            if (column, block) in expected:
                assert p < 1e-4, (column, block, p)
            else:
                assert p > 0.01, (column, block, p)
    print({k: f"{v:.2g}" for k, v in figures.items()})


def test_gradual_profile_mixes_old_and_new_rows_increasingly(table):
    inj = DriftInjector(table, seed=2)
    inj.feature_drift(
        ["a"], kind="shift", magnitude=10.0, profile="gradual", curve="linear", rows=[1000, 2000]
    )
    moved = (inj.frame["a"] - table["a"]).to_numpy()[1000:2000] > 1
    quarters = moved.reshape(4, 250).mean(axis=1)
    assert np.all(np.diff(quarters) > 0), quarters
    assert set(np.unique(np.round((inj.frame["a"] - table["a"]).to_numpy()[1000:2000], 6))) <= {
        0.0,
        round(10 * table["a"].std(ddof=0), 6),
    }


@pytest.mark.parametrize("curve", ["sigmoid", "linear", "cosine"])
def test_incremental_profile_ramps_the_magnitude(table, curve):
    inj = DriftInjector(table, seed=3)
    inj.feature_drift(["a"], kind="shift", magnitude=1.0, profile="incremental", curve=curve, rows=[0, 1000])
    delta = (inj.frame["a"] - table["a"]).to_numpy()[:1000] / table["a"].std(ddof=0)
    assert delta[0] == pytest.approx(0.0) and delta[-1] == pytest.approx(1.0)
    assert np.all(np.diff(delta) >= -1e-12)
    np.testing.assert_allclose(delta, transition_curve(curve, 1000))


def test_recurrent_profile_alternates(table):
    inj = DriftInjector(table, seed=4)
    rec = inj.feature_drift(["a"], magnitude=1.0, profile="recurrent", period=100, rows=[0, 400])
    on = (inj.frame["a"] != table["a"]).to_numpy()[:400]
    assert on[:100].all() and not on[100:200].any() and on[200:300].all() and not on[300:400].any()
    assert rec["period"] == 100


def test_time_window_selection(table):
    inj = DriftInjector(table, seed=5, time_col="t", block_col="block")
    rec = inj.feature_drift(["c"], magnitude=1.0, time=[750.0, 1250.0])
    assert rec["rows"] == [750, 1250] and rec["blocks"] == [1, 2] and rec["time"] == ["750.0", "1250.0"]
    changed = np.flatnonzero((inj.frame["c"] != table["c"]).to_numpy())
    assert changed.min() == 750 and changed.max() == 1249


def test_label_flip_and_label_shift(table):
    inj = DriftInjector(table, seed=6, block_col="block")
    rec = inj.label_flip("y", fraction=0.3, blocks=[1])
    flipped = (inj.frame["y"] != table["y"]).to_numpy()
    assert flipped[ROWS : 2 * ROWS].mean() == pytest.approx(0.3, abs=0.05)
    assert not flipped[:ROWS].any() and not flipped[2 * ROWS :].any()
    assert rec["n_flipped"] == flipped.sum()
    inj.label_shift("y", {0: 0.85, 1: 0.15}, blocks=[4])
    block4 = inj.frame[inj.frame.block == 4]
    assert block4["y"].mean() == pytest.approx(0.15, abs=0.04)
    assert (block4["block"] == 4).all()
    assert inj.frame.dtypes.equals(table.dtypes)
    # P(x | y) kept: a still separates the classes the same way
    assert block4.groupby("y")["a"].mean().diff().iloc[-1] == pytest.approx(
        table.groupby("y")["a"].mean().diff().iloc[-1], abs=0.3
    )
    assert [r["type"] for r in inj.ground_truth] == ["label_flip", "label_shift"]


def test_conditional_drift_changes_labels_only_in_the_region(table):
    inj = DriftInjector(table, seed=7, block_col="block")
    inj.conditional_drift("y", region="a > 1", blocks=[3])
    changed = (inj.frame["y"] != table["y"]).to_numpy()
    in_region = (table["a"] > 1).to_numpy() & (table["block"] == 3).to_numpy()
    assert changed[in_region].all() and not changed[~in_region].any()
    pd.testing.assert_frame_equal(inj.frame.drop(columns="y"), table.drop(columns="y"))


def test_correlation_drift_keeps_marginals(table):
    inj = DriftInjector(table, seed=8, block_col="block")
    inj.correlation_drift(["a", "b", "c"], correlation=0.8, blocks=[2])
    new = inj.frame[inj.frame.block == 2]
    old = table[table.block == 2]
    for col in ["a", "b", "c"]:
        np.testing.assert_array_equal(np.sort(new[col]), np.sort(old[col]))
    rho = stats.spearmanr(new["a"], new["b"]).statistic
    assert abs(stats.spearmanr(old["a"], old["b"]).statistic) < 0.1 and rho == pytest.approx(0.79, abs=0.06)
    assert ks_p(inj.frame, "b", 2) > 0.01


def test_missing_drift_and_new_category(table):
    inj = DriftInjector(table, seed=9, block_col="block")
    inj.missing_drift(["a", "cat"], rate=0.2, blocks=[5])
    inj.new_category("cat", "z", fraction=0.25, blocks=[4])
    f = inj.frame
    assert f.loc[f.block == 5, "a"].isna().mean() == pytest.approx(0.2, abs=0.05)
    assert f.loc[f.block != 5, ["a", "cat"]].notna().all().all()
    assert (f.loc[f.block == 4, "cat"] == "z").mean() == pytest.approx(0.25, abs=0.05)
    assert not (f.loc[f.block != 4, "cat"] == "z").any()
    with pytest.raises(GeneratorConfigError, match="already occurs"):
        inj.new_category("cat", "u", 0.1)


def test_same_seed_same_injection(table):
    def run(seed):
        inj = DriftInjector(table, seed=seed, block_col="block")
        inj.feature_drift(["a"], kind="noise", magnitude=1.0, profile="gradual", blocks=[1, 2])
        inj.label_flip("y", 0.1)
        return inj.frame

    assert run(1).equals(run(1)) and not run(1).equals(run(2))


def test_apply_by_name_and_errors(table):
    inj = DriftInjector(table, seed=0, block_col="block")
    inj.apply("feature_drift", columns=["a"], magnitude=1.0, blocks=[1])
    assert inj.ground_truth[0]["blocks"] == [1]
    with pytest.raises(UnknownOptionError, match="valid options: conditional_drift"):
        inj.apply("teleport")
    with pytest.raises(GeneratorConfigError, match="bad arguments"):
        inj.apply("label_flip", target="y", fraction=0.1, colour="red")
    with pytest.raises(GeneratorConfigError, match="one of rows/blocks/time"):
        inj.feature_drift(["a"], rows=[0, 10], blocks=[1])
    with pytest.raises(GeneratorConfigError, match="not numeric"):
        inj.feature_drift(["cat"])
    with pytest.raises(UnknownOptionError, match="valid options: abrupt, gradual, incremental, recurrent"):
        inj.feature_drift(["a"], profile="sudden")
    with pytest.raises(GeneratorConfigError, match="needs time_col"):
        inj.feature_drift(["a"], time=[0, 1])
    with pytest.raises(GeneratorConfigError, match="matches no rows"):
        inj.feature_drift(["a"], blocks=[99])
