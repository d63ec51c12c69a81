"""Is the domain classifier's p-value valid, and what power does it keep? (issue: classifier p-value).

On seeded data sets, each scored once by the classifier's folds (``out_of_fold_scores``, 3 folds), three
p-values of the same out-of-fold scores are compared side by side:

- ``pooled``: the one-sided Mann-Whitney test of all out-of-fold scores pooled (the code before the fix);
- ``van_elteren``: van Elteren's stratified rank sum over the folds (folds treated as independent strata);
- ``fold_mean_z``: :func:`~calmops_dagster.drift.multivariate.fold_mann_whitney`, the mean of the folds' z-scores
  (the code now), valid whatever the folds' correlation;
- ``fold_z_bilinear``: the folds' z-scores summed over ``sqrt(2 K)``, valid only if their correlation is at most
  ``1 / (K - 1)``, as it is for a learner whose scores are linear in its training labels (a candidate measured
  for comparison, not a guarantee for LightGBM).

Null data sets (reference and current from one distribution, 1,000 rows a side): ``numeric``, 20 N(0, 1)
columns; ``mixed``, 10 N(0, 1) columns and 4 categorical ones of 8 equally likely levels. For each the share
of data sets with p <= a (a = 0.005, 0.05, 0.1) is printed with its Clopper-Pearson 95% interval and the
3-sigma binomial bound ``a + 3 sqrt(a (1 - a) / n)`` a valid p-value stays under, and the decision's false
alarms (p < 0.005, the classifier's level in the default config, and AUC >= 0.55).

Shifted data sets (power): ``shift``, as ``drift_bench.py``: 5 of 20 numeric columns shifted by 0.3 (and a
weak one, by 0.15); ``mixed_shift``: 5 of 10 numeric columns by 0.3 and 2 of 4 categorical columns to level
probabilities (0.3, 0.1, ..., 0.1); ``correlation``: 4 N(0, 1) columns, the correlation of the first two 0
against 0.9 (as ``tests/test_drift_multivariate.py``, 800 rows a side), and weak ones, 0 against 0.4 and 0.3.
Power is the share of data sets with p < 0.005, and with p < 0.005 and AUC >= 0.55 (the decision).

Run: ``python benchmarks/classifier_pvalue_bench.py [--null 300] [--power 100]``.
"""

import argparse
import os
import time

import numpy as np
import pandas as pd
from scipy import stats

from calmops_dagster.drift.multivariate import fold_mann_whitney, out_of_fold_scores, rank_sum_u

FOLDS = 3
LEVELS = (0.005, 0.05, 0.1)
DECISION_ALPHA, MIN_AUC = 0.005, 0.55
CATEGORIES = np.array([f"level_{i}" for i in range(8)], dtype=object)


def numeric_frame(rng: np.random.Generator, rows: int, columns: int, shifted: int = 0, shift: float = 0.0) -> pd.DataFrame:
    """``columns`` N(0, 1) columns, the first ``shifted`` of them moved by ``shift``."""
    means = np.r_[np.full(shifted, shift), np.zeros(columns - shifted)]
    return pd.DataFrame(rng.normal(size=(rows, columns)) + means).add_prefix("num_")


def mixed_frame(rng: np.random.Generator, rows: int, drifted: bool) -> pd.DataFrame:
    """10 numeric and 4 categorical columns; when ``drifted``, 5 numeric shifted by 0.3, 2 categorical skewed."""
    frame = numeric_frame(rng, rows, 10, 5 if drifted else 0, 0.3)
    for j in range(4):
        p = np.r_[0.3, np.full(7, 0.1)] if drifted and j < 2 else np.full(8, 1 / 8)
        frame[f"cat_{j}"] = CATEGORIES[rng.choice(8, rows, p=p)]
    return frame


def correlated_frame(rng: np.random.Generator, rows: int, rho: float) -> pd.DataFrame:
    """4 N(0, 1) columns, the first two with correlation ``rho``."""
    cov = np.eye(4)
    cov[0, 1] = cov[1, 0] = rho
    return pd.DataFrame(rng.multivariate_normal(np.zeros(4), cov, size=rows)).add_prefix("f")


def as_categories(x: pd.DataFrame, y: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Object columns as pandas categories shared by both sides, as ``run_multivariate`` passes them."""
    x, y = x.copy(), y.copy()
    for name in x.columns[x.dtypes == object]:
        cats = pd.Categorical(pd.concat([x[name], y[name]], ignore_index=True))
        x[name], y[name] = cats[: len(x)], cats[len(x):]
    return x, y


SCENARIOS = {
    "numeric": lambda rng: (numeric_frame(rng, 1000, 20), numeric_frame(rng, 1000, 20)),
    "mixed": lambda rng: (mixed_frame(rng, 1000, False), mixed_frame(rng, 1000, False)),
    "shift": lambda rng: (numeric_frame(rng, 1000, 20), numeric_frame(rng, 1000, 20, 5, 0.3)),
    "weak_shift": lambda rng: (numeric_frame(rng, 1000, 20), numeric_frame(rng, 1000, 20, 5, 0.15)),
    "mixed_shift": lambda rng: (mixed_frame(rng, 1000, False), mixed_frame(rng, 1000, True)),
    "correlation": lambda rng: (correlated_frame(rng, 800, 0.0), correlated_frame(rng, 800, 0.9)),
    "correlation_0.4": lambda rng: (correlated_frame(rng, 800, 0.0), correlated_frame(rng, 800, 0.4)),
    "correlation_0.3": lambda rng: (correlated_frame(rng, 800, 0.0), correlated_frame(rng, 800, 0.3)),
}


def van_elteren(scores: np.ndarray, is_current: np.ndarray, fold: np.ndarray) -> float:
    """One-sided p-value of van Elteren's stratified rank sum (weights 1 / (n_k + 1), tie-corrected variance)."""
    num = var = 0.0
    for k in np.unique(fold):
        in_fold = fold == k
        u = rank_sum_u(scores[in_fold], is_current[in_fold])
        w = 1 / (in_fold.sum() + 1)
        num += w * (u.u - u.pairs / 2)
        var += w**2 * u.var
    return float(stats.norm.sf(num / np.sqrt(var)))


def one_data_set(scenario: str, seed: int) -> dict:
    """The three p-values, both AUCs and the folds' z-scores of one seeded data set."""
    x, y = as_categories(*SCENARIOS[scenario](np.random.default_rng(seed)))
    oof = out_of_fold_scores(x, y, FOLDS, seed)
    s, cur = oof.scores, oof.is_current
    pooled = stats.mannwhitneyu(s[cur], s[~cur], alternative="greater")
    new = fold_mann_whitney(s, cur, oof.fold)
    fold_z = [fold_mann_whitney(s[oof.fold == k], cur[oof.fold == k], oof.fold[oof.fold == k]).z for k in range(FOLDS)]
    return {"pooled": float(pooled.pvalue), "van_elteren": van_elteren(s, cur, oof.fold), "fold_mean_z": new.p_value,
            "fold_z_bilinear": float(stats.norm.sf(np.sum(fold_z) / np.sqrt(2 * FOLDS))),
            "auc_pooled": float(pooled.statistic) / (len(x) * len(y)), "auc_fold_mean": new.auc,
            **{f"z{k}": z for k, z in enumerate(fold_z)}}


METHODS = (("pooled", "auc_pooled"), ("van_elteren", "auc_pooled"), ("fold_mean_z", "auc_fold_mean"),
           ("fold_z_bilinear", "auc_fold_mean"))


def run(scenario: str, count: int, first_seed: int) -> pd.DataFrame:
    return pd.DataFrame([one_data_set(scenario, first_seed + i) for i in range(count)])


def null_table(name: str, runs: pd.DataFrame) -> None:
    n = len(runs)
    z = runs[[f"z{k}" for k in range(FOLDS)]]
    corr = z.corr().to_numpy()[np.triu_indices(FOLDS, 1)].mean()
    print(f"\n### null `{name}`: {n} data sets; folds' z: variance {z.var().mean():.2f}, mean correlation {corr:.2f}; "
          f"AUC sd: pooled {runs.auc_pooled.std():.4f}, fold mean {runs.auc_fold_mean.std():.4f}")
    print("| p-value | " + " | ".join(f"P(p <= {a}) [95% CI] (3-sigma bound {a + 3 * np.sqrt(a * (1 - a) / n):.3f})"
                                        for a in LEVELS) + f" | false alarms (p < {DECISION_ALPHA}, AUC >= {MIN_AUC}) |")
    print("|---" * (len(LEVELS) + 2) + "|")
    for method, auc in METHODS:
        cells = []
        for a in LEVELS:
            k = int((runs[method] <= a).sum())
            ci = stats.binomtest(k, n, a).proportion_ci(0.95)
            ok = "ok" if k / n <= a + 3 * np.sqrt(a * (1 - a) / n) else "**over**"
            cells.append(f"{k / n:.3f} [{ci.low:.3f}, {ci.high:.3f}] {ok}")
        alarms = int(((runs[method] < DECISION_ALPHA) & (runs[auc] >= MIN_AUC)).sum())
        print(f"| {method} | " + " | ".join(cells) + f" | {alarms}/{n} |")


def power_table(results: dict) -> None:
    print(f"\n### power: share of data sets with p < {DECISION_ALPHA} (and with AUC >= {MIN_AUC} too)")
    print("| scenario | data sets | mean AUC pooled / fold mean | " + " | ".join(m for m, _ in METHODS) + " |")
    print("|---" * (3 + len(METHODS)) + "|")
    for name, runs in results.items():
        cells = []
        for method, auc in METHODS:
            hit = runs[method] < DECISION_ALPHA
            cells.append(f"{hit.mean():.2f} ({(hit & (runs[auc] >= MIN_AUC)).mean():.2f})")
        print(f"| {name} | {len(runs)} | {runs.auc_pooled.mean():.4f} / {runs.auc_fold_mean.mean():.4f} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null", type=int, default=300, help="null data sets per shape")
    parser.add_argument("--power", type=int, default=100, help="data sets per shifted scenario")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    wall, cpu = time.perf_counter(), time.process_time()
    for name in ("numeric", "mixed"):
        null_table(name, run(name, args.null, 10_000))
    power_table({name: run(name, args.power, 20_000)
                 for name in ("shift", "weak_shift", "mixed_shift", "correlation", "correlation_0.4", "correlation_0.3")})
    print(f"\nwall {time.perf_counter() - wall:.0f} s, CPU {time.process_time() - cpu:.0f} s; "
          f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
