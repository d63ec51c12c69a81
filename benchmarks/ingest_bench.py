"""From a block file landing in ``data_dir`` to its drift report, through a real ``dagster dev``.

One block pipeline, LightGBM, blocks of ``--rows`` x ``--features`` (default 10,000 x 16; an abrupt drift
at every ``--drift-every``-th block, so some blocks train a challenger). Three measurements in one run:

1. **in-process** (the floor): the pipeline's job executed with ``execute_in_process`` block after block,
   as ``calmops run`` does; per-block compute = the run's wall time, and the time to the ``drift_report``
   materialization. Its baseline: the first ``--storage-baseline-blocks`` blocks again on a home whose
   instance has Dagster's own ``storage: sqlite`` instead of the pooled storage ``calmops`` writes.
2. **dagster dev** (what a user gets): ``calmops dev`` on a fresh home (webserver, daemon, file sensor, run
   queue, the warm run launcher: one process per run, forked from a warm one), the pipeline's default
   ``executor: in_process``. Each block file is written beside ``data_dir`` and renamed into it (it lands
   whole at a known instant), then the script waits for its run to end before dropping the next. Timed from
   the landing: the run's creation by the sensor tick ("sensor wait": ``settle_seconds`` at least, up to
   ``interval_seconds`` plus the tick's own time), the ``drift_report`` materialization ("to drift report"),
   the run's end; and from the run's creation (queue, launcher, run), which leaves out the luck of where the
   landing falls between two ticks. The first block (it trains the first champion, and the warm process
   starts) is left out of the figures. Also the spacing of the file sensor's ticks (Dagster's tick records)
   against ``--interval``: how often the daemon really looked.
3. **dagster dev, Dagster's default run launcher** (the baseline, ``CALMOPS_RUN_LAUNCHER=dagster``: the code
   server spawns a fresh Python process per run): the same on a second home, on ``--baseline-blocks`` blocks.

    python benchmarks/ingest_bench.py [--blocks 10] [--rows 10000] [--features 16] [--interval 5]
                                      [--settle 2] [--baseline-blocks 3] [--storage-baseline-blocks 3]
                                      [--in-process-only]

The in-process lines also give each step's seconds (STEP_START to STEP_SUCCESS in the run's events).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.live_processes import answers_200, free_port, stop_group, wait_for  # after ROOT is on the path

#: How often the benchmark looks for a block's run and its end: the resolution of the figures it prints.
POLL_SECONDS = 0.2


def make_blocks(n_blocks: int, rows: int, features: int, drift_every: int, seed: int = 0):
    """``n_blocks`` frames of ``rows`` x ``features`` (two categorical) with a 0/1 target; the concept and the
    feature means change at every ``drift_every``-th block."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    numeric = features - 2
    frames, regime = [], 0
    for block in range(1, n_blocks + 1):
        if block > 1 and (block - 1) % drift_every == 0:
            regime += 1
        weights = np.random.default_rng(100 + regime).normal(size=numeric)
        x = rng.normal(loc=0.5 * regime, size=(rows, numeric))
        colour = rng.choice(["red", "green", "blue"], size=rows)
        size = rng.choice(["s", "m", "l", "xl"], size=rows)
        logits = (x - 0.5 * regime) @ weights / np.sqrt(numeric) + np.where(colour == "red", 0.7, 0.0)
        y = (logits + rng.logistic(scale=0.5, size=rows) > 0).astype(int)
        frame = pd.DataFrame(x, columns=[f"x{i:02d}" for i in range(numeric)])
        frames.append(frame.assign(colour=colour, size=size, y=y, block=block))
    return frames


def pipeline_raw(name: str, data_dir: Path, args, executor: str) -> dict:
    return {"name": name, "type": "block", "data_dir": str(data_dir), "target": "y", "block_col": "block",
            "model_spec": {"module": "lightgbm", "class": "LGBMClassifier",
                           "params": {"n_estimators": 100, "verbose": -1, "random_state": 0}},
            "sensor": {"interval_seconds": args.interval, "settle_seconds": args.settle},
            "executor": executor}


def land(frame, data_dir: Path, block: int) -> float:
    """Write the block's CSV beside ``data_dir`` and rename it in: the file lands whole; returns the instant."""
    staging = data_dir.parent / f".staging_{block:03d}.csv"
    frame.to_csv(staging, index=False)
    os.replace(staging, data_dir / f"block_{block:03d}.csv")
    return time.time()


def in_process(frames, args, root: Path, storage: str = "pooled") -> tuple[list[float], list[float]]:
    """Per-block wall time of ``execute_in_process`` and its time to the drift_report materialization.

    ``storage``: ``pooled``, the local instance as ``calmops`` writes it, or ``dagster``, the same instance
    on Dagster's own ``storage: sqlite`` (an engine per statement): the baseline of the pooled storage."""
    os.environ["CALMOPS_HOME"] = str(root / f"home_in_process_{storage}")
    from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, Definitions

    from calmops_dagster.orchestration.headless_runs import QUIET_RUN_CONFIG
    from calmops_dagster.orchestration.ingest_registration import register_new_blocks
    from calmops_dagster.orchestration.instance import prepare_instance
    from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
    from calmops_dagster.resources import build_resources
    from calmops_dagster.spec import parse_spec, save_spec
    from calmops_dagster.store.metrics_store import MetricsStore
    from calmops_dagster.store.model_store import ModelStore
    from calmops_dagster.store.paths import CalmOpsHome

    home = CalmOpsHome.from_env()
    prepare_instance(home)
    if storage == "dagster":
        import yaml

        config = home.dagster_home / "dagster.yaml"
        raw = yaml.safe_load(config.read_text())
        raw["storage"] = {"sqlite": {"base_dir": str(home.dagster_home)}}
        config.write_text(yaml.safe_dump(raw))
    data_dir = root / f"data_in_process_{storage}"
    data_dir.mkdir()
    compute_only = argparse.Namespace(**{**vars(args), "settle": 0})  # a landed file is read at once
    spec = parse_spec(pipeline_raw("bench", data_dir, compute_only, "in_process"), home.spec_path("bench"))
    save_spec(spec, home.spec_path("bench"))
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    job = defs.resolve_job_def(job_name(spec))
    metrics, models = MetricsStore(home.metrics_db), ModelStore(home.models_dir("bench"))
    walls, to_report = [], []
    with DagsterInstance.get() as instance:
        for block, frame in enumerate(frames, start=1):
            land(frame, data_dir, block)  # registered as the sensor and `calmops run` do (the ingest record)
            register_new_blocks(instance, spec, metrics, models, logging.getLogger("ingest_bench"))
            started, started_wall = time.perf_counter(), time.time()
            result = job.execute_in_process(instance=instance, partition_key=str(block), run_config=QUIET_RUN_CONFIG)
            assert result.success, f"in-process run of block {block} failed"
            walls.append(time.perf_counter() - started)
            record = instance.fetch_materializations(AssetRecordsFilter(
                asset_key=AssetKey(["bench", "drift_report"]), asset_partitions=[str(block)]), limit=1).records[0]
            to_report.append(record.timestamp - started_wall)
            steps = ", ".join(f"{step} {seconds:.1f}" for step, seconds in step_seconds(instance, result.run_id))
            print(f"  in-process, {storage} storage, block {block:2}: run {walls[-1]:5.1f} s, drift report {to_report[-1]:5.1f} s after "
                  f"its start ({steps}); {load()}", flush=True)
    return walls[1:], to_report[1:]


def step_seconds(instance, run_id: str) -> list[tuple[str, float]]:
    """(asset, seconds) of each step of the run, from its STEP_START to its STEP_SUCCESS/FAILURE event."""
    from dagster import DagsterEventType

    started, spans = {}, []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            spans.append((event.step_key.split("__")[-1], entry.timestamp - started[event.step_key]))
    return spans


def through_dagster_dev(frames, args, root: Path, launcher: str) -> dict[str, list[float]]:
    """Timings per block (first left out) through ``calmops dev`` on a fresh home whose instance uses the run
    launcher ``launcher`` (``CALMOPS_RUN_LAUNCHER``)."""
    name, home_dir = "bench_dev", root / f"home_{launcher}"
    env = {**os.environ, "CALMOPS_HOME": str(home_dir), "PYTHONPATH": str(ROOT), "CALMOPS_RUN_LAUNCHER": launcher}
    os.environ.update(CALMOPS_HOME=str(home_dir), CALMOPS_RUN_LAUNCHER=launcher)
    from calmops_dagster.spec import parse_spec, save_spec
    from calmops_dagster.store.paths import CalmOpsHome

    home = CalmOpsHome.from_env()
    os.environ["DAGSTER_HOME"] = str(home.dagster_home)  # the instance `calmops dev` prepares and uses
    data_dir = root / f"data_{launcher}"
    data_dir.mkdir()
    save_spec(parse_spec(pipeline_raw(name, data_dir, args, "in_process"), home.spec_path(name)), home.spec_path(name))
    port = free_port()
    with open(root / f"dagster_dev_{launcher}.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "calmops_dagster.interfaces.cli", "dev", "--port",
                                    str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(ROOT))
    timings = {"sensor wait": [], "to drift report": [], "to run end": [],
               "run created -> drift report": [], "run created -> run end": [], "sensor tick spacing": []}
    try:
        wait_for(lambda: answers_200(f"http://127.0.0.1:{port}/server_info", process, timeout=2), 300,
                 "dagster dev's webserver", 1.0)
        from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, RunsFilter

        instance = DagsterInstance.get()
        first_landing = time.time()
        for block, frame in enumerate(frames, start=1):
            landed = land(frame, data_dir, block)
            runs_filter = RunsFilter(tags={"calmops/pipeline": name, "dagster/partition": str(block)})
            record = wait_for(lambda f=runs_filter: next(iter(instance.get_run_records(f, limit=1)), None),
                              600, f"the run of block {block}", POLL_SECONDS)
            done = wait_for(lambda r=record: _finished(instance, r.dagster_run.run_id), 900,
                            f"the end of block {block}'s run", POLL_SECONDS)
            assert done.dagster_run.is_success, f"{launcher} block {block}: run {done.dagster_run.run_id} failed"
            report = instance.fetch_materializations(AssetRecordsFilter(
                asset_key=AssetKey([name, "drift_report"]), asset_partitions=[str(block)]), limit=1).records[0]
            created = record.create_timestamp.timestamp()
            row = (created - landed, report.timestamp - landed, done.end_time - landed,
                   report.timestamp - created, done.end_time - created)
            steps = ", ".join(f"{step} {seconds:.1f}" for step, seconds in step_seconds(instance, record.dagster_run.run_id))
            print(f"  {launcher:7} launcher, block {block:2}: run created {row[0]:5.1f} s, started "
                  f"{done.start_time - landed:5.1f} s, drift report {row[1]:5.1f} s, run end {row[2]:5.1f} s "
                  f"after landing ({steps}); {load()}", flush=True)
            if block > 1:
                for key, value in zip(timings, row):
                    timings[key].append(value)
        timings["sensor tick spacing"] = tick_spacing(instance, f"{name}_files", first_landing)
        instance.dispose()
    finally:
        stop_group(process, timeout=60)  # webserver, daemon, code server, warm process and run workers
    return timings


def tick_spacing(instance, sensor_name: str, since: float) -> list[float]:
    """Seconds between consecutive ticks of the sensor ``sensor_name`` since ``since`` (Dagster's tick records):
    how often the daemon really evaluated it, against the spec's ``interval_seconds``."""
    from dagster._core.scheduler.instigation import InstigatorType

    state = next(s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
                 if s.instigator_name == sensor_name)
    ticks = sorted(tick.timestamp for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id,
                                                                   after=since))
    return [later - earlier for earlier, later in itertools.pairwise(ticks)]


def _finished(instance, run_id: str):
    record = instance.get_run_record_by_id(run_id)
    return record if record is not None and record.dagster_run.is_finished else None


def load() -> str:
    """The machine's load average (1, 5, 15 min), printed beside every figure: the machine may be shared."""
    return "load " + " ".join(f"{value:.1f}" for value in os.getloadavg())


def describe(values: list[float]) -> str:
    return f"{statistics.median(values):6.1f} {max(values):6.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=10, help="measured blocks (one more is run first)")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--drift-every", type=int, default=4)
    parser.add_argument("--interval", type=int, default=5, help="sensor.interval_seconds")
    parser.add_argument("--settle", type=float, default=2.0, help="sensor.settle_seconds")
    parser.add_argument("--baseline-blocks", type=int, default=3, help="measured blocks of the baseline, "
                        "Dagster's default run launcher (0: skip it)")
    parser.add_argument("--storage-baseline-blocks", type=int, default=3, help="measured in-process blocks on "
                        "Dagster's own SQLite storage, the pooled storage's baseline (0: skip it)")
    parser.add_argument("--in-process-only", action="store_true", help="measure the in-process runs only")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes and dagster dev's log")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stopped: still stop dagster dev (finally below)
    root = Path(tempfile.mkdtemp(prefix="ingest_bench_"))
    frames = make_blocks(args.blocks + 1, args.rows, args.features, args.drift_every)
    try:
        walls, to_report = in_process(frames, args, root)
        storage_walls = (in_process(frames[:args.storage_baseline_blocks + 1], args, root, "dagster")[0]
                         if args.storage_baseline_blocks else [])
        dev = {}
        if not args.in_process_only:
            dev["warm"] = through_dagster_dev(frames, args, root, "warm")
            if args.baseline_blocks:
                dev["dagster"] = through_dagster_dev(frames[:args.baseline_blocks + 1], args, root, "dagster")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\ningest_bench {datetime.now():%Y-%m-%d %H:%M}: {args.blocks} measured blocks of {args.rows:,} x "
          f"{args.features} (LightGBM, 100 trees; drift every {args.drift_every} blocks); sensor interval "
          f"{args.interval} s, settle {args.settle:g} s; seconds, median and max; at the end {load()}")
    print(f"{'':60} {'median':>6} {'max':>6}")
    print(f"{'in-process: per-block compute (whole run)':60} {describe(walls)}")
    print(f"{'in-process: run start -> drift report':60} {describe(to_report)}")
    if storage_walls:
        label = "in-process, Dagster's SQLite storage: per-block compute"
        print(f"{label:60} {describe(storage_walls)}")
        comparable = walls[:len(storage_walls)]  # the same blocks
        print(f"Dagster's SQLite storage / pooled storage, per-block compute on the same {len(comparable)} blocks "
              f"(median): {statistics.median(storage_walls) / statistics.median(comparable):.2f}x")
    for launcher, timings in dev.items():
        if not timings["to drift report"]:
            continue
        for key, values in timings.items():
            label = key if key.startswith(("run created", "sensor tick")) else f"landing -> {key}"
            print(f"{f'dagster dev, {launcher} launcher: {label}':60} {describe(values)}")
    base, ours = dev.get("dagster"), dev.get("warm")
    if base and ours and base["to drift report"]:
        for key in ("run created -> drift report", "run created -> run end"):
            ratio = statistics.median(base[key]) / statistics.median(ours[key])
            print(f"Dagster's default launcher / warm launcher, {key} (median): {ratio:.1f}x")
    print(f"target: landing -> drift report <= interval + 5 = {args.interval + 5} s; run end <= "
          f"{args.interval + 10} s; per-block compute <= 3 s")


if __name__ == "__main__":
    main()
