"""What the speed-ups buy: from a block file landing to its decision, through ``calmops dev``, with and without.

Two fresh homes in one run, the same blocks: ``calmops dev`` with the speed-ups on (the default: pooled SQLite
storage, warm run launcher, sensor interval correction) and with ``CALMOPS_DAGSTER_SPEEDUPS=0`` (stock
Dagster: ``storage: sqlite``, the default run launcher, the sensor at the spec's interval). One block pipeline,
LightGBM, blocks of ``--rows`` x ``--features`` (the drift at every 4th block has some blocks train and
promote a challenger). Each block file is renamed into ``data_dir`` (it lands whole at a known instant) and the
next one waits for its run's end. Timed from the landing: the run's creation by the sensor tick, the
``champion_model`` materialization (the block is decided) and the run's end; and from the run's creation to
the decision (queue, launcher and run, without the luck of where the landing falls between two ticks). The
first block (the first champion; the warm process starts) is left out. Also the spacing of the file sensor's
ticks against ``--interval``. ``--order`` chooses which mode runs first; every line gives the load average.

    python benchmarks/speedups_bench.py [--blocks 3] [--rows 5000] [--features 16] [--interval 5]
                                        [--settle 2] [--order on,off] [--keep]
"""

from __future__ import annotations

import argparse
import itertools
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
# imported after ROOT is on the path
from benchmarks.ingest_bench import POLL_SECONDS, describe, land, load, make_blocks, pipeline_raw
from tests.live_processes import answers_200, free_port, stop_group, wait_for

#: What each figure measures, in the order printed.
FIGURES = ("landing -> run created", "landing -> decided", "landing -> run end", "run created -> decided",
           "sensor tick spacing")


def through_calmops_dev(frames, args, root: Path, speedups: str) -> dict[str, list[float]]:
    """Timings per block (first left out) through ``calmops dev`` on a fresh home, with
    ``CALMOPS_DAGSTER_SPEEDUPS=speedups``."""
    name, home_dir = "bench_speedups", root / f"home_{speedups}"
    switch = {"CALMOPS_HOME": str(home_dir), "CALMOPS_DAGSTER_SPEEDUPS": "1" if speedups == "on" else "0"}
    env = {**os.environ, "PYTHONPATH": str(ROOT), **switch}
    env.pop("CALMOPS_RUN_LAUNCHER", None)
    os.environ.update(switch)
    from calmops_dagster.spec import parse_spec, save_spec
    from calmops_dagster.store.paths import CalmOpsHome

    home = CalmOpsHome.from_env()
    data_dir = root / f"data_{speedups}"
    data_dir.mkdir()
    save_spec(parse_spec(pipeline_raw(name, data_dir, args, "in_process"), home.spec_path(name)), home.spec_path(name))
    port = free_port()
    with open(root / f"dagster_dev_{speedups}.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "calmops_dagster.interfaces.cli", "dev", "--port",
                                    str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(ROOT))
    timings = {figure: [] for figure in FIGURES}
    try:
        wait_for(lambda: answers_200(f"http://127.0.0.1:{port}/server_info", process, timeout=2), 300,
                 "dagster dev's webserver", 1.0)
        from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, RunsFilter

        with DagsterInstance.from_config(str(home.dagster_home)) as instance:
            first_landing = time.time()
            for block, frame in enumerate(frames, start=1):
                landed = land(frame, data_dir, block)
                runs_filter = RunsFilter(tags={"calmops/pipeline": name, "dagster/partition": str(block)})
                record = wait_for(lambda f=runs_filter: next(iter(instance.get_run_records(f, limit=1)), None),
                                  600, f"the run of block {block}", POLL_SECONDS)
                done = wait_for(lambda r=record: finished(instance, r.dagster_run.run_id), 900,
                                f"the end of block {block}'s run", POLL_SECONDS)
                assert done.dagster_run.is_success, f"speed-ups {speedups}, block {block}: run failed"
                decided = instance.fetch_materializations(AssetRecordsFilter(
                    asset_key=AssetKey([name, "champion_model"]), asset_partitions=[str(block)]), limit=1).records[0]
                created = record.create_timestamp.timestamp()
                row = (created - landed, decided.timestamp - landed, done.end_time - landed,
                       decided.timestamp - created)
                print(f"  speed-ups {speedups:3}, block {block:2}: run created {row[0]:5.1f} s, decided "
                      f"{row[1]:5.1f} s, run end {row[2]:5.1f} s after landing; {load()}", flush=True)
                if block > 1:
                    for figure, value in zip(FIGURES, row):
                        timings[figure].append(value)
            timings["sensor tick spacing"] = tick_spacing(instance, f"{name}_files", first_landing)
    finally:
        stop_group(process, timeout=60)  # webserver, daemon, code server, warm process and run workers
    return timings


def finished(instance, run_id: str):
    record = instance.get_run_record_by_id(run_id)
    return record if record is not None and record.dagster_run.is_finished else None


def tick_spacing(instance, sensor_name: str, since: float) -> list[float]:
    """Seconds between consecutive ticks of ``sensor_name`` since ``since`` (Dagster's tick records)."""
    state = next(s for s in instance.all_instigator_state() if s.instigator_name == sensor_name)
    ticks = sorted(tick.timestamp for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id,
                                                                   after=since))
    return [later - earlier for earlier, later in itertools.pairwise(ticks)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=3, help="measured blocks (one more is run first)")
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--drift-every", type=int, default=4)
    parser.add_argument("--interval", type=int, default=5, help="sensor.interval_seconds")
    parser.add_argument("--settle", type=float, default=2.0, help="sensor.settle_seconds")
    parser.add_argument("--order", default="on,off", help="which mode runs first: on,off or off,on")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes and dagster dev's logs")
    args = parser.parse_args()
    order = args.order.split(",")
    if sorted(order) != ["off", "on"]:
        parser.error(f"--order {args.order!r}: expected on,off or off,on")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stopped: still stop dagster dev (finally above)
    root = Path(tempfile.mkdtemp(prefix="speedups_bench_"))
    frames = make_blocks(args.blocks + 1, args.rows, args.features, args.drift_every)
    started = f"{datetime.now():%Y-%m-%d %H:%M}, {load()}"
    try:
        results = {mode: through_calmops_dev(frames, args, root, mode) for mode in order}
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nspeedups_bench from {started} to {datetime.now():%H:%M}, {load()}: {args.blocks} measured blocks "
          f"of {args.rows:,} x {args.features} (LightGBM, 100 trees; drift every {args.drift_every} blocks); "
          f"sensor interval {args.interval} s, settle {args.settle:g} s; seconds, median (max)")
    print(f"| {'seconds, median (max)':28} | speed-ups on | speed-ups off (stock Dagster) | off / on (median) |")
    print("|---|---|---|---|")
    for figure in FIGURES:
        on, off = results["on"][figure], results["off"][figure]
        if not on or not off:
            continue
        cells = [" ".join(describe(values).split()).replace(" ", " (", 1) + ")" for values in (on, off)]
        print(f"| {figure:28} | {cells[0]} | {cells[1]} | {statistics.median(off) / statistics.median(on):.2f}x |")


if __name__ == "__main__":
    main()
