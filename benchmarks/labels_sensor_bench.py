"""CPU of one labels-sensor tick with 1, 200 and 1,000 label files: this code against a baseline, same run.

``labels.dir`` holds ``--files`` label files of ``--rows`` rows each (an id and the target), every one settled,
and the pipeline keeps ``--blocks`` blocks of 1,000 rows without their target. For each file count, the
baseline's sensor and this code's run in turn, each in its own process on the same files, and report the
CPU seconds (``time.process_time``) of:

- **first tick**: no cursor, every file learnt and matched;
- **idle tick**: nothing changed (median of ``--repeat``), and the kilobytes it hashed;
- **one new file**: one more label file lands and is matched with the others.

The baseline (``--baseline-ref``, default ``215aaef``: a tick hashed every settled label file) is extracted
with ``git archive``. The load average is printed before and after.

    python benchmarks/labels_sensor_bench.py [--files 1 200 1000] [--rows 1000] [--baseline-ref 215aaef]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The top-level folders installed as ``calmops_dagster.<name>``: the baseline tree gets them in place.
MAPPED = ("assets", "sensors", "resources", "generators")
#: Every label file's mtime: long settled.
OLD = 1_700_000_000

WORKER = r'''
import json, os, statistics, sys, time
from pathlib import Path
from dagster import DagsterInstance, SensorResult, build_sensor_context
from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions
from calmops_dagster.resources import build_resources
from calmops_dagster.spec import load_spec
from calmops_dagster.store.paths import CalmOpsHome
import calmops_dagster.ingest.labels as code

hashed = []  # bytes of every file a tick hashed (both versions hash through this module's file_sha256)
sha256 = code.file_sha256
code.file_sha256 = lambda path: hashed.append(os.path.getsize(path)) or sha256(path)
spec, home, repeat = load_spec(Path(sys.argv[1])), CalmOpsHome(Path(sys.argv[2])), int(sys.argv[3])
sensor = next(s for s in build_pipeline_definitions(spec).sensors if s.name.endswith("_labels"))
resources = build_resources(home)
resources = {key: resources[key] for key in ("home", "metrics")}
new_file = Path(spec.labels.dir).with_name("new_label.csv")

with DagsterInstance.ephemeral() as instance:
    def tick(cursor):
        hashed.clear()
        started = time.process_time()
        result = sensor(build_sensor_context(instance=instance, cursor=cursor, resources=resources))
        seconds = time.process_time() - started
        runs = len(result.run_requests or []) if isinstance(result, SensorResult) else 0
        moved = isinstance(result, SensorResult) and result.cursor is not None
        return seconds, (result.cursor if moved else cursor), runs

    first, cursor, first_runs = tick(None)
    idle = []
    for _ in range(repeat):
        seconds, cursor, runs = tick(cursor)
        assert runs == 0, runs
        idle.append(seconds)
    idle_bytes = sum(hashed)  # the last idle tick's
    added = Path(spec.labels.dir) / "zz_new.csv"
    os.replace(new_file, added)
    os.utime(added, (1_700_000_000, 1_700_000_000))
    one_new, cursor, _ = tick(cursor)
    os.replace(added, new_file)
print(json.dumps({"first": first, "idle": statistics.median(idle), "one_new": one_new, "runs": first_runs,
                  "idle_bytes": idle_bytes, "code": code.__file__}))
'''


def write_labels(folder: Path, files: int, rows: int) -> None:
    """``files`` label files of ``rows`` distinct ids each, and one more beside the folder (the new one)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(files + 1):
        ids = np.arange(i * rows, (i + 1) * rows)
        path = folder / f"labels_{i:05d}.csv" if i < files else folder.with_name("new_label.csv")
        pd.DataFrame({"id": ids, "y": rng.integers(0, 2, size=rows)}).to_csv(path, index=False)
        os.utime(path, (OLD, OLD))


def keep_blocks(blocks_dir: Path, blocks: int) -> None:
    """``blocks`` kept blocks of 1,000 rows without their target (ids 0.. in order)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    blocks_dir.mkdir(parents=True)
    for b in range(blocks):
        ids = np.arange(b * 1000, (b + 1) * 1000)
        pd.DataFrame({"id": ids, "x1": rng.normal(size=1000), "x2": rng.normal(size=1000)}).to_parquet(
            blocks_dir / f"{b + 2}.parquet")


def baseline_tree(root: Path, ref: str) -> Path:
    """The package at ``ref``, with the top-level folders it installs as ``calmops_dagster.*`` in place."""
    tree = root / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "calmops_dagster", *MAPPED],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    for name in MAPPED:
        shutil.move(str(tree / name), str(tree / "calmops_dagster" / name))
    return tree


def run_worker(spec_path: Path, home: Path, repeat: int, pythonpath: Path | None) -> dict:
    env = {**os.environ, "CALMOPS_HOME": str(home), **({"PYTHONPATH": str(pythonpath)} if pythonpath else {})}
    out = subprocess.run([sys.executable, "-c", WORKER, str(spec_path), str(home), str(repeat)], env=env,
                         cwd=pythonpath or REPO, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"worker failed ({pythonpath or 'this code'}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1, 200, 1000])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline-ref", default="215aaef")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="labels_sensor_bench_"))
    sys.path.insert(0, str(REPO))
    import yaml

    from calmops_dagster.spec import parse_spec
    from calmops_dagster.store.paths import CalmOpsHome

    baseline = baseline_tree(root, args.baseline_ref)
    load_before = os.getloadavg()
    rows = []
    for files in args.files:
        labels_dir, data_dir = root / f"labels_{files}" / "labels", root / f"data_{files}"
        data_dir.mkdir()
        write_labels(labels_dir, files, args.rows)
        raw = {"name": "bench", "type": "block", "data_dir": str(data_dir), "target": "y", "block_col": "block",
               "model_spec": {"module": "sklearn.linear_model", "class": "LogisticRegression"},
               "sensor": {"settle_seconds": 0}, "labels": {"dir": str(labels_dir), "id_col": "id"}}
        sides = {}
        for side, tree in (("baseline", baseline), ("this code", None)):  # a home each: same blocks, no history
            home = CalmOpsHome(root / f"home_{files}_{len(sides)}")
            keep_blocks(Path(home.blocks_dir("bench")), args.blocks)
            home.spec_path("bench").parent.mkdir(parents=True, exist_ok=True)
            home.spec_path("bench").write_text(yaml.safe_dump(raw))
            parse_spec(raw, home.spec_path("bench"))  # a valid spec for both
            sides[side] = run_worker(home.spec_path("bench"), home.root, args.repeat, tree)
        before, after = sides["baseline"], sides["this code"]
        assert before["runs"] == after["runs"], (before, after)
        assert before["code"].startswith(str(baseline)) and not after["code"].startswith(str(baseline))
        rows.append((files, before, after))
    load_after = os.getloadavg()

    print(f"labels sensor tick, CPU seconds; {args.rows:,} rows per label file, {args.blocks} kept blocks "
          f"without their target; baseline git {args.baseline_ref}")
    print(f"{'files':>6} {'tick':<14} {'baseline':>9} {'this code':>10} {'ratio':>7}")
    for files, before, after in rows:
        for key, label in (("idle", "idle"), ("one_new", "one new file"), ("first", "first")):
            ratio = before[key] / after[key] if after[key] > 0 else float("inf")
            print(f"{files:>6} {label:<14} {before[key]:9.4f} {after[key]:10.4f} {ratio:6.1f}x")
        print(f"{files:>6} {'idle: kB hashed':<14} {before['idle_bytes'] / 1e3:9.0f} {after['idle_bytes'] / 1e3:10.0f}")
    print(f"load average (1, 5, 15 min): before {load_before[0]:.2f} "
          f"{load_before[1]:.2f} {load_before[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} "
          f"{load_after[2]:.2f}; {os.cpu_count()} cores")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
