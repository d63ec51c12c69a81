"""Many writers and a reader on the metric tables: Parquet segments vs one DuckDB file (the baseline).

Baseline ``single-file``: the previous ``MetricsStore`` design, reproduced here: every write is one
transaction (DELETE the block's rows, INSERT the new ones) on a fresh connection to ``metrics.duckdb``,
retried with jittered exponential backoff while another process holds the file. Its reader opens the file
read-only, as an analyst (or ``duckdb.connect(..., read_only=True)``) would, and fails on ``Could not set
lock`` while a writer holds it.

Candidate ``segments``: :class:`calmops_dagster.store.metrics_store.MetricsStore` (one Parquet file per
write, DuckDB views to read). Its reader is ``MetricsStore.query``, what ``calmops sql`` runs.

Both runs: ``--writers`` processes each replace ``--blocks`` blocks of ``--rows`` rows of ``drift_results``
(as many pipelines running at once would), while one reader process queries in a loop. Printed per design:
wall time of the writers, writes per second, reads done and failed, lock waits of the writers, and rows lost
(expected minus counted).

    python benchmarks/metrics_bench.py [--writers 4] [--blocks 25] [--rows 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRITER = r"""
import json, random, sys, time
import duckdb, pandas as pd
design, db, pipeline, blocks, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
waits = 0

def single_file_replace(block, frame):
    global waits
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(db)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            waits += 1
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)
    try:
        con.execute("CREATE TABLE IF NOT EXISTS drift_results (pipeline VARCHAR, block VARCHAR, feature VARCHAR, "
                    "test VARCHAR, p_value DOUBLE)")
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM drift_results WHERE pipeline = ? AND block = ?", [pipeline, block])
        con.register("incoming", frame)
        con.execute("INSERT INTO drift_results BY NAME SELECT * FROM incoming")
        con.execute("COMMIT")
    finally:
        con.close()

if design == "segments":
    from calmops_dagster.store.metrics_store import MetricsStore
    store = MetricsStore(db)
start = time.perf_counter()
for block in range(blocks):
    frame = pd.DataFrame([{"pipeline": pipeline, "block": str(block), "feature": f"f{i}", "test": "ks",
                           "p_value": i / rows} for i in range(rows)])
    if design == "segments":
        store.replace_block_rows("drift_results", pipeline, str(block), frame.drop(columns=["pipeline", "block"]))
    else:
        single_file_replace(str(block), frame)
print(json.dumps({"seconds": time.perf_counter() - start, "waits": waits}))
"""

READER = r"""
import json, sys, time
import duckdb
design, db, stop_file = sys.argv[1], sys.argv[2], sys.argv[3]
import pathlib
reads = failures = 0
errors = set()
if design == "segments":
    from calmops_dagster.store.metrics_store import MetricsStore
    store = MetricsStore(db)
while not pathlib.Path(stop_file).exists():
    try:
        if design == "segments":
            store.query("SELECT count(*) FROM drift_results")
        else:
            with duckdb.connect(db, read_only=True) as con:
                con.execute("SELECT count(*) FROM drift_results").fetchone()
        reads += 1
    except duckdb.Error as exc:
        if "does not exist" in str(exc):  # the baseline's table is not created yet
            continue
        failures += 1
        errors.add(str(exc).split("\n")[0][:80])
    time.sleep(0.01)
print(json.dumps({"reads": reads, "failures": failures, "errors": sorted(errors)[:2]}))
"""


def run(design: str, folder: Path, writers: int, blocks: int, rows: int) -> dict:
    db, stop = folder / "metrics.duckdb", folder / "stop"
    if design == "segments":  # create schema files and catalog before the clock starts, as a first run would
        from calmops_dagster.store.metrics_store import MetricsStore

        MetricsStore(db).query("SELECT 1")
    reader = subprocess.Popen([sys.executable, "-c", READER, design, str(db), str(stop)], stdout=subprocess.PIPE,
                              text=True)
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, design, str(db), f"p{i}", str(blocks), str(rows)],
                              stdout=subprocess.PIPE, text=True) for i in range(writers)]
    results = [json.loads(p.communicate()[0]) for p in procs]
    wall = time.perf_counter() - start
    stop.touch()
    read = json.loads(reader.communicate()[0])
    if design == "segments":
        from calmops_dagster.store.metrics_store import MetricsStore

        counted = int(MetricsStore(db).query("SELECT count(*) AS n FROM drift_results")["n"][0])
    else:
        import duckdb

        with duckdb.connect(str(db), read_only=True) as con:
            counted = con.execute("SELECT count(*) FROM drift_results").fetchone()[0]
    writes = writers * blocks
    return {"design": design, "wall_s": wall, "writes_per_s": writes / wall, "reads": read["reads"],
            "read_failures": read["failures"], "writer_lock_waits": sum(r["waits"] for r in results),
            "rows_lost": writes * rows - counted, "errors": read["errors"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=25)
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()
    print(f"{args.writers} writer processes x {args.blocks} blocks x {args.rows} rows, one reader process")
    print(f"{'design':12} {'wall s':>7} {'writes/s':>9} {'reads':>6} {'failed':>7} {'lock waits':>11} {'rows lost':>10}")
    for design in ("single-file", "segments"):
        with tempfile.TemporaryDirectory() as folder:
            r = run(design, Path(folder), args.writers, args.blocks, args.rows)
        print(f"{r['design']:12} {r['wall_s']:7.1f} {r['writes_per_s']:9.1f} {r['reads']:6} {r['read_failures']:7} "
              f"{r['writer_lock_waits']:11} {r['rows_lost']:10}" + (f"  e.g. {r['errors'][0]}" if r["errors"] else ""))


if __name__ == "__main__":
    main()
