"""Throughput of the generators on a 10,000 x 20 mixed table, against named baselines in the same run.

Realistic synthesis: every ``RealGenerator`` method learns the table and draws 10,000 rows; the baseline is
a plain numpy bootstrap of the rows (what ``resample`` does, without any bookkeeping). Rows/second counts
fit plus sample, because a generator is always fitted before it draws. Each line also gives fidelity
figures (largest per-column KS/TVD, largest correlation difference, range of numeric variance ratios) so
speed is never read without quality.

Synthetic streams: each river generator draws 10,000 rows; the baseline is a vectorised numpy SEA stream.

Run: ``.venv/bin/python benchmarks/generators_bench.py [--rows 10000] [--deep]`` (``--deep`` adds CTGAN and
TVAE, 10 epochs each, slow on CPU).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from calmops_dagster.generators.fidelity import fidelity_report
from calmops_dagster.generators.real import RealGenerator
from calmops_dagster.generators.synthetic import GENERATORS, generate_synthetic


def mixed_table(n: int, seed: int = 0) -> pd.DataFrame:
    """14 correlated numeric columns (4 integer), 5 categoricals, a binary target; 5% missing in 3 columns."""
    rng = np.random.default_rng(seed)
    k = 14
    loadings = rng.normal(0, 0.7, (k, 3))
    z = rng.standard_normal((n, 3)) @ loadings.T + rng.standard_normal((n, k))
    frame = pd.DataFrame({f"num_{i:02d}": z[:, i] * (1 + i % 3) + i for i in range(k)})
    for i in range(4):
        frame[f"num_{i:02d}"] = np.round(frame[f"num_{i:02d}"] * 5).astype(int)
    for j in range(5):
        cats = np.array(list("abcdef"[: 3 + j % 3]))
        score = z[:, j] + rng.normal(0, 0.7, n)
        frame[f"cat_{j}"] = cats[np.digitize(score, np.quantile(score, np.linspace(0, 1, len(cats) + 1)[1:-1]))]
    frame["target"] = (z[:, 0] - z[:, 5] + rng.normal(0, 1, n) > 1.0).astype(int)
    for col in ("num_05", "num_09", "cat_2"):
        frame.loc[rng.random(n) < 0.05, col] = np.nan
    return frame


def numpy_bootstrap(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Baseline: rows drawn with replacement, nothing learnt."""
    rows = np.random.default_rng(seed).integers(len(frame), size=n)
    return frame.iloc[rows].reset_index(drop=True)


def fidelity_figures(real: pd.DataFrame, synth: pd.DataFrame) -> str:
    report = fidelity_report(real, synth)
    numeric = [c for c in real.columns if c.startswith("num_")]
    ratios = synth[numeric].astype(float).var() / real[numeric].var()
    return (
        f"max KS/TVD {report.columns['value'].max():.3f}  corr max|diff| {report.correlation['max_abs']:.3f}  "
        f"var ratio {ratios.min():.2f}-{ratios.max():.2f}  target mean {synth['target'].mean():.3f}"
    )


def timed(run: Callable[[], pd.DataFrame]) -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    out = run()
    return out, time.perf_counter() - start


def bench_real(n: int, deep: bool) -> None:
    real = mixed_table(n)
    print(f"RealGenerator on a {real.shape[0]} x {real.shape[1]} mixed table, drawing {n} rows "
          f"(target mean {real['target'].mean():.3f})")
    baseline, base_s = timed(lambda: numpy_bootstrap(real, n, 0))
    base_rate = n / base_s
    print(f"{'numpy bootstrap (baseline)':30} {base_s:8.2f} s {base_rate:12,.0f} rows/s {'1.0':>10}x  "
          f"{fidelity_figures(real, baseline)}")
    cases = [("resample", {}), ("cart", {}), ("rf", {}), ("lgbm", {}), ("sdv", {"sdv_model": "gaussian_copula"})]
    if deep:
        cases += [("sdv", {"sdv_model": "ctgan", "sdv_epochs": 10}), ("sdv", {"sdv_model": "tvae", "sdv_epochs": 10})]
    for method, kwargs in cases:
        name = method + (f" ({kwargs['sdv_model']})" if kwargs else "")
        gen = RealGenerator(method, target="target", seed=0, **kwargs)
        start = time.perf_counter()
        gen.fit(real)
        fit_s = time.perf_counter() - start
        synth, sample_s = timed(lambda gen=gen: gen.sample(n))
        total = fit_s + sample_s
        print(f"{name:30} {total:8.2f} s {n / total:12,.0f} rows/s {base_rate / (n / total):10,.0f}x slower"
              f"  (fit {fit_s:.2f} s, sample {sample_s:.2f} s = {n / sample_s:,.0f} rows/s)  "
              f"{fidelity_figures(real, synth)}")


def numpy_sea(n: int, seed: int) -> pd.DataFrame:
    """Baseline: SEA (variant 0) vectorised in numpy."""
    x = np.random.default_rng(seed).uniform(0, 10, (n, 3))
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "target": (x[:, 0] + x[:, 1] > 8).astype(int)})


def bench_synthetic(n: int) -> None:
    print(f"\nriver synthetic streams, {n} rows each")
    _, base_s = timed(lambda: numpy_sea(n, 0))
    print(f"{'numpy SEA (baseline)':30} {base_s:8.3f} s {n / base_s:12,.0f} rows/s")
    for name in sorted(GENERATORS):
        _, s = timed(lambda name=name: generate_synthetic(name, n, seed=0)[0])
        print(f"{name:30} {s:8.3f} s {n / s:12,.0f} rows/s {s / base_s:10,.0f}x slower")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--deep", action="store_true", help="also CTGAN and TVAE (10 epochs each)")
    args = parser.parse_args()
    bench_real(args.rows, args.deep)
    bench_synthetic(args.rows)


if __name__ == "__main__":
    main()
