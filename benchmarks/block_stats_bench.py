"""The per-block statistics made cheaper for issue 14, before and after in one run, on the same data.

1. **KS p-values** (``calmops_dagster.drift.univariate.ks``): before, scipy's exact two-sample distribution
   up to 10,000 values a side; after, the asymptotic one above ``KS_EXACT_MAX_N`` (2,000). Blocks of
   ``--features`` columns, reference 7,000 rows vs current 10,000 (the sizes of the benchmark pipeline's
   training rows and blocks): ``--blocks`` stable blocks (same distribution) and as many shifted ones (every
   column's mean moved by ``--shift`` standard deviations). Reported for both: seconds per column, the share
   of stable blocks with an alarm (Holm across the block's columns at alpha 0.04, the univariate share of
   the default 0.05), the share of shifted blocks with an alarm (power), and how many single decisions differ.
2. **Performance bootstrap** (``performance_drift``, 500 resamples): before, a loop scoring resampled rows;
   after, multinomial confusion counts. Seconds per block and the 95% interval of each on the same
   predictions (they are different draws of the same bootstrap distribution).

    python benchmarks/block_stats_bench.py [--blocks 100] [--features 14] [--shift 0.04]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import stats

from calmops_dagster.drift import univariate as uv
from calmops_dagster.drift.corrections import adjust_pvalues
from calmops_dagster.drift.model_drift import bootstrap_scores, score

ALPHA = 0.04


def ks_before(ref: np.ndarray, cur: np.ndarray) -> float:
    """The p-value the engine gave before: scipy's ``ks_2samp`` (exact up to 10,000 a side)."""
    return float(stats.ks_2samp(ref, cur).pvalue)


def ks_after(ref: np.ndarray, cur: np.ndarray) -> float:
    return uv.ks(uv.Merged.from_sorted(np.sort(ref), np.sort(cur))).p_value


def ks_part(args) -> None:
    rng = np.random.default_rng(0)
    seconds = {"before": 0.0, "after": 0.0}
    alarms = {(kind, shift): 0 for kind in seconds for shift in (0.0, args.shift)}
    differ = tests = 0
    for shift in (0.0, args.shift):
        for _ in range(args.blocks):
            p = {"before": [], "after": []}
            for _ in range(args.features):
                ref, cur = rng.normal(size=7_000), rng.normal(shift, size=10_000)
                for kind, test in (("before", ks_before), ("after", ks_after)):
                    started = time.perf_counter()
                    p[kind].append(test(ref, cur))
                    seconds[kind] += time.perf_counter() - started
            decided = {kind: adjust_pvalues(np.array(v), "holm") < ALPHA for kind, v in p.items()}
            for kind, flags in decided.items():
                alarms[(kind, shift)] += bool(flags.any())
            differ += int((decided["before"] != decided["after"]).sum())
            tests += args.features
    columns = 2 * args.blocks * args.features
    print(f"KS, {args.blocks} stable + {args.blocks} shifted (mean +{args.shift} sd) blocks of {args.features} "
          f"columns, 7,000 vs 10,000 rows, Holm at alpha {ALPHA}")
    print(f"{'':36} {'s/column':>9} {'false alarms':>13} {'power':>7}")
    for kind, label in (("before", "before: scipy exact"), ("after", "after: asymptotic above 2,000")):
        print(f"{label:36} {seconds[kind] / columns:9.4f} {alarms[(kind, 0.0)] / args.blocks:13.3f} "
              f"{alarms[(kind, args.shift)] / args.blocks:7.3f}")
    print(f"single decisions that differ: {differ} of {tests}")


def bootstrap_part(blocks: int = 20, rows: int = 10_000) -> None:
    rng = np.random.default_rng(1)
    spent = {"before": 0.0, "after": 0.0}
    gaps, widths = [], []
    for _ in range(blocks):
        y = rng.integers(0, 2, rows)
        pred = np.where(rng.random(rows) < 0.8, y, 1 - y)
        started = time.perf_counter()
        draws = np.random.default_rng(0)
        loop = np.array([score(y[i], pred[i], "balanced_accuracy")
                         for i in (draws.integers(0, rows, rows) for _ in range(500))])
        spent["before"] += time.perf_counter() - started
        started = time.perf_counter()
        fast = bootstrap_scores(y, pred, "balanced_accuracy", 500, np.random.default_rng(0))
        spent["after"] += time.perf_counter() - started
        bounds = np.quantile(loop, [0.025, 0.975]), np.quantile(fast, [0.025, 0.975])
        gaps.append(np.abs(bounds[0] - bounds[1]))
        widths.append(bounds[0][1] - bounds[0][0])
    gaps = np.array(gaps)
    print(f"\nbootstrap of balanced accuracy, {blocks} blocks of {rows:,} rows, 500 resamples: before (row loop) "
          f"{spent['before'] / blocks:.3f} s/block, after (multinomial) {spent['after'] / blocks:.4f} s/block; "
          f"the 95% bounds differ by {gaps.mean():.4f} on average (max {gaps.max():.4f}) for intervals "
          f"{np.mean(widths):.4f} wide")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=100)
    parser.add_argument("--features", type=int, default=14)
    parser.add_argument("--shift", type=float, default=0.04)
    args = parser.parse_args()
    print("load " + " ".join(f"{v:.1f}" for v in os.getloadavg()))
    ks_part(args)
    bootstrap_part()
    print("load " + " ".join(f"{v:.1f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
