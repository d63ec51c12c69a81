"""Label-free performance estimation (``calmops_dagster.estimation``) on real US census data, as NannyML does.

The ACS employment data of Massachusetts that NannyML 0.13.1 ships in its wheel: the reference period
(2015, labelled) and the analysis period (2016-2018) with its labels in a separate file, joined by ``id``.
The wheel is fetched with ``pip download nannyml==0.13.1 --no-deps`` into a cache folder (default
``~/.cache/calmops-dagster/nannyml``, never the repository) and the files are read straight out of the zip;
nannyml is not installed.

Two models are estimated on the first 20 chunks of 10,000 analysis rows:

- ``lightgbm``: a LightGBM classifier trained on a random half of the reference, the estimator calibrated
  on the other half;
- ``shipped``: the model outputs that come with the data (``predicted_probability``), the estimator
  calibrated on the whole reference.

For accuracy and ROC AUC it prints the mean absolute error of the estimate against the realized value,
the coverage of the 95% interval, the median wall and CPU time per estimate (CPU counts every BLAS
thread), and the baselines: the reference's realized
metric carried forward, and NannyML's published figures for CBPE on this data (quoted, not rerun).

Run: ``python benchmarks/estimation_bench.py [--cache DIR]``. Exits 1 when the wheel cannot be fetched.
"""

import argparse
import io
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from calmops_dagster.estimation import PerformanceEstimator

WHEEL = "nannyml==0.13.1"
DATA = "nannyml/datasets/data/employment_MA_{}.pq"
#: NannyML's published mean absolute errors of CBPE on this data set, quoted as constants (not rerun here).
NANNYML_PUBLISHED_MAE = {"accuracy": 0.0043, "roc_auc": 0.0030}
METRICS = ("accuracy", "roc_auc")
CHUNK, N_CHUNKS = 10_000, 20
NOT_FEATURES = {"id", "employed", "year", "prediction", "predicted_probability"}


def load_census(cache: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reference and the analysis frame (with its ``employed`` labels), read out of the cached wheel."""
    wheels = sorted(cache.glob("nannyml-0.13.1-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-d", str(cache)],
                                capture_output=True, text=True, check=False)
        wheels = sorted(cache.glob("nannyml-0.13.1-*.whl"))
        if result.returncode != 0 or not wheels:
            sys.exit(f"could not download {WHEEL} into {cache} (pip exit {result.returncode}):\n"
                     f"{result.stderr[-1500:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        reference, analysis, targets = (pd.read_parquet(io.BytesIO(wheel.read(DATA.format(name))))
                                        for name in ("reference", "analysis", "analysis_target"))
    analysis = analysis.merge(targets, on="id", how="inner", validate="one_to_one")
    return reference, analysis


def lightgbm_setting(reference: pd.DataFrame, analysis: pd.DataFrame, seed: int = 0):
    """(calibration labels, calibration proba, analysis proba) of a LightGBM model on half the reference."""
    features = [c for c in reference.columns if c not in NOT_FEATURES]
    analysis = analysis.astype({c: reference[c].dtype for c in features})  # the reference's categories
    train = np.random.default_rng(seed).permutation(len(reference)) < len(reference) // 2
    model = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.05, random_state=seed, n_jobs=2, verbose=-1)
    model.fit(reference.loc[train, features], reference.loc[train, "employed"])
    calibration = reference.loc[~train]
    return (calibration["employed"].to_numpy(), model.predict_proba(calibration[features])[:, 1],
            model.predict_proba(analysis[features])[:, 1])


def evaluate(y_cal, p_cal, y_chunks, p_chunks) -> dict[str, dict]:
    """Per metric: estimates, intervals, realized values and timings over the chunks."""
    out = {}
    for metric in METRICS:
        est = PerformanceEstimator(metric=metric, random_state=0).fit(y_cal, p_cal)
        rows = []
        for y, p in zip(y_chunks, p_chunks):
            wall, cpu = time.perf_counter(), time.process_time()
            e = est.estimate(p)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rows.append((e.value, e.lower, e.upper, est.realized(y, p), wall, cpu, len(e.warnings)))
        value, lower, upper, realized, wall, cpu, warned = map(np.array, zip(*rows))
        out[metric] = {"estimator": est, "value": value, "lower": lower, "upper": upper, "realized": realized,
                       "wall": wall, "cpu": cpu, "warned": warned}
    return out


def report(name: str, results: dict[str, dict], years: np.ndarray) -> None:
    acc = results["accuracy"]["estimator"]
    print(f"\n== {name}: calibrated on {acc.n_reference_:,} reference rows; raw ECE "
          f"{acc.raw_calibration_error_:.4f} (p = {acc.raw_calibration_pvalue_:.2g}, miscalibrated: "
          f"{acc.raw_miscalibrated_}), out-of-fold ECE after calibration {acc.calibration_error_:.4f}")
    print(f"{'chunk':>5} {'year':>5}" + "".join(f"  {m + ' real':>13} {'est':>7} {'95% interval':>17}"
                                                for m in METRICS))
    for i, year in enumerate(years):
        print(f"{i:>5} {year:>5}" + "".join(
            f"  {r['realized'][i]:>13.4f} {r['value'][i]:>7.4f} [{r['lower'][i]:.4f}, {r['upper'][i]:.4f}]"
            for r in results.values()))
    print(f"{'metric':<9}{'MAE':>8}{'ref carried MAE':>17}{'NannyML published MAE':>23}{'coverage':>10}"
          f"{'mean width':>12}{'wall ms/estimate':>18}{'cpu ms':>8}{'warned':>8}")
    for metric, r in results.items():
        covered = np.mean((r["lower"] <= r["realized"]) & (r["realized"] <= r["upper"]))
        carried = np.abs(r["estimator"].reference_value_ - r["realized"]).mean()
        print(f"{metric:<9}{np.abs(r['value'] - r['realized']).mean():>8.4f}{carried:>17.4f}"
              f"{NANNYML_PUBLISHED_MAE[metric]:>23.4f}{covered:>10.0%}{(r['upper'] - r['lower']).mean():>12.4f}"
              f"{1e3 * np.median(r['wall']):>18.0f}{1e3 * np.median(r['cpu']):>8.0f}"
              f"{int((r['warned'] > 0).sum()):>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "calmops-dagster" / "nannyml")
    args = parser.parse_args()
    reference, analysis = load_census(args.cache)
    print(f"reference {len(reference):,} rows (year {sorted(reference.year.unique())}), analysis "
          f"{len(analysis):,} rows (years {sorted(analysis.year.unique())}); {N_CHUNKS} chunks of {CHUNK:,} rows")
    chunks = [slice(i * CHUNK, (i + 1) * CHUNK) for i in range(N_CHUNKS)]
    y_analysis = analysis["employed"].to_numpy()
    years = np.array([analysis["year"].iloc[c].mode()[0] for c in chunks])
    settings = {
        "lightgbm (trained on half the reference, calibrated on the other half)":
            lightgbm_setting(reference, analysis),
        "shipped model outputs (predicted_probability, calibrated on the whole reference)":
            (reference["employed"].to_numpy(), reference["predicted_probability"].to_numpy(),
             analysis["predicted_probability"].to_numpy()),
    }
    for name, (y_cal, p_cal, p_analysis) in settings.items():
        results = evaluate(y_cal, p_cal, [y_analysis[c] for c in chunks], [p_analysis[c] for c in chunks])
        report(name, results, years)
    print(f"\nNannyML published MAE: quoted constants {NANNYML_PUBLISHED_MAE}, not computed in this run")


if __name__ == "__main__":
    main()
