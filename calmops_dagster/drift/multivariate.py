"""Multivariate drift: an MMD permutation test and a LightGBM domain classifier, on a bounded sample.

Univariate tests cannot see a change in how features move together (a correlation that flips leaves
every marginal unchanged). Both tests here look at the joint distribution. Their cost is bounded by
sampling at most ``multivariate_sample_size`` rows per side, which the report states.
"""

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import pdist, squareform
from threadpoolctl import ThreadpoolController

from calmops_dagster.drift.config import DriftConfig
from calmops_dagster.drift.mmd_permutations import float32_kernel, pooled_kernel, reaching
from calmops_dagster.drift.report import MultivariateResult

#: Below this many rows per side the multivariate tests are not run.
MIN_ROWS = 20


def mmd_unbiased(kernel: np.ndarray, n_x: int) -> float:
    """Unbiased MMD^2 from the pooled kernel matrix whose first ``n_x`` rows are X; equals frouros' MMD."""
    n_y = kernel.shape[0] - n_x
    k_xx = kernel[:n_x, :n_x].sum() - np.trace(kernel[:n_x, :n_x])
    k_yy = kernel[n_x:, n_x:].sum() - np.trace(kernel[n_x:, n_x:])
    k_xy = kernel[:n_x, n_x:].sum()
    return float(k_xx / (n_x * (n_x - 1)) + k_yy / (n_y * (n_y - 1)) - 2 * k_xy / (n_x * n_y))


def rbf_kernel_matrix(pooled: np.ndarray, sigma: float) -> np.ndarray:
    """``exp(-||a - b||^2 / (2 sigma^2))``, the kernel of ``frouros.utils.kernels.rbf_kernel``.

    Each pair's distance and exponential is computed once (``pdist``), not twice as a full ``cdist`` would,
    and in place: for 2,000 rows a fresh 16 MB temporary per step costs as much CPU (page faults) as the
    exponentials.
    """
    exponent = pdist(pooled, "sqeuclidean")
    np.negative(exponent, out=exponent)
    np.divide(exponent, 2 * sigma**2, out=exponent)
    kernel = squareform(np.exp(exponent, out=exponent))
    np.fill_diagonal(kernel, 1.0)
    return kernel


def median_sigma(pooled: np.ndarray, rng: np.random.Generator, max_rows: int = 1000) -> float:
    """Median heuristic bandwidth: the median pairwise distance of (a sample of) the pooled data."""
    idx = rng.choice(pooled.shape[0], size=min(max_rows, pooled.shape[0]), replace=False)
    med = float(np.median(pdist(pooled[idx])))
    return med if med > 0 else 1.0


class MMDTest(NamedTuple):
    """Result of :func:`mmd_sequential_test`: the statistic, its p-value, the bandwidth, the number of
    permutations drawn and how many of those the float32 bound left to float64."""

    mmd2: float
    p_value: float
    sigma: float
    permutations: int
    in_float64: int = 0


#: Permutations in the sequential test's first batch; each further batch is twice the one before.
FIRST_BATCH = 50


@functools.cache
def _thread_pools() -> ThreadpoolController:
    """The process's thread pools, found once: ``threadpool_limits`` scans the loaded libraries on every call."""
    return ThreadpoolController()


def mmd_sequential_test(x: np.ndarray, y: np.ndarray, permutations: int, rng: np.random.Generator,
                        exceedances: int | None = None, sigma: float | None = None) -> MMDTest:
    """MMD^2 with an RBF kernel and its permutation p-value, stopping once the answer is known.

    Without ``exceedances`` all ``permutations`` are drawn and ``p = (1 + #{perm >= observed}) / (1 +
    permutations)``. With it, the test is Besag & Clifford's (1991) sequential Monte Carlo test: permutations
    are drawn in batches (:data:`FIRST_BATCH`, then doubling), and once ``exceedances`` of them reach the observed
    statistic (at the ``L``-th) it stops with the valid p-value ``exceedances / L``; a statistic that is
    never reached that often draws them all and gets the fixed test's p-value. Permutations are drawn in
    the same order either way, so a stop happens only where the fixed test would count at least
    ``exceedances`` too: with ``exceedances >= alpha * permutations`` both reach the same decision at level
    ``alpha``. Without drift most tests stop after a few dozen permutations.

    The kernel matrix of the pooled sample is computed once; each batch's MMD^2 values are read from it with
    one matrix product (``A' K`` for the batch's membership vectors ``A``) instead of recomputing kernels as
    frouros' ``PermutationTestDistanceBased`` does. That product runs in float32 with a certified error bound,
    and the permutations it cannot decide are recomputed in float64
    (:func:`calmops_dagster.drift.mmd_permutations.reaching`): every count is the float64 product's. Products
    run on one BLAS thread: at this size a second thread saves little on an idle machine and spins for much
    more CPU on a loaded one.
    """
    pooled = np.vstack([x, y])
    n, n_x = pooled.shape[0], x.shape[0]
    sigma = sigma or median_sigma(pooled, rng)
    pk = pooled_kernel(rbf_kernel_matrix(pooled, sigma), n_x)
    observed = mmd_unbiased(pk.kernel, n_x)
    threshold = observed - 1e-12
    stop_at = exceedances if exceedances is not None else permutations + 1
    k32 = float32_kernel(pk)
    count = drawn = in_float64 = 0
    batch = FIRST_BATCH
    with _thread_pools().limit(limits=1, user_api="blas"):
        while drawn < permutations:
            batch = min(batch, permutations - drawn)
            members = rng.permuted(np.tile(np.arange(n), (batch, 1)), axis=1)[:, :n_x]
            reached, rechecked = reaching(pk, k32, members, threshold)
            hits = count + np.cumsum(reached)
            if hits[-1] >= stop_at:
                stop = int(np.argmax(hits >= stop_at)) + 1
                in_float64 += int(np.count_nonzero(rechecked[:stop]))
                return MMDTest(observed, stop_at / (drawn + stop), float(sigma), drawn + stop, in_float64)
            in_float64 += int(np.count_nonzero(rechecked))
            count, drawn, batch = int(hits[-1]), drawn + batch, 2 * batch
    return MMDTest(observed, (1 + count) / (1 + permutations), float(sigma), permutations, in_float64)


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, permutations: int, rng: np.random.Generator,
                         sigma: float | None = None) -> tuple[float, float, float]:
    """The fixed permutation test (all ``permutations`` drawn): ``(mmd2, p_value, sigma)``."""
    result = mmd_sequential_test(x, y, permutations, rng, sigma=sigma)
    return result.mmd2, result.p_value, result.sigma


#: Histogram bins per numeric feature of the domain classifier. A fold trains on ~2/3 of at most 2 x
#: ``multivariate_sample_size`` rows: LightGBM's default 255 bins would hold a handful of rows each, finer than
#: ``min_child_samples`` lets a split use, and building those histograms is most of a fit's time.
CLASSIFIER_BINS = 31


class FoldMannWhitney(NamedTuple):
    """Result of :func:`fold_mann_whitney`: the mean of the folds' AUCs, the mean of their z-scores and its
    one-sided p-value."""

    auc: float
    z: float
    p_value: float


class RankSumU(NamedTuple):
    """Mann-Whitney U of one group of scores over the rest, its pair count and its tie-corrected null variance."""

    u: float
    pairs: int
    var: float


def rank_sum_u(scores: np.ndarray, current: np.ndarray) -> RankSumU:
    """U of the ``current`` scores over the others (ties at mid-ranks), ``n1 n0`` and U's variance under no
    difference, tie-corrected (the normal approximation's, as ``scipy.stats.mannwhitneyu``)."""
    n1, n0 = int(current.sum()), int((~current).sum())
    n = n1 + n0
    u = stats.rankdata(scores)[current].sum() - n1 * (n1 + 1) / 2
    _, ties = np.unique(scores, return_counts=True)
    var = n1 * n0 / 12 * ((n + 1) - (ties**3 - ties).sum() / (n * (n - 1)))
    return RankSumU(float(u), n1 * n0, float(var))


def fold_mann_whitney(scores: np.ndarray, is_current: np.ndarray, fold: np.ndarray) -> FoldMannWhitney:
    """One-sided Mann-Whitney test of out-of-fold scores (current above reference), fold by fold, combined.

    Each fold's scores come from a model that never saw that fold, so under no drift its U is exactly
    Mann-Whitney distributed, and its z-score (normal approximation, tie-corrected) is standard normal. The
    folds' z-scores are positively correlated (each fold helps train every other fold's model), so a pooled
    or van Elteren rank sum, which treats them as independent, overstates significance. Their mean has a
    variance of at most 1 whatever the correlation (Cauchy-Schwarz) and is normal in large samples, so
    ``p = 1 - Phi(mean z)`` is valid; conservative by as much as the folds' correlation is below 1.
    The effect size is the folds' mean AUC (``U / (n_current n_reference)`` per fold); a fold whose scores
    are all tied has z = 0.
    """
    aucs, zs = [], []
    for k in np.unique(fold):
        u = rank_sum_u(scores[fold == k], is_current[fold == k])
        aucs.append(u.u / u.pairs)
        zs.append((u.u - u.pairs / 2) / np.sqrt(u.var) if u.var > 0 else 0.0)
    z = float(np.mean(zs))
    return FoldMannWhitney(float(np.mean(aucs)), z, float(stats.norm.sf(z)))


class OutOfFoldScores(NamedTuple):
    """The domain classifier's out-of-fold scores: per row its score, whether it is current, its fold; and
    each feature's split gain summed over the folds' models."""

    scores: np.ndarray
    is_current: np.ndarray
    fold: np.ndarray
    gain: np.ndarray


def out_of_fold_scores(x: pd.DataFrame, y: pd.DataFrame, folds: int, seed: int) -> OutOfFoldScores:
    """Score every row of ``x`` (reference) and ``y`` (current) with a LightGBM model fitted on the other folds."""
    import lightgbm as lgb
    from sklearn.model_selection import StratifiedKFold

    data = pd.concat([x, y], ignore_index=True)
    label = np.r_[np.zeros(len(x)), np.ones(len(y))]
    scores = np.zeros(len(data))
    fold = np.zeros(len(data), dtype=int)
    gain = np.zeros(data.shape[1])
    for k, (train, test) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(data, label)):
        model = lgb.LGBMClassifier(n_estimators=100, learning_rate=0.1, num_leaves=15, min_child_samples=20,
                                   subsample=0.8, subsample_freq=1, colsample_bytree=0.8, max_bin=CLASSIFIER_BINS,
                                   random_state=seed, n_jobs=1, verbose=-1)
        model.fit(data.iloc[train], label[train])
        scores[test] = model.predict_proba(data.iloc[test])[:, 1]
        fold[test] = k
        gain += model.booster_.feature_importance(importance_type="gain")
    return OutOfFoldScores(scores, label == 1, fold, gain)


def domain_classifier(x: pd.DataFrame, y: pd.DataFrame, folds: int, seed: int) -> tuple[float, float, list[tuple[str, float]]]:
    """Cross-validated AUC of a LightGBM model telling reference rows (0) from current rows (1).

    The AUC is the mean of the folds' out-of-fold AUCs, and its p-value :func:`fold_mann_whitney`'s, so no
    extra model fits or permutations are needed. Features are ranked by their share of the total split
    gain across folds. Returns ``(auc, p_value, [(feature, gain share), ...])``.
    """
    oof = out_of_fold_scores(x, y, folds, seed)
    test = fold_mann_whitney(oof.scores, oof.is_current, oof.fold)
    shares = oof.gain / oof.gain.sum() if oof.gain.sum() > 0 else oof.gain
    ranked = sorted(zip(x.columns, shares.tolist()), key=lambda t: -t[1])
    return test.auc, test.p_value, [(str(c), float(s)) for c, s in ranked if s > 0]


def _sample(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    if len(df) <= n:
        return df.reset_index(drop=True)
    return df.iloc[np.sort(rng.choice(len(df), size=n, replace=False))].reset_index(drop=True)


@dataclass(frozen=True)
class ReferenceSample:
    """The multivariate tests' reference side, drawn once: the sampled rows, how many rows the reference has,
    and the random state after the draw, from which the current side's sample and the permutations follow.
    Reused for every block (:class:`~calmops_dagster.drift.profile.ReferenceProfile`), it gives the results
    a fresh draw would."""

    rows: pd.DataFrame
    n_rows: int
    rng_state: dict

    @classmethod
    def draw(cls, reference: pd.DataFrame, config: DriftConfig) -> "ReferenceSample":
        rng = np.random.default_rng(config.seed)
        rows = _sample(reference, config.multivariate_sample_size, rng)
        return cls(rows, len(reference), rng.bit_generator.state)

    def rng(self) -> np.random.Generator:
        """A generator in the state right after the reference was drawn."""
        rng = np.random.default_rng()
        rng.bit_generator.state = self.rng_state
        return rng


def run_multivariate(reference: ReferenceSample, current: pd.DataFrame, numeric: list, categorical: list,
                     config: DriftConfig) -> tuple[list[MultivariateResult] | None, str]:
    """Run the configured multivariate tests on the tested ``numeric`` and ``categorical`` columns.

    Returns the results and a note on the sampling, or ``(None, reason)`` when the tests cannot run.
    ``reference`` is the reference's sample (:meth:`ReferenceSample.draw`); the current side's sample and the
    permutations are drawn from the random state it was left in.

    Numeric features are standardized with the reference sample's mean and standard deviation and
    missing values set to that mean (0). MMD uses the numeric features only; the classifier also uses the
    categorical ones (as pandas categories, which LightGBM splits on natively).
    """
    if not numeric and not categorical:
        return None, "multivariate tests not run: no testable feature"
    n_ref = reference.n_rows
    if min(n_ref, len(current)) < MIN_ROWS:
        return None, f"multivariate tests not run: fewer than {MIN_ROWS} rows on a side"
    rng = reference.rng()
    ref, cur = reference.rows, _sample(current, config.multivariate_sample_size, rng)
    sample_note = f"sampled {len(ref)} of {n_ref} reference and {len(cur)} of {len(current)} current rows"
    each_alpha = config.alpha * config.multivariate_alpha_share / len(config.multivariate_tests)
    results = []
    num_ref = ref[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
    num_cur = cur[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
    mu, sd = num_ref.mean(), num_ref.std().replace(0.0, 1.0).fillna(1.0)
    z_ref = ((num_ref - mu) / sd).fillna(0.0)
    z_cur = ((num_cur - mu) / sd).fillna(0.0)
    if "mmd" in config.multivariate_tests and numeric:
        exceedances = max(config.mmd_exceedances, math.ceil(each_alpha * config.mmd_permutations))
        mmd = mmd_sequential_test(z_ref.to_numpy(), z_cur.to_numpy(), config.mmd_permutations, rng, exceedances)
        results.append(MultivariateResult(
            test="mmd", statistic=mmd.mmd2, p_value=mmd.p_value, effect_size=mmd.mmd2, threshold=0.0,
            alpha=each_alpha, drifted=bool(mmd.p_value < each_alpha), n_ref=len(ref), n_cur=len(cur),
            features=numeric,
            note=f"{sample_note}; RBF sigma={mmd.sigma:.3g} (median heuristic, standardized numeric features); "
                 f"{mmd.permutations} of {config.mmd_permutations} permutations (sequential: stops once "
                 f"{exceedances} reach the statistic)",
        ))
    if "classifier" in config.multivariate_tests:
        x, y = z_ref.copy(), z_cur.copy()
        for name in categorical:
            cats = pd.Categorical(pd.concat([ref[name], cur[name]], ignore_index=True).astype(str))
            x[name] = cats[: len(ref)]
            y[name] = cats[len(ref):]
        auc, p, top = domain_classifier(x, y, config.classifier_folds, config.seed)
        results.append(MultivariateResult(
            test="classifier", statistic=auc, p_value=p, effect_size=auc, threshold=config.classifier_min_auc,
            alpha=each_alpha, drifted=bool(p < each_alpha and auc >= config.classifier_min_auc),
            n_ref=len(ref), n_cur=len(cur), features=numeric + categorical, top_features=top,
            note=f"{sample_note}; LightGBM, {config.classifier_folds} folds: mean of the folds' out-of-fold "
                 "AUCs, p from their mean Mann-Whitney z",
        ))
    return results, sample_note
