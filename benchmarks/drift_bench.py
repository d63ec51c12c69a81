"""Speed and memory of ``detect_drift`` (univariate defaults) against the baselines named in issue 3.

``--rows`` reference and as many current rows (default 500,000), ``--numeric`` numeric and
``--categorical`` categorical columns (default 50 and 10; a few drifted). Each contender runs on the same
frames:

- ``detect_drift``, univariate defaults (multivariate off, as the targets are for the univariate pass;
  ``--multivariate`` times the default config, MMD and domain classifier included, as well);
- the same on a ``ReferenceProfile`` prepared once (what each block after the first costs in a pipeline);
  the profile's one-time cost (build, and its ``.npz`` file written and read against the reference's
  Parquet file read) is printed separately;
- the sort-bound baseline: ``scipy.stats.ks_2samp`` per numeric column, ``scipy.stats.chisquare`` of
  current counts against reference frequencies per categorical column;
- Evidently's ``DataDriftPreset`` when ``evidently`` is importable (an optional extra).

Times: ``--repeats`` rounds, each running the scipy loop and ``detect_drift`` back to back (which goes
first alternates), so both see the same load; the medians of wall and CPU time (this process) and of the
per-round ratio are printed with the load average. CPU time is what to compare on a loaded machine: wall
time there mostly measures the other processes. Memory: the peak of traced Python/numpy allocations
(tracemalloc; numpy registers its buffers there) in one separate run each, beside the frames' size, as
tracing slows Python-level code and so is kept out of the timed rounds.

Run: ``python benchmarks/drift_bench.py [--rows N] [--numeric N] [--categorical N] [--repeats N]
[--multivariate] [--no-drift]``; issue 36's small block is ``--rows 200000 --numeric 20 --categorical 0 --repeats 9``.
Targets: at most 1.0x the scipy loop, at least 5x faster than Evidently, peak memory below 3x the frames'
size.
"""

import argparse
import io
import os
import statistics
import time
import tracemalloc

import numpy as np
import pandas as pd
from scipy import stats

from calmops_dagster.drift import DriftConfig, ReferenceProfile, detect_drift


def make_frames(rows: int, n_num: int = 50, n_cat: int = 10, seed: int = 0,
                drifted: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded reference and current frames; 5 numeric and 2 categorical columns drift in ``current`` (none
    when not ``drifted``)."""
    rng = np.random.default_rng(seed)
    levels = np.array([f"level_{i}" for i in range(8)], dtype=object)

    def frame(drift: bool) -> pd.DataFrame:
        data = {f"num_{i}": rng.normal(0.3 if drift and i < 5 else 0.0, 1.0, rows) for i in range(n_num)}
        for j in range(n_cat):
            p = np.full(8, 1 / 8) if not (drift and j < 2) else np.r_[0.3, np.full(7, 0.1)]
            data[f"cat_{j}"] = levels[rng.choice(8, rows, p=p)]
        return pd.DataFrame(data)

    return frame(False), frame(drifted)


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


def timed(fn, *args) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn(*args)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(contenders: dict, repeats: int) -> dict:
    """Per contender the medians of wall and CPU seconds over ``repeats`` rounds, each round running every
    contender once, in an order that rotates from round to round."""
    names = list(contenders)
    runs: dict = {name: [] for name in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            runs[name].append(timed(*contenders[name]))
    return runs


def one_time_cost(ref: pd.DataFrame, config: DriftConfig, repeats: int) -> ReferenceProfile:
    """Print what preparing ``ref``'s profile costs once (medians of ``repeats``), and its file against the
    reference's Parquet file; return the profile (its settings serve the default config too)."""
    builds = [timed(ReferenceProfile.build, ref, config) for _ in range(max(repeats, 1))]
    profile = ReferenceProfile.build(ref, config)
    data, parquet = profile.to_npz(), ref.to_parquet(index=False)
    loads = [timed(ReferenceProfile.from_npz, data) for _ in range(max(repeats, 1))]
    reads = [timed(lambda: pd.read_parquet(io.BytesIO(parquet))) for _ in range(max(repeats, 1))]
    print(f"profile, once per reference: build {_median(builds, 0):.3f} s wall / {_median(builds, 1):.3f} s CPU; "
          f"file {len(data) / 2**20:.1f} MB read in {_median(loads, 1):.3f} s CPU, the reference's Parquet "
          f"{len(parquet) / 2**20:.1f} MB in {_median(reads, 1):.3f} s CPU (load average {os.getloadavg()[0]:.1f})")
    return profile


def _median(runs: list, k: int) -> float:
    return statistics.median(r[k] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--numeric", type=int, default=50)
    parser.add_argument("--categorical", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--multivariate", action="store_true", help="also time the default config")
    parser.add_argument("--no-drift", action="store_true", help="current drawn like reference (no column drifts)")
    args = parser.parse_args()
    ref, cur = make_frames(args.rows, args.numeric, args.categorical, drifted=not args.no_drift)
    frames_mb = (ref.memory_usage(deep=True).sum() + cur.memory_usage(deep=True).sum()) / 2**20
    print(f"frames: {args.rows:,} + {args.rows:,} rows x {ref.shape[1]} columns "
          f"({args.numeric} numeric, {args.categorical} categorical), {frames_mb:,.0f} MB (deep)")

    config = DriftConfig(multivariate=False)
    report, _, m_ours = measure(detect_drift, ref, cur, config)
    hits, _, m_scipy = measure(scipy_loop, ref, cur)
    profile = one_time_cost(ref, config, args.repeats)
    contenders = {"scipy loop (ks/chisquare)": (scipy_loop, ref, cur),
                  "detect_drift (univariate)": (detect_drift, ref, cur, config),
                  "profile, univariate": (detect_drift, profile, cur, config)}
    if args.multivariate:
        contenders["detect_drift (default)"] = (detect_drift, ref, cur, DriftConfig())
        contenders["profile, default"] = (detect_drift, profile, cur, DriftConfig())
    load_before = os.getloadavg()
    runs = interleaved(contenders, args.repeats)
    load_after = os.getloadavg()
    base = runs["scipy loop (ks/chisquare)"]
    print(f"{args.repeats} interleaved rounds, load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"{'contender':<28}{'wall s':>9}{'cpu s':>8}{'wall/scipy':>12}{'cpu/scipy':>11}{'peak MB':>9}")
    for name, name_runs in runs.items():
        ratios = [[a[k] / b[k] for a, b in zip(name_runs, base)] for k in (0, 1)]
        peak = {"detect_drift (univariate)": f"{m_ours / 2**20:>9.0f}",
                "scipy loop (ks/chisquare)": f"{m_scipy / 2**20:>9.0f}"}.get(name, f"{'':>9}")
        print(f"{name:<28}{_median(name_runs, 0):>9.3f}{_median(name_runs, 1):>8.3f}"
              f"{statistics.median(ratios[0]):>12.2f}{statistics.median(ratios[1]):>11.2f}{peak}")
    print(f"detect_drift: {report.summary()['n_drifted']} drifted features: {sorted(report.drifted_features)}; "
          f"scipy loop: {hits} columns with raw p < 0.05")
    try:
        _, t_ev, m_ev = measure(evidently_preset, ref, cur)
        t_ours = _median(runs["detect_drift (univariate)"], 0)
        print(f"evidently DataDriftPreset: {t_ev:.2f} s, peak {m_ev / 2**20:.0f} MB; "
              f"speed-up vs evidently: {t_ev / t_ours:.1f}x (target >= 5x)")
    except ImportError:
        print("evidently DataDriftPreset: not installed (pip install evidently to compare)")
    print(f"peak/frames: {m_ours / 2**20 / frames_mb:.2f} (target < 3); ratio to the scipy loop target <= 1.0x")


if __name__ == "__main__":
    main()
