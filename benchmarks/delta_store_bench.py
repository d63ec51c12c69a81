"""The metric store on Delta Lake against the segment store before it, side by side in one run.

The baseline is the code of a git revision (``--baseline-ref``, the last with the segment store), checked out
into a temporary worktree and put first on ``PYTHONPATH`` (as ``s3_requests_bench.py`` does); both run on
this checkout's installed packages. Three measurements, each taken for the baseline and for this checkout,
alternating, on the local disk:

1. **Per block, in-process**: ``benchmarks/ingest_bench.py --in-process-only`` (LightGBM, ``--rows`` x 16
   blocks, ``execute_in_process`` block after block as ``calmops run`` does): the median per-block compute.
2. **Four writers x 20 blocks** on one table: ``--writers`` processes, each replacing ``--blocks`` blocks of
   20 ``drift_results`` rows of its own pipeline, at once, then one rerun of each block; wall time, commits
   per second, retried commits (Delta), and rows lost (expected rows minus rows the table shows).
3. **Lines of store code** (``store/metrics_store.py``, ``storage.py``, ``write_once_reads.py`` and, now,
   ``delta_tables.py`` and ``segment_migration.py``).

    python benchmarks/delta_store_bench.py [--baseline-ref de746a9] [--rows 10000] [--ingest-blocks 3]
                                           [--writers 4] [--blocks 20]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORE_FILES = ("metrics_store.py", "storage.py", "write_once_reads.py", "delta_tables.py", "segment_migration.py")

WRITER = """
import sys, json
from calmops_dagster.store.metrics_store import MetricsStore
store, pipeline, blocks = MetricsStore(sys.argv[1]), sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
for rerun in (0, 1):
    for block in range(blocks):
        store.replace_block_rows("drift_results", pipeline, str(block),
                                 [{"feature": f"f{i}", "test": "ks", "p_value": rerun + i / 100} for i in range(20)])
try:
    from calmops_dagster.store.delta_tables import RETRIES
except ImportError:
    RETRIES = {}
print(json.dumps(RETRIES), flush=True)
"""


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def writers(code: Path, n: int, blocks: int) -> dict:
    """``n`` writer processes of ``blocks`` blocks (then a rerun of each) on one fresh home, started together."""
    import json

    home = Path(tempfile.mkdtemp(prefix="delta_store_bench_"))
    env = {**os.environ, "PYTHONPATH": str(code)}
    env.pop("CALMOPS_STORAGE_URL", None)
    try:
        db = str(home / "metrics.duckdb")
        subprocess.run([sys.executable, "-c", ("import sys; from calmops_dagster.store.metrics_store import "
                        "MetricsStore; MetricsStore(sys.argv[1]).query('SELECT * FROM drift_results')"), db],
                       env=env, cwd=code, check=True)
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, db, f"p{i}", str(blocks)], env=env, cwd=code,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(n)]
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        started = time.perf_counter()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outs = [proc.communicate(timeout=3600)[0] for proc in procs]
        wall = time.perf_counter() - started
        assert all(proc.returncode == 0 for proc in procs), outs
        retries = [json.loads(out.strip().splitlines()[-1]) for out in outs]
        counted = subprocess.run([sys.executable, "-c", ("import sys; from calmops_dagster.store.metrics_store import "
                                  "MetricsStore; print(MetricsStore(sys.argv[1]).query('SELECT count(*) AS n FROM "
                                  "drift_results WHERE p_value >= 1')['n'][0])"), db],
                                 env=env, cwd=code, check=True, capture_output=True, text=True)
        commits = n * blocks * 2
        table = home / "metrics" / "drift_results"
        if (table / "_delta_log").is_dir():  # conflicts delta-rs resolved itself, beside those retried by us
            from deltalake import DeltaTable

            retries.extend({"retries": entry.get("operationMetrics", {}).get("num_retries", 0)}
                           for entry in DeltaTable(str(table)).history())
        return {"wall": wall, "commits/s": commits / wall, "retries": sum(r.get("retries", 0) for r in retries),
                "rows lost": n * blocks * 20 - int(counted.stdout.strip().splitlines()[-1])}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def per_block(code: Path, rows: int, blocks: int) -> tuple[float, str]:
    """The median per-block compute of ``ingest_bench.py --in-process-only`` with ``code``."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    env.pop("CALMOPS_STORAGE_URL", None)
    out = subprocess.run([sys.executable, str(code / "benchmarks" / "ingest_bench.py"), "--in-process-only",
                          "--blocks", str(blocks), "--rows", str(rows), "--storage-baseline-blocks", "0"],
                         env=env, cwd=code, check=True, capture_output=True, text=True).stdout
    walls = [float(m) for m in re.findall(r"in-process, pooled storage, block +\d+: run +([\d.]+) s", out)][1:]
    return statistics.median(walls), ", ".join(f"{w:.2f}" for w in walls)


def store_lines(code: Path) -> int:
    return sum(len((code / "calmops_dagster" / "store" / f).read_text().splitlines())
               for f in STORE_FILES if (code / "calmops_dagster" / "store" / f).exists())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="de746a9", help="git revision of the segment store's code")
    parser.add_argument("--rows", type=int, default=10_000, help="rows per block of the in-process runs")
    parser.add_argument("--ingest-blocks", type=int, default=3, help="measured in-process blocks per round")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each measurement")
    args = parser.parse_args()
    worktree = Path(tempfile.mkdtemp(prefix="delta_store_baseline_")) / "code"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.baseline_ref],
                   check=True, capture_output=True)
    codes = {f"segments ({args.baseline_ref})": worktree, "Delta Lake (this checkout)": ROOT}
    results = {name: {"per block": [], "writers": []} for name in codes}
    lines = {name: store_lines(code) for name, code in codes.items()}
    try:
        for round_ in range(args.rounds):
            for name, code in (codes.items() if round_ % 2 == 0 else reversed(codes.items())):
                results[name]["writers"].append(writers(code, args.writers, args.blocks))
                print(f"round {round_ + 1}, {name}: writers {results[name]['writers'][-1]}; {load()}", flush=True)
                median, walls = per_block(code, args.rows, args.ingest_blocks)
                results[name]["per block"].append(median)
                print(f"round {round_ + 1}, {name}: per block {walls} s; {load()}", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
    print(f"\ndelta_store_bench {time.strftime('%Y-%m-%d %H:%M')}, {load()}")
    print(f"{'':32} {'per block (s)':>14} {'writers wall (s)':>17} {'commits/s':>10} {'retries':>8} "
          f"{'rows lost':>10} {'store lines':>12}")
    for name in codes:
        w = results[name]["writers"]
        print(f"{name:32} {statistics.median(results[name]['per block']):14.2f} "
              f"{statistics.median(x['wall'] for x in w):17.1f} {statistics.median(x['commits/s'] for x in w):10.1f} "
              f"{sum(x['retries'] for x in w):8} {sum(x['rows lost'] for x in w):10} {lines[name]:12}")


if __name__ == "__main__":
    main()
