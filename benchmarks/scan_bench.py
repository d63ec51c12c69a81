"""Per-block ingest cost with many files in ``data_dir``: the ingest record vs the scan it replaced.

A block pipeline's ``data_dir`` holds ``--files`` CSV files (default 10,000; ``--rows`` rows each, one block
per file), all already seen. Then one new file (a new block) arrives, and we time what each entry point pays
for it:

- **sensor tick**: the scan with the sensor's cursor;
- **calmops run scan**: the scan without a cursor (``calmops run`` and the schedule have none);
- **load block**: what ``data_block`` reads to get the new block's rows;

plus the size of the sensor's cursor. "record" is this code: the file index in DuckDB (``data_files``),
per-block pieces of the accepted versions, ``block_files``. The baseline is the code before the ingest
record (``--baseline-ref``, default ``d6b4a02``, extracted with ``git archive`` and run in a subprocess on the
same files in the same run): a cursor holding every file, a cursor-less scan that re-reads every file, and
a ``load_block`` that reads every file in the folder.

    python benchmarks/scan_bench.py [--files 10000] [--rows 20] [--baseline-ref d6b4a02 | none]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BASELINE = r'''
import json, sys, time
from pathlib import Path
from calmops_dagster.spec import load_spec
from calmops_dagster.ingest.file_scan import scan_data_dir
from calmops_dagster.ingest.block_data import load_block
spec = load_spec(Path(sys.argv[1]))
new_file, block = Path(sys.argv[2]), sys.argv[3]
hidden = new_file.with_name("." + new_file.name)  # dot files are never candidates
new_file.rename(hidden)
t = time.perf_counter(); first = scan_data_dir(spec); initial = time.perf_counter() - t
hidden.rename(new_file)
t = time.perf_counter(); tick = scan_data_dir(spec, first.cursor); tick_s = time.perf_counter() - t
assert [i.path.name for i in tick.ready] == [new_file.name]
t = time.perf_counter(); again = scan_data_dir(spec); run_s = time.perf_counter() - t
t = time.perf_counter(); rows = load_block(spec, block); load_s = time.perf_counter() - t
print(json.dumps({"initial": initial, "tick": tick_s, "run_scan": run_s, "load": load_s,
                  "rows": len(rows.frame), "cursor_bytes": len(json.dumps(tick.cursor))}))
'''


def write_files(data_dir: Path, n: int, rows: int) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    data_dir.mkdir(parents=True)
    old = time.time() - 3600 - n  # every file an hour old or more (none in the future)
    for i in range(n + 1):
        frame = pd.DataFrame({"x1": rng.normal(size=rows).round(5), "x2": rng.normal(size=rows).round(5),
                              "y": rng.integers(0, 2, size=rows), "block": i + 1})
        path = data_dir / f"block_{i + 1:06d}.csv"
        frame.to_csv(path, index=False)
        os.utime(path, (old + i, old + i))


def measure_record(spec, home, new_file: Path, block: str) -> dict:
    from calmops_dagster.ingest.file_scan import empty_cursor
    from calmops_dagster.ingest.ingest_record import ingest_data_dir, load_recorded_block
    from calmops_dagster.store.metrics_store import MetricsStore

    metrics, folder = MetricsStore(home.metrics_db), home.pipeline_dir(spec.name)
    hidden = new_file.with_name("." + new_file.name)
    new_file.rename(hidden)
    started = time.perf_counter()
    cursor = {"seen": {}, "seq": ingest_data_dir(spec, metrics, folder, empty_cursor()).seq}
    initial = time.perf_counter() - started
    hidden.rename(new_file)
    started = time.perf_counter()  # one sensor tick: ingest, what changed, the blocks' versions
    tick = ingest_data_dir(spec, metrics, folder, cursor)
    tick_s = time.perf_counter() - started
    assert [i.path.name for i in tick.scan.ready] == [new_file.name] and tick.changed == [block], tick.changed
    started = time.perf_counter()
    ingest_data_dir(spec, metrics, folder)  # calmops run: no cursor, the same index
    run_s = time.perf_counter() - started
    started = time.perf_counter()
    rows, _version = load_recorded_block(spec, metrics, folder, block)
    load_s = time.perf_counter() - started
    cursor_bytes = len(json.dumps({"seen": tick.scan.cursor["seen"], "seq": tick.seq}))
    return {"initial": initial, "tick": tick_s, "run_scan": run_s, "load": load_s, "rows": len(rows.frame),
            "cursor_bytes": cursor_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--baseline-ref", default="d6b4a02")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="scan_bench_"))
    os.environ["CALMOPS_HOME"] = str(root / "home")

    import yaml

    from calmops_dagster.spec import parse_spec
    from calmops_dagster.store.paths import CalmOpsHome

    home = CalmOpsHome(root / "home")
    data_dir = root / "data"
    write_files(data_dir, args.files, args.rows)
    raw = {"name": "bench", "type": "block", "data_dir": str(data_dir), "target": "y", "block_col": "block",
           "model_spec": {"module": "sklearn.linear_model", "class": "LogisticRegression"},
           "sensor": {"settle_seconds": 0}}
    home.spec_path("bench").parent.mkdir(parents=True)
    home.spec_path("bench").write_text(yaml.safe_dump(raw))  # only these keys: the baseline reads it too
    spec = parse_spec(raw, home.spec_path("bench"))
    new_file, block = data_dir / f"block_{args.files + 1:06d}.csv", str(args.files + 1)

    baseline = None
    if args.baseline_ref != "none":
        baseline_src = root / "baseline"
        baseline_src.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline_ref, "calmops_dagster"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(baseline_src)], input=archive, check=True)
        out = subprocess.run([sys.executable, "-c", BASELINE, str(home.spec_path("bench")), str(new_file), block],
                             env={**os.environ, "PYTHONPATH": str(baseline_src)}, cwd=baseline_src,
                             capture_output=True, text=True, check=False)
        if out.returncode:
            raise SystemExit(f"baseline failed:\n{out.stderr}")
        baseline = json.loads(out.stdout.strip().splitlines()[-1])
    record = measure_record(spec, home, new_file, block)
    assert record["rows"] == args.rows and (baseline is None or baseline["rows"] == args.rows)

    print(f"{args.files:,} files of {args.rows} rows in data_dir, then 1 new file (block {block})")
    print(f"{'':28} {'record':>10} {'baseline':>10} {'speed-up':>9}")
    for key, label in (("tick", "sensor tick (s)"), ("run_scan", "calmops run scan (s)"),
                       ("load", "load the new block (s)"), ("initial", "first scan of all files (s)")):
        if baseline is None:
            print(f"{label:28} {record[key]:10.3f}")
        else:
            print(f"{label:28} {record[key]:10.3f} {baseline[key]:10.3f} {baseline[key] / record[key]:8.1f}x")
    print(f"{'sensor cursor (bytes)':28} {record['cursor_bytes']:10,} "
          f"{baseline['cursor_bytes'] if baseline else '':>10}")
    if baseline is not None:
        print(f"baseline: git {args.baseline_ref} (cursor with every file, cursor-less rescans, load_block reads "
              "every file)")


if __name__ == "__main__":
    main()
