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

With ``--sensor-tick``, the CPU of one idle tick of the file sensor (``calmops_files``) serving
``--pipelines`` block pipelines, each with ``--history`` blocks recorded (one data file per block, and its
``block_files`` rows, written as one commit per pipeline: a compacted record, or one per block with
``--commit-per-block``, as scans write it) and nothing new: this code against ``--tick-baseline-ref``
(default ``71102e7``), each in its own process on the same home, alternated ``--repeat`` times; printed with
the load average.

    python benchmarks/scan_bench.py --sensor-tick [--pipelines 200] [--history 10,500] [--repeat 3]
                                    [--commit-per-block]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
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


TICK = r'''
import json, os, sys, time
from pathlib import Path
from dagster import DagsterInstance, build_sensor_context
from calmops_dagster.orchestration.pipeline_defs import build_job
from calmops_dagster.resources import build_resources
from calmops_dagster.sensors import file_sensor
from calmops_dagster.spec import load_spec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.paths import CalmOpsHome
home, names = CalmOpsHome(Path(sys.argv[1])), json.loads(sys.argv[2])
cursor, ticks = Path(sys.argv[3]).read_text(), int(sys.argv[4])
specs = [load_spec(home.spec_path(name)) for name in names]
sensor = file_sensor.build_files_sensor(specs, [build_job(spec) for spec in specs])
resources = {k: v for k, v in build_resources(home).items() if k in ("home", "metrics")}
reads, connect = [], MetricsStore.connect
MetricsStore.connect = lambda self, *a, **k: reads.append(1) or connect(self, *a, **k)
with DagsterInstance.ephemeral() as instance:
    cpu = []
    for tick in range(ticks + 1):  # the first one warms the process up (imports, the store's set-up)
        reads.clear()
        started = time.process_time()
        result = sensor(build_sensor_context(instance=instance, cursor=cursor, resources=resources))
        cpu.append(time.process_time() - started)
        assert not result.run_requests, "an idle tick requested runs"
print(json.dumps({"cpu": cpu[1:], "reads": len(reads), "module": file_sensor.__file__}))
'''


def source_tree(ref: str, target: Path) -> Path:
    """The package at git ``ref`` as it installs: ``calmops_dagster`` with ``sensors/``, ``assets/``,
    ``resources/`` and ``generators/`` inside it (``package-dir`` in pyproject.toml)."""
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "calmops_dagster", "sensors", "assets",
                              "resources", "generators"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    for folder in ("sensors", "assets", "resources", "generators"):
        (target / folder).rename(target / "calmops_dagster" / folder)
    return target


def write_history(home, pipelines: int, history: int, per_block: bool) -> tuple[list[str], str]:
    """``pipelines`` block pipelines with ``history`` blocks each recorded (one commit per pipeline, or per
    block as the sensor records them when ``per_block``) and nothing new; their names and the file sensor's
    cursor after the last ingest."""
    import yaml

    from calmops_dagster.ingest.file_scan import listing_fingerprint
    from calmops_dagster.spec import parse_spec
    from calmops_dagster.store.metrics_store import MetricsStore

    metrics, names, entries = MetricsStore(home.metrics_db), [], {}
    old = time.time() - 3600
    for p in range(pipelines):
        name = f"p{p:04d}"
        data_dir = home.root / "data" / name
        data_dir.mkdir(parents=True)
        raw = {"name": name, "type": "block", "data_dir": str(data_dir), "target": "y", "block_col": "block",
               "model_spec": {"module": "sklearn.linear_model", "class": "LogisticRegression"},
               "sensor": {"settle_seconds": 0, "interval_seconds": 5}}
        home.spec_path(name).parent.mkdir(parents=True)
        home.spec_path(name).write_text(yaml.safe_dump(raw))
        rows = []
        for block in range(1, history + 1):
            path = data_dir / f"block_{block:06d}.csv"
            path.write_text(f"x1,y,block\n0.5,1,{block}\n")
            os.utime(path, (old + block, old + block))
            rows.append({"pipeline": name, "block": str(block), "file": path.name, "content_hash": f"{p:032x}"
                         f"{block:032x}", "rows": 1, "status": "current", "seq": block,
                         "recorded_at": datetime.now(UTC)})
        for commit in ([[row] for row in rows] if per_block else [rows]):
            metrics.append_rows("block_files", commit)
        names.append(name)
        entries[name] = {"listing": listing_fingerprint(parse_spec(raw, home.spec_path(name))), "seq": history,
                         "looked": 0}
    return names, json.dumps({"pipelines": entries}, sort_keys=True, separators=(",", ":"))


def sensor_tick(args) -> None:
    root = Path(tempfile.mkdtemp(prefix="scan_bench_tick_"))
    sides = {"this branch": None, f"git {args.tick_baseline_ref}": source_tree(args.tick_baseline_ref,
                                                                                root / "baseline")}
    from calmops_dagster.store.paths import CalmOpsHome

    record = "one commit per block" if args.commit_per_block else "one commit per pipeline"
    print(f"one idle tick of calmops_files over {args.pipelines} pipelines ({record}); CPU s (median of {args.ticks} ticks "
          f"per process, {args.repeat} processes a side, alternated), record reads per tick")
    print(f"{'history':>7} {'side':>16} {'tick CPU s':>10} {'reads':>5}  load average")
    for history in [int(h) for h in args.history.split(",")]:
        home = CalmOpsHome(root / f"home_{history}")
        names, cursor = write_history(home, args.pipelines, history, args.commit_per_block)
        cursor_file = root / f"cursor_{history}.json"
        cursor_file.write_text(cursor)
        figures = {side: [] for side in sides}
        for _ in range(args.repeat):
            for side, tree in sides.items():
                env = {**os.environ, "CALMOPS_HOME": str(home.root)}
                if tree is not None:
                    env["PYTHONPATH"] = str(tree)
                out = subprocess.run([sys.executable, "-c", TICK, str(home.root), json.dumps(names),
                                      str(cursor_file), str(args.ticks)], env=env, capture_output=True,
                                     text=True, check=False, cwd=tree or REPO)
                if out.returncode:
                    raise SystemExit(f"{side} failed:\n{out.stderr}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                assert (tree is None) == result["module"].startswith(str(REPO)), result["module"]
                figures[side].append((statistics.median(result["cpu"]), result["reads"]))
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        for side, runs in figures.items():
            print(f"{history:7} {side:>16} {statistics.median(c for c, _ in runs):10.3f} {runs[0][1]:5}  {load}")


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
    parser.add_argument("--sensor-tick", action="store_true", help="CPU of an idle file-sensor tick")
    parser.add_argument("--pipelines", type=int, default=200, help="--sensor-tick: pipelines served")
    parser.add_argument("--history", default="10,500", help="--sensor-tick: blocks recorded per pipeline")
    parser.add_argument("--repeat", type=int, default=3, help="--sensor-tick: processes per side")
    parser.add_argument("--ticks", type=int, default=3, help="--sensor-tick: ticks measured per process")
    parser.add_argument("--tick-baseline-ref", default="71102e7")
    parser.add_argument("--commit-per-block", action="store_true", help="--sensor-tick: the record as the "
                        "sensor writes it, one block_files commit per scan (default: compacted)")
    args = parser.parse_args()
    if args.sensor_tick:
        sensor_tick(args)
        return
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
