"""One pipeline's metric reads in a store that holds many pipelines: every pipeline's segments (the baseline,
the views before ``pipeline=``) against the pipeline's own (``MetricsStore.query(..., pipeline=name)``).

``--pipelines`` pipelines x ``--blocks`` blocks are written as runs write them (one segment per table and
block: ``blocks``, ``block_context``, ``drift_summary``, and ``drift_results`` with ``--features`` rows), then
the reads a block's run makes of its own pipeline (its context, the drift history for the report, the
one-line summary, the overview) are timed both ways, ``--repeats`` times each. Printed: median milliseconds per
read, both ways, and the ratio; then the same after ``calmops compact`` (one segment per table and pipeline).

    python benchmarks/read_bench.py [--pipelines 50] [--blocks 20] [--features 16] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The reads of one block's run, about its own pipeline (``?`` is the pipeline, then the block).
READS = {
    "block context": ("SELECT * FROM block_context WHERE pipeline = ? AND block = ?", True),
    "drift history": ("SELECT block, drift_share, n_drifted, drift_detected FROM drift_summary WHERE pipeline = ?",
                      False),
    "block summary": (("SELECT b.rows, s.drift_detected, s.drift_share FROM blocks b LEFT JOIN drift_summary s "
                      "USING (pipeline, block) WHERE b.pipeline = ? AND b.block = ?"), True),
    "drifting features": (("SELECT feature, count(DISTINCT block) AS blocks FROM drift_results WHERE pipeline = ? "
                          "AND drifted GROUP BY feature ORDER BY blocks DESC LIMIT 5"), False),
}


def fill(store, pipelines: int, blocks: int, features: int) -> float:
    """Write every pipeline's blocks; returns the seconds it took."""
    started = time.perf_counter()
    for p in range(pipelines):
        name = f"p{p:03d}"
        for block in range(1, blocks + 1):
            b = str(block)
            store.replace_block_rows("blocks", name, b, [{"rows": 1000, "content_hash": f"{p}-{b}"}])
            store.replace_block_rows("block_context", name, b, [{"champion_version": "v0001", "decided": True}])
            store.replace_block_rows("drift_summary", name, b, [{"drift_detected": block % 5 == 0,
                                                                 "drift_share": 0.1, "n_drifted": 1}])
            store.replace_block_rows("drift_results", name, b, [
                {"feature": f"x{f:02d}", "test": "ks", "p_value": 0.5, "drifted": f == block % features}
                for f in range(features)])
    return time.perf_counter() - started


def timed(store, sql: str, params: list, pipeline: str | None, repeats: int) -> tuple[float, int]:
    """Median milliseconds of the read, and its row count (the same both ways, checked by the caller)."""
    seconds, rows = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        rows = len(store.query(sql, params, pipeline=pipeline))
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000, rows


def compare(store, args, label: str) -> None:
    name, block = "p000", str(args.blocks)
    print(f"\n{label}: median ms per read of pipeline {name} (block {block}), {args.repeats} repeats")
    print(f"{'read':20} {'every pipeline':>15} {'own segments':>13} {'ratio':>6}")
    totals = [0.0, 0.0]
    for read, (sql, with_block) in READS.items():
        params = [name, block] if with_block else [name]
        every, rows_every = timed(store, sql, params, None, args.repeats)
        own, rows_own = timed(store, sql, params, name, args.repeats)
        assert rows_every == rows_own, f"{read}: {rows_every} rows against {rows_own}"
        totals = [totals[0] + every, totals[1] + own]
        print(f"{read:20} {every:15.1f} {own:13.1f} {every / own:5.1f}x")
    print(f"{'the four reads':20} {totals[0]:15.1f} {totals[1]:13.1f} {totals[0] / totals[1]:5.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipelines", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    from calmops_dagster.store.metrics_store import MetricsStore

    with tempfile.TemporaryDirectory(prefix="read_bench_") as root:
        store = MetricsStore(Path(root) / "metrics.duckdb")
        took = fill(store, args.pipelines, args.blocks, args.features)
        segments = sum(1 for _ in (Path(root) / "metrics").rglob("*.parquet"))
        print(f"read_bench: {args.pipelines} pipelines x {args.blocks} blocks written in {took:.0f} s: "
              f"{segments:,} segments")
        compare(store, args, "segments as the runs wrote them")
        store.compact()
        compare(store, args, "after calmops compact")


if __name__ == "__main__":
    main()
