"""Many pipelines through one instance: ``calmops run`` of different pipelines at once, and no metric row lost.

``--pipelines`` demo pipelines (``calmops demo --name pN``, every block file already in the watched folder)
share one ``CALMOPS_HOME``, so one Dagster instance and one set of metric tables. They are processed twice,
each time on a fresh home: baseline ``one at a time`` (one ``calmops run`` after the other) and
``N at once`` (``--parallel`` ``calmops run`` processes of different pipelines at the same time, as the run
queue allows). Printed per mode: wall time, blocks per minute, the largest peak memory of one
``calmops run`` process, and metric rows lost: every pipeline must have every block in ``blocks``,
``drift_summary`` and ``promotions``, and no block twice.

    python benchmarks/scale_bench.py [--pipelines 4] [--blocks 3] [--rows 200] [--parallel 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CALMOPS = [sys.executable, "-m", "calmops_dagster.interfaces.cli"]


def make_home(home: Path, pipelines: int, blocks: int, rows: int) -> list[str]:
    names = [f"p{i}" for i in range(pipelines)]
    for i, name in enumerate(names):
        subprocess.run([*CALMOPS, "--home", str(home), "demo", "--name", name, "--blocks", str(blocks),
                        "--initial", str(blocks), "--rows-per-block", str(rows), "--seed", str(i),
                        "--drift-at", str(max(2, blocks))], check=True, capture_output=True)
    return names


def run_all(home: Path, names: list[str], parallel: int) -> tuple[float, float, list[str]]:
    """Run ``calmops run`` for every pipeline, ``parallel`` at a time; (wall s, peak MB, failed names)."""
    pending, running, failed, peak_kb = list(names), {}, [], 0
    start = time.perf_counter()
    while pending or running:
        while pending and len(running) < parallel:
            name = pending.pop(0)
            proc = subprocess.Popen([*CALMOPS, "--home", str(home), "run", name], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            running[proc.pid] = name
        pid, status, usage = os.wait4(-1, 0)
        if pid in running:
            name = running.pop(pid)
            peak_kb = max(peak_kb, usage.ru_maxrss)
            if os.waitstatus_to_exitcode(status) != 0:
                failed.append(name)
    return time.perf_counter() - start, peak_kb / 1024, failed


def lost_rows(home: Path, names: list[str], blocks: int) -> int:
    from calmops_dagster.store.metrics_store import MetricsStore

    store, lost = MetricsStore(home / "metrics.duckdb"), 0
    for table in ("blocks", "drift_summary", "promotions"):
        frame = store.query(f"SELECT pipeline, block, count(*) AS n FROM {table} GROUP BY ALL")
        for name in names:
            mine = frame[frame.pipeline == name]
            lost += blocks - len(mine) + int((mine.n > 1).sum())
    return lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipelines", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    total = args.pipelines * args.blocks
    print(f"{args.pipelines} pipelines x {args.blocks} blocks x {args.rows} rows through one CALMOPS_HOME")
    print(f"{'mode':14} {'wall s':>7} {'blocks/min':>11} {'peak MB/run':>12} {'failed':>7} {'rows lost':>10}")
    for label, parallel in (("one at a time", 1), (f"{args.parallel} at once", args.parallel)):
        with tempfile.TemporaryDirectory() as folder:
            home = Path(folder) / "home"
            names = make_home(home, args.pipelines, args.blocks, args.rows)
            wall, peak, failed = run_all(home, names, parallel)
            lost = lost_rows(home, names, args.blocks)
        print(f"{label:14} {wall:7.1f} {total / wall * 60:11.1f} {peak:12.0f} {len(failed):7} {lost:10}")


if __name__ == "__main__":
    main()
