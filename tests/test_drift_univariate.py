"""Univariate tests against scipy and frouros reference values, and the multiple-testing corrections."""

import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from frouros.detectors.data_drift.batch import PSI, ChiSquareTest, KSTest, MannWhitneyUTest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from calmops_dagster.drift import DriftConfig, detect_drift
from calmops_dagster.drift import univariate as uv
from calmops_dagster.drift.corrections import adjust_pvalues

# Large enough (> EXACT_MAX_N per side) to exercise the merged-sort path, not scipy's exact one.
BIG = uv.EXACT_MAX_N + 2_000


def _merged(x, y):
    return uv.Merged.from_sorted(np.sort(x), np.sort(y))


def _frouros(detector, x, y):
    detector.fit(X=x)
    return detector.compare(X=y)[0]


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(7)
    return {
        "continuous": (rng.normal(size=BIG), rng.normal(0.05, 1.1, size=BIG + 500)),
        "ties": (rng.integers(0, 40, size=BIG).astype(float), rng.integers(1, 41, size=BIG + 300).astype(float)),
        "small": (rng.normal(size=300), rng.normal(0.3, size=250)),
    }


@pytest.mark.parametrize("case", ["continuous", "ties", "small"])
def test_ks_matches_frouros_and_scipy(samples, case):
    x, y = samples[case]
    ours = uv.ks(_merged(x, y))
    ref = _frouros(KSTest(), x, y)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-12, abs=1e-15)
    assert ours.p_value == pytest.approx(ref.p_value, rel=1e-9, abs=1e-300)
    assert ours.effect_size == ours.statistic


@pytest.mark.parametrize("shift", [0.0, 0.04, 0.08])
def test_ks_above_the_exact_switch_is_scipys_asymptotic_p_value_close_to_the_exact_one(shift):
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=7_000), rng.normal(shift, size=uv.KS_EXACT_MAX_N + 3_000)
    ours = uv.ks(_merged(x, y))
    assert ours.p_value == pytest.approx(stats.ks_2samp(x, y, method="asymp").pvalue, rel=1e-9, abs=1e-300)
    assert ours.p_value == pytest.approx(stats.ks_2samp(x, y, method="exact").pvalue, rel=0.03)


def test_ks_where_scipys_exact_p_value_fails_gives_the_asymptotic_one_without_a_warning():
    """Two samples of 300 whose CDFs differ by one step (D = 1/300): scipy's exact computation overflows 1 and
    falls back, with a RuntimeWarning, to the asymptotic p-value."""
    x = np.random.default_rng(3).normal(size=300)
    y = np.append(np.sort(x)[:-1], x.max() + 1.0)
    with pytest.warns(RuntimeWarning, match="Exact calculation unsuccessful"):
        reference = stats.ks_2samp(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = uv.ks(_merged(x, y))
    assert ours.statistic == pytest.approx(1 / 300)
    assert ours.p_value == reference.pvalue == stats.ks_2samp(x, y, method="asymp").pvalue


@pytest.mark.parametrize("case", ["continuous", "ties", "small"])
def test_mannwhitney_matches_frouros(samples, case):
    x, y = samples[case]
    ours = uv.mannwhitney(_merged(x, y))
    ref = _frouros(MannWhitneyUTest(), x, y)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(ref.p_value, rel=1e-8, abs=1e-300)
    assert ours.effect_size == pytest.approx(abs(2 * ref.statistic / (len(x) * len(y)) - 1))


@pytest.mark.parametrize("case", ["continuous", "ties", "small"])
def test_wasserstein_matches_scipy(samples, case):
    x, y = samples[case]
    ours = uv.wasserstein(_merged(x, y))
    assert ours.statistic == pytest.approx(stats.wasserstein_distance(x, y), rel=1e-9)
    assert ours.effect_size == pytest.approx(ours.statistic / np.std(x))
    assert np.isnan(ours.p_value)


@pytest.mark.parametrize("case", ["continuous", "small"])
@pytest.mark.parametrize("bins", [10, 20])
def test_uniform_psi_matches_frouros(samples, case, bins):
    x, y = samples[case]
    ours = uv.psi_numeric(_merged(x, y), bins, binning="uniform", eps=sys.float_info.min)
    assert ours.statistic == pytest.approx(_frouros(PSI(num_bins=bins), x, y).distance, rel=1e-9)


def test_quantile_psi_bins_hold_equal_reference_mass_and_known_value():
    rng = np.random.default_rng(3)
    x = rng.normal(size=20_000)
    edges = uv.psi_edges(_merged(x, x), 10, "quantile")
    counts = np.histogram(x, np.r_[-np.inf, edges, np.inf])[0]
    assert counts.tolist() == [2000] * 10
    # shift by one SD: PSI of N(0,1) vs N(1,1) in decile bins is about 1.0 (textbook "major shift")
    value = uv.psi_numeric(_merged(x, rng.normal(1.0, size=20_000)), 10)
    assert 0.8 < value.statistic < 1.2
    assert value.p_value < 1e-100


def test_psi_pvalue_is_pearson_on_the_bins_and_calibrated_under_the_null():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=300), rng.normal(size=300)
    edges = uv.psi_edges(_merged(x, y), 10, "quantile")
    table = [np.histogram(v, np.r_[-np.inf, edges, np.inf])[0] for v in (x, y)]
    expected = stats.chi2_contingency(table, correction=False).pvalue
    assert uv.psi_numeric(_merged(x, y), 10).p_value == pytest.approx(expected)
    pvals = np.array([uv.psi_numeric(_merged(rng.normal(size=300), rng.normal(size=300)), 10).p_value
                      for _ in range(2000)])
    assert np.mean(pvals < 0.05) <= 0.06 and np.mean(pvals < 0.005) <= 0.008


def test_chi2_matches_frouros_and_cramers_v():
    rng = np.random.default_rng(5)
    x = rng.choice(list("abcd"), size=3000, p=[0.4, 0.3, 0.2, 0.1])
    y = rng.choice(list("abcd"), size=2000, p=[0.35, 0.3, 0.2, 0.15])
    cats = sorted(set(x) | set(y))
    rc = np.array([(x == c).sum() for c in cats])
    cc = np.array([(y == c).sum() for c in cats])
    ours = uv.chi2(rc, cc)
    ref = _frouros(ChiSquareTest(), x, y)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(ref.p_value, rel=1e-10)
    assert ours.effect_size == pytest.approx(np.sqrt(ref.statistic / 5000))


def test_categorical_js_and_psi_reference_values():
    rc, cc = np.array([50, 30, 20]), np.array([30, 40, 30])
    p, q = rc / 100, cc / 100
    assert uv.js(rc, cc).statistic == pytest.approx(jensenshannon(p, q, base=2))
    assert uv.psi_categorical(rc, cc).statistic == pytest.approx(np.sum((q - p) * np.log(q / p)))


def test_cvm_and_anderson_match_scipy():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=400), rng.normal(0.2, size=300)
    m = _merged(x, y)
    assert uv.cvm(m).p_value == pytest.approx(stats.cramervonmises_2samp(x, y).pvalue)
    assert uv.anderson(m).statistic == pytest.approx(stats.anderson_ksamp([x, y]).statistic)
    assert uv.cvm(m).effect_size == pytest.approx(stats.ks_2samp(x, y).statistic)


P = np.array([0.01, 0.04, 0.03, 0.2, np.nan, 0.005])


def _statsmodels_reference(method):
    """Reference adjustments written out by hand from the definitions (statsmodels gives the same)."""
    p = P[~np.isnan(P)]
    m = p.size
    order = np.argsort(p)
    if method == "bonferroni":
        return np.minimum(p * m, 1)
    if method == "holm":
        adj = np.empty(m)
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, (m - rank) * p[i])
            adj[i] = min(running, 1)
        return adj
    adj = np.empty(m)
    running = 1.0
    for rank in range(m - 1, -1, -1):
        i = order[rank]
        running = min(running, p[i] * m / (rank + 1))
        adj[i] = running
    return adj


@pytest.mark.parametrize("method", ["bonferroni", "holm", "fdr_bh"])
def test_corrections_match_their_definitions_and_keep_nan(method):
    out = adjust_pvalues(P, method)
    assert np.isnan(out[4])
    np.testing.assert_allclose(out[~np.isnan(out)], _statsmodels_reference(method))


def test_unknown_correction_is_a_value_error():
    with pytest.raises(ValueError, match="valid"):
        adjust_pvalues(P, "sidak")


@pytest.mark.parametrize("case", ["continuous", "ties"])
def test_ks_and_wasserstein_at_200000_rows_equal_scipy(case):
    """The merged-sort path at the size of a small block (200,000 rows a side, 2% NaN dropped first):
    KS statistic and p-value bit for bit as ``scipy.stats.ks_2samp``, Wasserstein as scipy's."""
    rng = np.random.default_rng(36)
    n = 200_000
    if case == "continuous":
        x, y = rng.normal(size=n), rng.normal(0.01, size=n - 7_000)
    else:
        x, y = rng.poisson(40, size=n).astype(float), rng.poisson(40.2, size=n - 7_000).astype(float)
    x[rng.random(x.size) < 0.02] = np.nan
    frame = detect_drift(pd.DataFrame({"v": x}), pd.DataFrame({"v": y}),
                         DriftConfig(multivariate=False)).rows.set_index("test")
    x = x[~np.isnan(x)]
    expected = stats.ks_2samp(x, y)
    assert frame.loc["ks", "statistic"] == expected.statistic
    assert frame.loc["ks", "p_value"] == expected.pvalue
    assert frame.loc["wasserstein", "statistic"] == pytest.approx(stats.wasserstein_distance(x, y), rel=1e-12)
    assert frame.loc["ks", "n_ref"] == x.size and frame.loc["missing", "n_ref"] == n


def test_cdf_gap_and_tie_ends_are_computed_once_per_column(samples):
    """KS, Wasserstein and the KS effect of cvm/anderson read one CDF gap: it is kept on the merged column."""
    x, y = samples["ties"]
    m = _merged(x, y)
    assert m.cdf_gap is m.cdf_gap and m.tie_ends is m.tie_ends
    pooled = np.sort(np.concatenate([x, y]))
    scipy_gap = np.searchsorted(np.sort(x), pooled, "right") / x.size - np.searchsorted(np.sort(y), pooled, "right") / y.size
    np.testing.assert_array_equal(m.cdf_gap[m.tie_ends], scipy_gap[m.tie_ends])
