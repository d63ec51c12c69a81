"""RealGenerator and fidelity report: FCS samples keep variances, correlations, balance, missingness."""

import numpy as np
import pandas as pd
import pytest

from calmops_dagster.generators.errors import GeneratorConfigError, UnknownOptionError
from calmops_dagster.generators.fidelity import fidelity_report, synthesize_and_report, total_variation
from calmops_dagster.generators.real import RealGenerator, allot, describe_columns

NUMERIC = ["n0", "n1", "n2", "n3", "age"]


def make_mixed(n=2000, seed=0):
    """Correlated numbers, an integer age, two categoricals tied to them, a binary target, 5% missing n2."""
    rng = np.random.default_rng(seed)
    cov = 0.6 * np.ones((4, 4)) + 0.4 * np.eye(4)
    z = rng.multivariate_normal(np.zeros(4), cov, size=n)
    frame = pd.DataFrame({f"n{i}": z[:, i] * (i + 1) + i for i in range(4)})
    frame["age"] = np.clip(np.round(40 + 10 * z[:, 0]), 18, 90).astype(int)
    frame["c0"] = np.where(
        z[:, 0] + rng.normal(0, 0.5, n) > 0.3, "hi", np.where(rng.random(n) < 0.5, "lo", "mid")
    )
    frame["c1"] = np.where(z[:, 1] > 0, "yes", "no")
    frame["y"] = (z[:, 1] + rng.normal(0, 0.5, n) > 0.8).astype(int)
    frame.loc[rng.random(n) < 0.05, "n2"] = np.nan
    return frame


@pytest.fixture(scope="module")
def real():
    return make_mixed()


@pytest.fixture(scope="module")
def fcs_samples(real):
    return {
        m: RealGenerator(m, target="y", seed=0).fit(real).sample(len(real)) for m in ("cart", "rf", "lgbm")
    }


@pytest.mark.parametrize("method", ["cart", "rf", "lgbm"])
def test_fcs_keeps_variances_correlations_balance_and_missingness(real, fcs_samples, method):
    synth = fcs_samples[method]
    ratios = synth[NUMERIC].var() / real[NUMERIC].var()
    corr_diff = np.abs(synth[NUMERIC].corr().to_numpy() - real[NUMERIC].corr().to_numpy())
    print(
        f"\n{method}: variance ratios {ratios.round(3).to_dict()}; "
        f"correlation max |diff| {corr_diff.max():.3f}, frobenius {np.linalg.norm(corr_diff):.3f}"
    )
    assert ratios.between(0.9, 1.1).all(), ratios
    assert corr_diff.max() < 0.1
    assert synth["y"].mean() == real["y"].mean()
    assert synth["n2"].isna().mean() == pytest.approx(real["n2"].isna().mean(), abs=0.015)
    assert synth.drop(columns="n2").notna().all().all()
    assert list(synth.columns) == list(real.columns)
    assert synth["age"].dtype == real["age"].dtype and set(synth["c0"]) <= {"hi", "lo", "mid"}
    # categoricals keep their dependence on the numbers they came from
    assert synth.groupby("c1")["n1"].mean()["yes"] > synth.groupby("c1")["n1"].mean()["no"] + 1


def test_fcs_samples_from_the_conditional_not_the_point_prediction(real, fcs_samples):
    # with a point prediction every synthetic value of n3 given the others would be a tree-leaf mean;
    # sampled values are real n3 values drawn from leaves, so they cover most of the real range
    synth = fcs_samples["cart"]
    assert synth["n3"].nunique() > 0.5 * real["n3"].nunique()
    assert synth["n3"].isin(real["n3"]).all()


@pytest.mark.parametrize("method", ["cart", "rf", "lgbm", "resample"])
def test_same_seed_same_rows(real, method):
    a = RealGenerator(method, target="y", seed=5).fit(real).sample(300)
    b = RealGenerator(method, target="y", seed=5).fit(real).sample(300)
    c = RealGenerator(method, target="y", seed=6).fit(real).sample(300)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_class_balance_kept_exactly_for_imbalanced_multiclass():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {"x": rng.normal(size=1000), "label": rng.choice(["a", "b", "c"], 1000, p=[0.8, 0.15, 0.05])}
    )
    for method in ("cart", "resample"):
        synth = RealGenerator(method, target="label", seed=0).fit(frame).sample(400)
        expected = allot(400, frame["label"].value_counts().sort_index().to_numpy().astype(float))
        assert synth["label"].value_counts().sort_index().tolist() == expected.tolist()


def test_sdv_gaussian_copula_keeps_balance_and_is_reproducible(real):
    small = real.sample(600, random_state=0)
    a = RealGenerator("sdv", target="y", seed=0).fit(small).sample(300)
    b = RealGenerator("sdv", target="y", seed=0).fit(small).sample(300)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == list(small.columns)
    assert a["y"].sum() == allot(300, small["y"].value_counts().sort_index().to_numpy().astype(float))[1]
    assert set(a["c0"].dropna()) <= {"hi", "lo", "mid"}
    report = fidelity_report(small, a)
    print("\nsdv gaussian copula:\n" + report.to_text())
    assert report.columns["value"].max() < 0.2


def test_fidelity_report_figures(real):
    synth, report = synthesize_and_report(real, RealGenerator("cart", target="y", seed=0), n=1400)
    print("\ncart fidelity:\n" + report.to_text())
    assert set(report.columns["statistic"]) == {"ks", "tvd"}
    assert report.columns["value"].max() < 0.1
    assert report.correlation["max_abs"] < 0.1
    assert report.utility["metric"] == "balanced_accuracy"
    assert report.utility["tstr"] > report.utility["trtr"] - 0.08
    # a clearly different table scores clearly worse
    shifted = synth.assign(n0=synth["n0"] + 1.0, c1="yes")
    worse = fidelity_report(real, shifted)
    by_col = worse.columns.set_index("column")["value"]
    assert by_col["n0"] > 0.3 and by_col["c1"] > 0.4
    assert total_variation(pd.Series(list("aab")), pd.Series(list("aab"))) == 0.0
    assert set(report.to_dict()) == {"columns", "correlation", "utility"}


def test_describe_columns_kinds(real):
    kinds = {c.name: c.categorical for c in describe_columns(real)}
    assert kinds == {
        "n0": False,
        "n1": False,
        "n2": False,
        "n3": False,
        "age": False,
        "c0": True,
        "c1": True,
        "y": True,
    }


def test_bad_arguments(real):
    with pytest.raises(UnknownOptionError, match="valid options: cart, lgbm, resample, rf, sdv"):
        RealGenerator("gan").fit(real)
    with pytest.raises(ValueError, match="valid options: ctgan, gaussian_copula, tvae"):
        RealGenerator("sdv", sdv_model="copulagan").fit(real)
    with pytest.raises(GeneratorConfigError, match="not in the table"):
        RealGenerator("cart", target="nope").fit(real)
    with pytest.raises(GeneratorConfigError, match="missing values"):
        RealGenerator("cart", target="n2").fit(real)
    with pytest.raises(GeneratorConfigError, match="not fitted"):
        RealGenerator("cart").sample(10)
    with pytest.raises(GeneratorConfigError, match="datetime"):
        RealGenerator("cart").fit(
            pd.DataFrame({"d": pd.date_range("2020-01-01", periods=20), "x": range(20)})
        )
