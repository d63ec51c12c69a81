"""Error-stream detectors: false alarms on stable blocks and time per 10,000 rows, against frouros.

A stable block is a stream of i.i.d. 0/1 errors (no drift: the model's error rate does not change within
the block). For every detector of ``calmops_dagster.drift.model_drift`` the share of stable blocks on which
it signals drift is measured at several error rates and block lengths, and its time on a 10,000-row block.
Baseline, in the same run: frouros' detectors fed row by row with the settings the pipeline used before
(DDM waiting 300 rows, frouros' defaults for ADWIN, Page-Hinkley, HDDM-A/W, KSWIN 600/200), on fewer
blocks because they are slow. Also the share of blocks on which each default detector finds a rise of the
error rate half-way (0.1 to 0.2), and where.

    python benchmarks/detector_bench.py [--blocks 200] [--frouros-blocks 10]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calmops_dagster.drift.model_drift import DEFAULT_DETECTORS, stream_drift

RATES = (0.02, 0.1, 0.3, 0.5)


def alarm_share(run, blocks: int, rows: int, rate: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    return sum(run((rng.random(rows) < rate).astype(float)) for _ in range(blocks)) / blocks


def ours(name: str):
    return lambda errors: stream_drift(errors, (name,)).results[0].detected


def frouros_before(name: str):
    """The detector as the pipeline ran it before: frouros, row by row, the old settings."""
    from frouros.detectors import concept_drift as cd

    configs = {
        "ddm": lambda: cd.DDM(cd.DDMConfig(min_num_instances=300)),
        "adwin": lambda: cd.ADWIN(cd.ADWINConfig()),
        "page_hinkley": lambda: cd.PageHinkley(cd.PageHinkleyConfig()),
        "hddm_a": lambda: cd.HDDMA(cd.HDDMAConfig()),
        "hddm_w": lambda: cd.HDDMW(cd.HDDMWConfig()),
        "kswin": lambda: cd.KSWIN(cd.KSWINConfig(min_num_instances=600, num_test_instances=200, seed=0)),
    }

    def run(errors) -> bool:
        detector = configs[name]()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for value in errors:
                detector.update(value=float(value))
                if detector.status.get("drift"):
                    return True
        return False

    return run, list(configs)


def seconds_per_10k(run) -> float:
    errors = (np.random.default_rng(99).random(10_000) < 0.2).astype(float)
    started = time.perf_counter()
    run(errors)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=200, help="stable blocks per cell (ours)")
    parser.add_argument("--frouros-blocks", type=int, default=10, help="stable blocks per cell (frouros)")
    args = parser.parse_args()
    lengths = (1_000, 10_000, 50_000)
    header = " ".join(f"{f'{n // 1000}k@{r}':>8}" for n in lengths for r in RATES)
    print(f"share of stable blocks with an alarm (rows@error rate); time per 10,000 rows\n"
          f"{'detector':28} {header} {'s/10k':>7}")
    for name in DEFAULT_DETECTORS:
        run = ours(name)
        cells = [alarm_share(run, args.blocks, n, r, seed=n + int(r * 100)) for n in lengths for r in RATES]
        label = f"{name} (default, {args.blocks})"
        print(f"{label:28} " + " ".join(f"{c:8.2f}" for c in cells) + f" {seconds_per_10k(run):7.3f}", flush=True)
    total = sum(seconds_per_10k(lambda e: stream_drift(e)) for _ in range(5)) / 5
    print(f"{'default set together':28} {'':{len(header)}} {total:7.3f}")
    _, before = frouros_before("ddm")
    lengths = (1_000, 5_000)  # row by row is slow: shorter blocks, fewer of them
    header = " ".join(f"{f'{n // 1000}k@{r}':>8}" for n in lengths for r in RATES)
    print("frouros, row by row, the settings used before (adwin, hddm_w, kswin: the settings on request now)\n"
          f"{'detector':28} {header} {'s/10k':>7}")
    for name in [*before, "eddm"]:
        run = frouros_before(name)[0] if name in before else ours(name)
        cells = [alarm_share(run, args.frouros_blocks, n, r, seed=n + int(r * 100)) for n in lengths for r in RATES]
        label = f"frouros {name} ({args.frouros_blocks})"
        print(f"{label:28} " + " ".join(f"{c:8.2f}" for c in cells) + f" {seconds_per_10k(run):7.3f}", flush=True)
    rng = np.random.default_rng(5)
    found = {name: [] for name in DEFAULT_DETECTORS}
    for _ in range(args.blocks):
        errors = np.r_[rng.random(5000) < 0.1, rng.random(5000) < 0.2].astype(float)
        for result in stream_drift(errors).results:
            if result.detected and result.drift_index >= 5000:
                found[result.detector].append(result.drift_index - 5000)
    print("error rate 0.1 -> 0.2 at row 5,000 of 10,000: share found after the change, median delay (rows)")
    for name, delays in found.items():
        print(f"  {name:14} {len(delays) / args.blocks:5.2f} {np.median(delays) if delays else float('nan'):8.0f}")


if __name__ == "__main__":
    main()
