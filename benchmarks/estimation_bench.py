"""Label-free performance estimation (``calmops_dagster.estimation``): binary, multiclass and regression.

Binary (``--cases census``), on real US census data, as NannyML does. The ACS employment data of Massachusetts that NannyML 0.13.1 ships in its wheel: the reference period
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

Multiclass and regression (``--cases multiclass regression``; no download), each against the reference's
realized metric carried forward, with the MAE of the estimate, the coverage of its 95% interval and the
median time per block's estimate:

- ``digits`` (real, multiclass): scikit-learn's bundled handwritten digits (1,797 rows, 10 classes). In each
  of ``REPEATS`` random splits a logistic regression is trained on 60% of the rows and the estimator
  calibrated on its cross-fitted probabilities there (as the pipeline does); the other 40%, sorted by
  the first principal component of the training rows plus as much noise (a covariate shift from block to
  block, P(y | x) unchanged, most blocks holding every class), make 4 blocks of about 180 rows. Metrics:
  accuracy, macro F1, one-vs-rest ROC AUC.
- ``softmax`` (synthetic, multiclass, known truth): four classes drawn from softmax(W x); the model is
  over-confident and biased. Reference 20,000 rows; 20 blocks of 2,000 rows whose features move further
  and narrow block by block.
- ``diabetes`` (real, regression): scikit-learn's bundled diabetes data (442 rows). In each of ``REPEATS``
  random splits a ridge regression is trained on 60% of the rows and the error model fitted on its
  cross-fitted predictions there; the other 40%, sorted by BMI, make 3 blocks of about 59 rows.
- ``friedman`` (synthetic, regression, known truth): Friedman's first function with noise that depends on a
  text column (``shop``) and on ``x0``; a linear model (misspecified: its error depends on where x lies)
  trained on 5,000 other rows. Reference 10,000 rows; 20 blocks of 2,000 rows whose ``x0``/``x1`` move
  towards 1 and whose shop mix moves towards the noisy shop.

In the pipeline (``--cases pipeline``; the census download): the census blocks through a block pipeline run
in-process (``execute_in_process``, as ``calmops run`` does; LightGBM, 100 trees, the spec's defaults): block 1
is the first 10,000 reference rows (2015), blocks 2-21 the same 20 analysis chunks, so the pipeline's champions
(each trained on 70% of one block) are estimated on every chunk before its labels are read. It prints per block
the decision, the run's seconds and its steps', the estimated and realized accuracy with the interval and the
calibration rows; then the accuracy MAE and coverage beside the standalone ``lightgbm`` setting's on the same
chunks, and the median run time of blocks that kept their champion, rejected a challenger or promoted one.
``--pipeline-blocks N`` runs the first N blocks only.

Run: ``python benchmarks/estimation_bench.py [--cache DIR] [--cases census multiclass regression pipeline]``.
Exits 1 when the census or pipeline case is asked for and the wheel cannot be fetched.
"""

import argparse
import io
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import softmax
from sklearn.compose import make_column_transformer
from sklearn.datasets import load_diabetes, load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from calmops_dagster.estimation import (
    PerformanceEstimator,
    RegressionPerformanceEstimator,
    cross_fitted_predictions,
    cross_fitted_probabilities,
)

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
    # imported here, after calmops_dagster: the package sets OpenMP's passive wait policy, which libgomp reads
    # once, when lightgbm loads it (spinning threads cost a fit 2-3x its CPU on a busy machine)
    import lightgbm as lgb

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


#: Random splits of the small real data sets (digits, diabetes).
REPEATS = 15
MULTICLASS_METRICS = ("accuracy", "f1", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse", "mse", "mape")


def timed_blocks(estimator, blocks) -> list[dict]:
    """One row per block: the estimate, its interval, the realized value and the time of ``estimate``.

    ``blocks``: ``(estimate_args, realized_args)`` pairs."""
    rows = []
    for estimate_args, realized_args in blocks:
        wall, cpu = time.perf_counter(), time.process_time()
        e = estimator.estimate(*estimate_args)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows.append({"metric": estimator.metric, "value": e.value, "lower": e.lower, "upper": e.upper,
                     "realized": estimator.realized(*realized_args), "reference": estimator.reference_value_,
                     "wall": wall, "cpu": cpu, "warned": bool(e.warnings), "n": e.n})
    return rows


def summarize(name: str, rows: list[dict], fit_seconds: float) -> None:
    """Per metric: blocks, MAE of the estimate and of the reference carried forward, coverage, width, time.

    A block whose realized metric is undefined (ROC AUC of a block lacking a class) is counted apart and
    left out of the errors and the coverage."""
    frame = pd.DataFrame(rows)
    print(f"\n== {name}: median fit {fit_seconds:.2f} s; blocks of {int(frame['n'].median()):,} rows (median)")
    print(f"{'metric':<9}{'blocks':>7}{'undefined':>10}{'MAE':>9}{'ref carried MAE':>17}{'coverage':>10}"
          f"{'mean width':>12}{'wall ms/block':>15}{'cpu ms':>8}{'warned':>8}")
    for metric, r in frame.groupby("metric", sort=False):
        undefined = int(r["realized"].isna().sum())
        r = r[r["realized"].notna()]
        covered = ((r["lower"] <= r["realized"]) & (r["realized"] <= r["upper"])).mean()
        print(f"{metric:<9}{len(r):>7}{undefined:>10}{(r['value'] - r['realized']).abs().mean():>9.4f}"
              f"{(r['reference'] - r['realized']).abs().mean():>17.4f}{covered:>10.0%}"
              f"{(r['upper'] - r['lower']).mean():>12.4f}{1e3 * r['wall'].median():>15.0f}"
              f"{1e3 * r['cpu'].median():>8.0f}{int(r['warned'].sum()):>8}")


def fitted(make, *fit_args) -> tuple[object, float]:
    """``make().fit(*fit_args)`` and its wall time."""
    start = time.perf_counter()
    estimator = make().fit(*fit_args)
    return estimator, time.perf_counter() - start


def digits_case() -> tuple[list[dict], float]:
    X, y = load_digits(return_X_y=True)
    rows, fits = [], []
    for seed in range(REPEATS):
        train = np.random.default_rng(seed).permutation(len(y)) < int(0.6 * len(y))
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
        proba_ref = cross_fitted_probabilities(model, X[train], y[train], random_state=seed)
        model.fit(X[train], y[train])
        component = PCA(1, random_state=seed).fit(X[train]).transform(X[~train])[:, 0]
        order = np.argsort(component + np.random.default_rng(seed).normal(0, component.std(), len(component)))
        blocks = [(X[~train][b], y[~train][b]) for b in np.array_split(order, 4)]
        for metric in MULTICLASS_METRICS:
            est, seconds = fitted(lambda m=metric: PerformanceEstimator(metric=m, random_state=0), y[train], proba_ref)
            fits.append(seconds)
            rows += timed_blocks(est, [((model.predict_proba(xb),), (yb, model.predict_proba(xb))) for xb, yb in blocks])
    return rows, float(np.median(fits))


SOFTMAX_WEIGHTS = np.array([[2.0, 0.0], [-1.0, 1.5], [-1.0, -1.5], [0.5, 0.5]])


def softmax_world(rng, n, shift=(0.0, 0.0), scale=1.0):
    """Labels from softmax(W x); the model's probabilities over-confident and biased."""
    logits = (rng.normal(size=(n, 2)) * scale + shift) @ SOFTMAX_WEIGHTS.T
    truth = softmax(logits, axis=1)
    y = (rng.uniform(size=(n, 1)) > truth.cumsum(axis=1)).sum(axis=1)
    return y, softmax(1.6 * logits + [0.3, 0.0, 0.0, -0.3], axis=1)


def softmax_case() -> tuple[list[dict], float]:
    rng = np.random.default_rng(0)
    y_ref, proba_ref = softmax_world(rng, 20_000)
    blocks = [softmax_world(rng, 2_000, (t, 0.6 * t), 1 - 0.4 * t) for t in np.linspace(0, 1, 20)]
    rows, fits = [], []
    for metric in MULTICLASS_METRICS:
        est, seconds = fitted(lambda m=metric: PerformanceEstimator(metric=m, random_state=0), y_ref, proba_ref)
        fits.append(seconds)
        rows += timed_blocks(est, [((p,), (y, p)) for y, p in blocks])
    return rows, float(np.median(fits))


def diabetes_case() -> tuple[list[dict], float]:
    data = load_diabetes(as_frame=True, scaled=False)
    X, y = data.data, data.target.to_numpy()
    rows, fits = [], []
    for seed in range(REPEATS):
        train = np.random.default_rng(seed).permutation(len(y)) < int(0.6 * len(y))
        model = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
        pred_ref = cross_fitted_predictions(model, X[train], y[train], random_state=seed)
        model.fit(X[train], y[train])
        analysis = X[~train].sort_values("bmi")
        blocks = np.array_split(analysis.index.to_numpy(), 3)
        for metric in REGRESSION_METRICS:
            est, seconds = fitted(lambda m=metric: RegressionPerformanceEstimator(metric=m, random_state=0),
                                  X[train], y[train], pred_ref)
            fits.append(seconds)
            rows += timed_blocks(est, [((X.loc[b], model.predict(X.loc[b])), (y[b], model.predict(X.loc[b])))
                                       for b in blocks])
    return rows, float(np.median(fits))


SHOP_NOISE = {"a": 0.5, "b": 1.0, "c": 2.0}


def friedman_world(rng, n, t=0.0):
    """Friedman's first function; ``t`` in [0, 1] moves x0 and x1 towards 1 and the shop mix towards "c"."""
    X = pd.DataFrame(rng.uniform(size=(n, 5)), columns=[f"x{i}" for i in range(5)])
    X[["x0", "x1"]] = rng.beta(1 + 2 * t, 1, size=(n, 2))
    X["shop"] = rng.choice(["a", "b", "c"], n, p=[(1 - t) / 3, 1 / 3, (1 + t) / 3])
    mean = (10 * np.sin(np.pi * X["x0"] * X["x1"]) + 20 * (X["x2"] - 0.5) ** 2 + 10 * X["x3"] + 5 * X["x4"])
    noise = X["shop"].map(SHOP_NOISE) * (1 + X["x0"])
    return X, (mean + rng.normal(size=n) * noise).to_numpy()


def friedman_case() -> tuple[list[dict], float]:
    rng = np.random.default_rng(0)
    model = make_pipeline(make_column_transformer((OneHotEncoder(), ["shop"]), remainder="passthrough"),
                          LinearRegression())
    model.fit(*friedman_world(rng, 5_000))
    X_ref, y_ref = friedman_world(rng, 10_000)
    blocks = [friedman_world(rng, 2_000, t) for t in np.linspace(0, 1, 20)]
    rows, fits = [], []
    for metric in REGRESSION_METRICS:
        est, seconds = fitted(lambda m=metric: RegressionPerformanceEstimator(metric=m, random_state=0),
                              X_ref, y_ref, model.predict(X_ref))
        fits.append(seconds)
        rows += timed_blocks(est, [((X, model.predict(X)), (y, model.predict(X))) for X, y in blocks])
    return rows, float(np.median(fits))


def census(cache: Path) -> None:
    reference, analysis = load_census(cache)
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


def load() -> str:
    return f"load {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores"


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Seconds of each step (asset) of the run (``benchmarks/ingest_bench.py``'s reading of the event log)."""
    from ingest_bench import step_seconds as step_spans  # benchmarks/ is the script's folder, on sys.path

    return dict(step_spans(instance, run_id))


def census_blocks(reference: pd.DataFrame, analysis: pd.DataFrame, n_blocks: int) -> list[pd.DataFrame]:
    """Block 1: the first ``CHUNK`` reference rows; then the analysis chunks, each with its block number."""
    features = [c for c in reference.columns if c not in NOT_FEATURES]
    parts = [reference.iloc[:CHUNK]] + [analysis.iloc[i * CHUNK:(i + 1) * CHUNK] for i in range(N_CHUNKS)]
    return [part[[*features, "employed"]].astype({c: "int64" for c in features if c != "AGEP"}).assign(block=b)
            for b, part in enumerate(parts[:n_blocks], start=1)]


def pipeline_case(cache: Path, n_blocks: int) -> None:
    """The census blocks through the pipeline in-process; estimates, decisions and run times per block."""
    import logging
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="estimation_bench_"))
    os.environ["CALMOPS_HOME"] = str(root / "home")
    from dagster import DagsterInstance, Definitions

    from calmops_dagster.orchestration.headless_runs import QUIET_RUN_CONFIG
    from calmops_dagster.orchestration.ingest_registration import register_new_blocks
    from calmops_dagster.orchestration.instance import prepare_instance
    from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
    from calmops_dagster.resources import build_resources
    from calmops_dagster.spec import parse_spec, save_spec
    from calmops_dagster.store.metrics_store import MetricsStore
    from calmops_dagster.store.model_store import ModelStore
    from calmops_dagster.store.paths import CalmOpsHome

    reference, analysis = load_census(cache)
    blocks = census_blocks(reference, analysis, n_blocks)
    home = CalmOpsHome.from_env()
    prepare_instance(home)
    data_dir = root / "data"
    data_dir.mkdir()
    spec = parse_spec({"name": "census", "type": "block", "data_dir": str(data_dir), "target": "employed",
                       "block_col": "block", "model_spec": {"module": "lightgbm", "class": "LGBMClassifier",
                       "params": {"n_estimators": 100, "verbose": -1, "random_state": 0}},
                       "sensor": {"settle_seconds": 0}},  # a block file is written whole before it is registered
                      home.spec_path("census"))
    save_spec(spec, home.spec_path("census"))
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    job = defs.resolve_job_def(job_name(spec))
    metrics, models = MetricsStore(home.metrics_db), ModelStore(home.models_dir("census"))
    walls, cpus, steps = {}, {}, {}
    with DagsterInstance.get() as instance:
        for frame in blocks:
            block = str(int(frame["block"].iloc[0]))
            frame.to_csv(data_dir / f"block_{int(block):03d}.csv", index=False)
            register_new_blocks(instance, spec, metrics, models, logging.getLogger("estimation_bench"))
            started, cpu = time.perf_counter(), time.process_time()
            result = job.execute_in_process(instance=instance, partition_key=block, run_config=QUIET_RUN_CONFIG)
            assert result.success, f"in-process run of block {block} failed"
            walls[block], cpus[block] = time.perf_counter() - started, time.process_time() - cpu
            steps[block] = step_seconds(instance, result.run_id)
            print(f"  block {block:>2}: run {walls[block]:.2f} s, CPU {cpus[block]:.2f} s; {load()}", flush=True)
    perf = metrics.query("SELECT * FROM performance WHERE evaluated_on = 'block' AND metric = 'accuracy'")
    estimated = perf[perf["role"] == "estimated"].set_index("block")
    realized = perf[perf["role"] == "champion"].set_index("block")["value"]
    decisions = metrics.query("SELECT block, decision FROM promotions").set_index("block")["decision"]
    rows = []
    print(f"\n== pipeline (in-process, LightGBM 100 trees, blocks of {CHUNK:,}): {root}")
    print(f"{'block':>5} {'decision':<10}{'run s':>7}{'drift s':>8}{'chall. s':>9}{'champ. s':>9}"
          f"{'acc real':>10}{'est':>8}{'95% interval':>18}{'cal. rows':>10}")
    for frame in blocks:
        block = str(int(frame["block"].iloc[0]))
        s, decision = steps[block], decisions.get(block, "")
        line = (f"{block:>5} {decision:<10}{walls[block]:>7.2f}{s.get('drift_report', 0):>8.2f}"
                f"{s.get('challenger_model', 0):>9.2f}{s.get('champion_model', 0):>9.2f}")
        if block in estimated.index:
            e = estimated.loc[block]
            cal = e.get("calibration_rows", float("nan"))
            rows.append((block, e["value"], e["ci_low"], e["ci_high"], realized[block]))
            line += (f"{realized[block]:>10.4f}{e['value']:>8.4f} [{e['ci_low']:.4f}, {e['ci_high']:.4f}]"
                     f"{cal:>10.0f}")
        print(line)
    _, value, low, high, real = map(np.array, zip(*rows))
    y_cal, p_cal, p_analysis = lightgbm_setting(reference, analysis)
    chunks = [slice(i * CHUNK, (i + 1) * CHUNK) for i in range(len(rows))]
    standalone = evaluate(y_cal, p_cal, [analysis["employed"].to_numpy()[c] for c in chunks],
                          [p_analysis[c] for c in chunks])["accuracy"]
    print(f"{'accuracy':<28}{'MAE':>8}{'coverage':>10}{'mean width':>12}")
    for name, (v, lo, hi, r) in {
            f"in the pipeline ({len(rows)} blocks)": (value, low, high, real),
            "standalone lightgbm setting": (standalone["value"], standalone["lower"], standalone["upper"],
                                            standalone["realized"])}.items():
        print(f"{name:<28}{np.abs(v - r).mean():>8.4f}{np.mean((lo <= r) & (r <= hi)):>10.0%}{(hi - lo).mean():>12.4f}")
    for name, seconds in (("wall", walls), ("CPU", cpus)):  # CPU: this process's, every thread's
        kinds = {"kept": [], "rejected": [], "promoted": []}
        for block, decision in decisions.items():
            if block != "1" and decision in kinds:
                kinds[decision].append(seconds[block])
        ratio = (f"; promoted / kept {np.median(kinds['promoted']) / np.median(kinds['kept']):.2f}x"
                 if kinds["kept"] and kinds["promoted"] else "")
        print(f"run {name} seconds, median (n): " + ", ".join(
            f"{k} {np.median(v):.2f} ({len(v)})" for k, v in kinds.items() if v) + ratio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "calmops-dagster" / "nannyml")
    parser.add_argument("--cases", nargs="+", choices=("census", "multiclass", "regression", "pipeline"),
                        default=["census", "multiclass", "regression"])
    parser.add_argument("--pipeline-blocks", type=int, default=N_CHUNKS + 1)
    args = parser.parse_args()
    print(load())
    if "multiclass" in args.cases:
        summarize(f"digits (real, sklearn's bundled copy; {REPEATS} splits, blocks by PCA component)", *digits_case())
        summarize("softmax (synthetic, known truth; 20 shifted blocks)", *softmax_case())
    if "regression" in args.cases:
        summarize(f"diabetes (real, sklearn's bundled copy; {REPEATS} splits, blocks by BMI)", *diabetes_case())
        summarize("friedman (synthetic, known truth; 20 shifted blocks)", *friedman_case())
    if "census" in args.cases:
        census(args.cache)
    if "pipeline" in args.cases:
        pipeline_case(args.cache, args.pipeline_blocks)
    print(load())


if __name__ == "__main__":
    main()
