"""Speed and memory of ``detect_drift`` (univariate defaults) against the baselines named in issue 3.

500,000 reference and 500,000 current rows, 50 numeric and 10 categorical columns (a few drifted).
Each contender runs on the same frames and reports wall time and its peak of traced Python/numpy
allocations (tracemalloc; numpy registers its buffers there), beside the size of the two frames:

- ``detect_drift``, univariate defaults (multivariate off, as the targets are for the univariate pass);
- the sort-bound baseline: ``scipy.stats.ks_2samp`` per numeric column, ``scipy.stats.chisquare`` of
  current counts against reference frequencies per categorical column;
- Evidently's ``DataDriftPreset`` when ``evidently`` is importable (an optional extra).

Run: ``python benchmarks/drift_bench.py [--rows N]``. Targets: at most 1.5x the scipy loop, at least 5x
faster than Evidently, peak memory below 3x the frames' size.
"""

import argparse
import time
import tracemalloc

import numpy as np
import pandas as pd
from scipy import stats

from calmops_dagster.drift import DriftConfig, detect_drift


def make_frames(rows: int, n_num: int = 50, n_cat: int = 10, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded reference and current frames; 5 numeric and 2 categorical columns drift in ``current``."""
    rng = np.random.default_rng(seed)
    levels = np.array([f"level_{i}" for i in range(8)], dtype=object)

    def frame(drift: bool) -> pd.DataFrame:
        data = {f"num_{i}": rng.normal(0.3 if drift and i < 5 else 0.0, 1.0, rows) for i in range(n_num)}
        for j in range(n_cat):
            p = np.full(8, 1 / 8) if not (drift and j < 2) else np.r_[0.3, np.full(7, 0.1)]
            data[f"cat_{j}"] = levels[rng.choice(8, rows, p=p)]
        return pd.DataFrame(data)

    return frame(False), frame(True)


def scipy_loop(ref: pd.DataFrame, cur: pd.DataFrame) -> int:
    """The plain baseline: one scipy call per column, no correction; returns the number of p < 0.05."""
    hits = 0
    for col in ref.columns:
        if pd.api.types.is_numeric_dtype(ref[col]):
            p = stats.ks_2samp(ref[col].to_numpy(), cur[col].to_numpy()).pvalue
        else:
            freq = ref[col].value_counts(normalize=True)
            obs = cur[col].value_counts().reindex(freq.index, fill_value=0)
            p = stats.chisquare(obs.to_numpy(), freq.to_numpy() * obs.sum()).pvalue
        hits += p < 0.05
    return hits


def evidently_preset(ref: pd.DataFrame, cur: pd.DataFrame):
    """Evidently's DataDriftPreset (0.7 API first, then the legacy one); None when not installed."""
    try:
        from evidently import Report
        from evidently.presets import DataDriftPreset
        return Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    except ImportError:
        pass
    from evidently.metric_preset import DataDriftPreset
    from evidently.report import Report
    report = Report(metrics=[DataDriftPreset()])
    report.run(reference_data=ref, current_data=cur)
    return report


def measure(fn, *args):
    """Wall time in seconds and traced peak allocation in bytes of ``fn(*args)``."""
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn(*args)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    args = parser.parse_args()
    ref, cur = make_frames(args.rows)
    frames_mb = (ref.memory_usage(deep=True).sum() + cur.memory_usage(deep=True).sum()) / 2**20
    print(f"frames: {args.rows:,} + {args.rows:,} rows x {ref.shape[1]} columns, {frames_mb:,.0f} MB (deep)")

    config = DriftConfig(multivariate=False)
    report, t_ours, m_ours = measure(detect_drift, ref, cur, config)
    hits, t_scipy, m_scipy = measure(scipy_loop, ref, cur)
    print(f"{'contender':<28}{'wall s':>9}{'peak MB':>10}{'peak/frames':>13}  result")
    print(f"{'detect_drift (univariate)':<28}{t_ours:>9.2f}{m_ours / 2**20:>10.0f}{m_ours / 2**20 / frames_mb:>13.2f}"
          f"  {report.summary()['n_drifted']} drifted features: {sorted(report.drifted_features)}")
    print(f"{'scipy loop (ks/chisquare)':<28}{t_scipy:>9.2f}{m_scipy / 2**20:>10.0f}{m_scipy / 2**20 / frames_mb:>13.2f}"
          f"  {hits} columns with raw p < 0.05")
    try:
        _, t_ev, m_ev = measure(evidently_preset, ref, cur)
        print(f"{'evidently DataDriftPreset':<28}{t_ev:>9.2f}{m_ev / 2**20:>10.0f}{m_ev / 2**20 / frames_mb:>13.2f}")
        print(f"speed-up vs evidently: {t_ev / t_ours:.1f}x (target >= 5x)")
    except ImportError:
        print("evidently DataDriftPreset: not installed (pip install evidently to compare)")
    print(f"ratio to scipy loop: {t_ours / t_scipy:.2f}x (target <= 1.5x); "
          f"peak/frames: {m_ours / 2**20 / frames_mb:.2f} (target < 3)")


if __name__ == "__main__":
    main()
