"""Univariate two-sample tests, computed from sorted samples so one sort serves every test.

scipy's ``ks_2samp`` sorts both samples and binary-searches the pooled data into each; ``mannwhitneyu``
ranks the pooled data again; ``wasserstein_distance`` sorts it once more. Here each column is sorted once
per side, the two sorted runs are merged in linear time (timsort finds the runs), and KS, Mann-Whitney,
Wasserstein and PSI all read the merged order. Values equal those of scipy and frouros (tested).
Small samples (both sides at most ``EXACT_MAX_N``) call scipy directly, which uses exact distributions;
for KS only up to ``KS_EXACT_MAX_N`` per side (above it, the asymptotic distribution, as scipy's
``method="asymp"``).
"""

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

#: Up to this many values per side scipy's exact small-sample p-values are used (scipy's own switch).
EXACT_MAX_N = 10_000
#: KS's exact two-sample distribution costs O(n1 n2). Above this many values per side the asymptotic p-value
#: is used: within 2% of the exact one at 10,000 rows a side (4% at 2,000), and several times cheaper.
KS_EXACT_MAX_N = 2_000
#: Proportions are floored at this value in PSI so an empty bin gives a large, finite contribution.
PSI_EPS = 1e-4


@dataclass(frozen=True)
class TestValue:
    """One test on one feature, before multiple-testing correction.

    ``p_value`` is NaN for distances, which have none.
    """

    statistic: float
    p_value: float
    effect_size: float


@dataclass(frozen=True)
class Merged:
    """Two sorted samples merged: the pooled sorted values and, per position, whether it came from ref.

    The CDF gap and the tie ends are computed on first use and kept, so KS, Wasserstein, Cramer-von Mises
    and Anderson-Darling on the same column read one copy.
    """

    ref: np.ndarray
    cur: np.ndarray
    values: np.ndarray
    from_ref: np.ndarray

    @classmethod
    def from_sorted(cls, ref: np.ndarray, cur: np.ndarray) -> "Merged":
        """Merge two already sorted 1-D float arrays without NaN."""
        pooled = np.concatenate([ref, cur])
        order = np.argsort(pooled, kind="stable")  # two sorted runs: a linear-time merge
        return cls(ref=ref, cur=cur, values=pooled[order], from_ref=order < ref.size)

    @cached_property
    def cdf_gap(self) -> np.ndarray:
        """F_ref(x) - F_cur(x) at every pooled value x (ties resolved at their last position)."""
        n1, n2 = self.ref.size, self.cur.size
        cum_ref = np.cumsum(self.from_ref.view(np.int8), dtype=np.int64)  # a bool cumsum casts per element
        cum_cur = np.arange(1, n1 + n2 + 1) - cum_ref
        return cum_ref / n1 - cum_cur / n2

    @cached_property
    def tie_ends(self) -> np.ndarray:
        """Boolean mask of the last position of each run of equal pooled values."""
        v = self.values
        return np.append(v[1:] != v[:-1], True)


def ks(m: Merged) -> TestValue:
    """Two-sided two-sample Kolmogorov-Smirnov test, as ``scipy.stats.ks_2samp``: its exact p-value up to
    ``KS_EXACT_MAX_N`` values per side, its asymptotic one (``method="asymp"``) above.

    Where the exact p-value cannot be computed in floating point (two samples of 300 with D = 1/300: a
    probability just above 1), scipy takes the asymptotic one and warns; that value is the one wanted, so the
    warning is not passed on to the pipeline's log."""
    n1, n2 = m.ref.size, m.cur.size
    if max(n1, n2) <= KS_EXACT_MAX_N:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful", RuntimeWarning)
            res = stats.ks_2samp(m.ref, m.cur)
        return TestValue(float(res.statistic), float(res.pvalue), float(res.statistic))
    d = ks_distance(m)
    big, small = max(n1, n2), min(n1, n2)
    en = big * small / (big + small)
    p = float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))
    return TestValue(d, p, d)


def ks_distance(m: Merged) -> float:
    """The KS statistic D alone: the largest gap between the two empirical CDFs."""
    return float(np.max(np.abs(m.cdf_gap[m.tie_ends])))


def mannwhitney(m: Merged) -> TestValue:
    """Two-sided Mann-Whitney U test, as ``scipy.stats.mannwhitneyu`` (U of the reference sample).

    Effect size is the absolute rank-biserial correlation ``|2 U / (n1 n2) - 1|``: 0 when neither sample
    tends to be larger, 1 when every value of one exceeds every value of the other.
    """
    n1, n2 = m.ref.size, m.cur.size
    if max(n1, n2) <= EXACT_MAX_N:
        res = stats.mannwhitneyu(m.ref, m.cur, alternative="two-sided")
        u1 = float(res.statistic)
        p = float(res.pvalue)
    else:
        n = n1 + n2
        ends = np.flatnonzero(m.tie_ends)
        starts = np.concatenate([[0], ends[:-1] + 1])
        sizes = ends - starts + 1
        avg_rank = np.repeat((starts + ends) / 2.0 + 1.0, sizes)
        u1 = float(avg_rank[m.from_ref].sum() - n1 * (n1 + 1) / 2.0)
        tie_term = float((sizes.astype(float) ** 3 - sizes).sum())
        sd = np.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1))))
        u = max(u1, n1 * n2 - u1)
        z = (u - n1 * n2 / 2.0 - 0.5) / sd if sd > 0 else 0.0
        p = float(np.clip(2.0 * stats.norm.sf(z), 0.0, 1.0))
    return TestValue(u1, p, abs(2.0 * u1 / (n1 * n2) - 1.0))


def wasserstein(m: Merged) -> TestValue:
    """First Wasserstein distance, as ``scipy.stats.wasserstein_distance``; effect = distance / ref std.

    Scaling by the reference standard deviation makes the threshold unit-free ("0.1 = a tenth of a
    standard deviation of mass moved"). A constant reference has no scale: the effect is then the raw
    distance.
    """
    gap = np.abs(m.cdf_gap[:-1])
    w = float(np.sum(np.diff(m.values) * gap))
    sd = float(np.std(m.ref))
    return TestValue(w, float("nan"), w / sd if sd > 0 else w)


def cvm(m: Merged) -> TestValue:
    """Cramer-von Mises two-sample test (``scipy.stats.cramervonmises_2samp``); effect = KS D."""
    res = stats.cramervonmises_2samp(m.ref, m.cur)
    return TestValue(float(res.statistic), float(res.pvalue), ks_distance(m))


def anderson(m: Merged) -> TestValue:
    """Anderson-Darling k-sample test (scipy; p-value floored at 0.001 and capped at 0.25); effect = KS D."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns whenever the p-value hits its floor or cap
        res = stats.anderson_ksamp([m.ref, m.cur])
    return TestValue(float(res.statistic), float(res.pvalue), ks_distance(m))


def psi_value(p_ref: np.ndarray, p_cur: np.ndarray, eps: float) -> float:
    """``PSI = sum((q - p) * ln(q / p))``, the symmetric Kullback-Leibler divergence of two binnings.

    Proportions are floored at ``eps`` before the logarithm, so an empty bin gives a large finite value.
    """
    p = np.maximum(p_ref, eps)
    q = np.maximum(p_cur, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def binned_pvalue(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Pearson chi-squared homogeneity p-value of two binnings (1.0 when fewer than two bins are used).

    PSI scaled by ``n_ref n_cur / (n_ref + n_cur)`` has the same chi-squared limit, but with ~30 values
    per bin its tail is heavier than the limit (1.7x too many p < 0.0005 at 300 rows), while Pearson's
    statistic on the same bins stays at its nominal level, which matters after a Bonferroni-type
    correction over many features.
    """
    keep = (ref_counts + cur_counts) > 0
    if np.count_nonzero(keep) < 2:
        return 1.0
    return float(stats.chi2_contingency(np.vstack([ref_counts[keep], cur_counts[keep]]), correction=False).pvalue)


def psi_edges(m: Merged, bins: int, binning: str) -> np.ndarray:
    """Interior bin edges of numeric PSI: reference quantiles, or equal widths over the pooled range."""
    if binning == "uniform":
        lo, hi = m.values[0], m.values[-1]
        return np.linspace(lo, hi, bins + 1)[1:-1]
    idx = (np.arange(1, bins) * m.ref.size) // bins
    return np.unique(m.ref[idx])


def psi_numeric(m: Merged, bins: int, binning: str = "quantile", eps: float = PSI_EPS) -> TestValue:
    """PSI of a numeric feature with the Pearson p-value of its bins (:func:`binned_pvalue`).

    With ``binning="uniform"`` and ``eps=sys.float_info.min`` the value is frouros' PSI. Bins are
    ``[e_i, e_{i+1})``, the last one closed, as ``numpy.histogram``.
    """
    edges = psi_edges(m, bins, binning)
    n1, n2 = m.ref.size, m.cur.size
    ref_counts = np.diff(np.concatenate([[0], np.searchsorted(m.ref, edges, "left"), [n1]]))
    cur_counts = np.diff(np.concatenate([[0], np.searchsorted(m.cur, edges, "left"), [n2]]))
    value = psi_value(ref_counts / n1, cur_counts / n2, eps)
    return TestValue(value, binned_pvalue(ref_counts, cur_counts), value)


def chi2(ref_counts: np.ndarray, cur_counts: np.ndarray) -> TestValue:
    """Chi-squared homogeneity test on category counts, as frouros' ChiSquareTest; effect = Cramer's V.

    With two samples the contingency table has two rows, so Cramer's V is ``sqrt(chi2 / n)``.
    """
    keep = (ref_counts + cur_counts) > 0
    table = np.vstack([cur_counts[keep], ref_counts[keep]])
    res = stats.chi2_contingency(table)
    stat = float(res.statistic)
    return TestValue(stat, float(res.pvalue), float(np.sqrt(stat / table.sum())))


def psi_categorical(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float = PSI_EPS) -> TestValue:
    """PSI over categories (each category is a bin); a distance here, since ``chi2`` tests the same table."""
    value = psi_value(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum(), eps)
    return TestValue(value, float("nan"), value)


def js(ref_counts: np.ndarray, cur_counts: np.ndarray) -> TestValue:
    """Jensen-Shannon distance (base 2, in [0, 1]) between category frequencies; it is its own effect."""
    d = float(jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum(), base=2))
    return TestValue(d, float("nan"), d)


def missing_rate(ref_missing: int, n_ref: int, cur_missing: int, n_cur: int) -> TestValue:
    """Chi-squared test (no continuity correction) that the missing-value rate is the same on both sides.

    Effect size: the absolute difference of the two rates.

    >>> value = missing_rate(10, 1000, 100, 1000)
    >>> round(value.effect_size, 3), value.p_value < 1e-15
    (0.09, True)
    """
    table = np.array([[ref_missing, n_ref - ref_missing], [cur_missing, n_cur - cur_missing]], dtype=float)
    if table[:, 0].sum() == 0 or table[:, 1].sum() == 0:  # nothing missing, or nothing present, anywhere
        return TestValue(0.0, 1.0, 0.0)
    statistic, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    return TestValue(float(statistic), float(p_value), abs(cur_missing / n_cur - ref_missing / n_ref))


NUMERIC_TESTS = {"ks": ks, "mannwhitney": mannwhitney, "wasserstein": wasserstein, "cvm": cvm, "anderson": anderson}
CATEGORICAL_TESTS = {"chi2": chi2, "psi": psi_categorical, "js": js}
