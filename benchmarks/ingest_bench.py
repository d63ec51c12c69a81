"""Ingest latency and throughput of one stream pipeline: in-process executor vs the default multiprocess one.

For each executor, in the same run and on the same files, every file is dropped into ``data_dir`` one at a
time and timed from the moment it lands until its drift report is in DuckDB:

1. the pipeline's file sensor is evaluated (``build_sensor_context``, what the daemon does on a tick);
2. the run it requests is executed: ``job.execute_in_process`` (in-process executor: every step in this
   process) or ``execute_job`` on the reconstructable job of the code location (the job's default
   ``multi_or_in_process_executor``, i.e. multiprocess: one child process per step, as under
   ``dagster dev``);
3. the file's ``drift_summary`` row is checked in DuckDB; the latency "to drift report" ends at the
   ``drift_report`` materialization event (the asset writes its DuckDB rows just before that event), the
   latency "to run end" when the run is over (champion decided, predictions written).

Not included: the sensor's polling interval (``sensor.interval_seconds``, default 15 s) and the settle time
(``sensor.settle_seconds``, default 5 s), which add up to their sum on top under the daemon, nor the run
launcher's process start under ``dagster dev``. Blocks per minute = files / total wall time.

    python benchmarks/ingest_bench.py [--files 5] [--rows 500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--rows", type=int, default=500)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ingest_bench_"))
    os.environ["CALMOPS_HOME"] = str(root / "home")

    from dagster import (
        AssetKey,
        AssetRecordsFilter,
        DagsterInstance,
        Definitions,
        build_sensor_context,
        execute_job,
    )
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from calmops_dagster.orchestration.instance import prepare_instance
    from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
    from calmops_dagster.orchestration.runner import QUIET_RUN_CONFIG
    from calmops_dagster.spec import parse_spec, save_spec
    from calmops_dagster.store.metrics_store import MetricsStore
    from calmops_dagster.store.paths import CalmOpsHome
    from generators.drifting_blocks import make_drifting_blocks
    from resources import build_resources

    home = CalmOpsHome.from_env()
    prepare_instance(home)
    frame = make_drifting_blocks(n_blocks=args.files, rows_per_block=args.rows, drift_at=args.files // 2 + 1,
                                 seed=0)
    staging = root / "staging"
    staging.mkdir()
    texts = [rows.drop(columns="block").to_csv(index=False) for _, rows in frame.groupby("block")]
    specs = {}
    for executor in ("in_process", "multiprocess"):
        name = f"bench_{executor}"
        data_dir = root / f"data_{executor}"
        data_dir.mkdir()
        raw = {"name": name, "type": "stream", "data_dir": str(data_dir), "target": "y",
               "model_spec": {"module": "sklearn.ensemble", "class": "RandomForestClassifier",
                              "params": {"n_estimators": 50, "random_state": 0}},
               "sensor": {"interval_seconds": 1, "settle_seconds": 0}}
        spec = parse_spec(raw, home.spec_path(name))
        save_spec(spec, home.spec_path(name))
        specs[executor] = spec

    metrics = MetricsStore(home.metrics_db)
    resources = build_resources(home)
    repository = ReconstructableRepository.for_module("calmops_dagster.definitions", "defs",
                                                      working_directory=str(Path(__file__).resolve().parents[1]))
    results = {}
    with DagsterInstance.get() as instance:
        for executor, spec in specs.items():
            defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=resources))
            sensor = defs.sensors[0]
            job = defs.resolve_job_def(job_name(spec))
            cursor, latencies, run_ends = None, [], []
            started = time.perf_counter()
            for i, text in enumerate(texts):
                landed, landed_wall = time.perf_counter(), time.time()
                (spec.data_dir / f"events_{i:03d}.csv").write_text(text)
                context = build_sensor_context(instance=instance, cursor=cursor,
                                               resources={k: resources[k] for k in ("home", "metrics")})
                result = sensor(context)
                cursor = result.cursor
                for request in result.dynamic_partitions_requests or []:
                    instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
                for request in result.run_requests:
                    if executor == "in_process":
                        ok = job.execute_in_process(instance=instance, partition_key=request.partition_key,
                                                    tags=request.tags, run_config=QUIET_RUN_CONFIG).success
                    else:
                        with execute_job(repository.get_reconstructable_job(job_name(spec)), instance=instance,
                                         tags={**request.tags, "dagster/partition": request.partition_key},
                                         run_config=QUIET_RUN_CONFIG) as run:
                            ok = run.success
                    assert ok, f"{executor}: run of {request.partition_key} failed"
                    run_ends.append(time.perf_counter() - landed)
                    assert not metrics.query("SELECT 1 FROM drift_summary WHERE pipeline = ? AND block = ?",
                                             [spec.name, request.partition_key]).empty
                    record = instance.fetch_materializations(AssetRecordsFilter(
                        asset_key=AssetKey([spec.name, "drift_report"]),
                        asset_partitions=[request.partition_key]), limit=1).records[0]
                    latencies.append(record.timestamp - landed_wall)
            total = time.perf_counter() - started
            assert len(latencies) == len(texts)
            results[executor] = (latencies, run_ends, total)

    print(f"ingest_bench: {args.files} files x {args.rows} rows, stream pipeline, RandomForest(50), "
          "sensor settle 0 s, polling interval excluded")
    print(f"{'executor':14} {'to drift report, median s':>26} {'max s':>6} {'to run end, median s':>21} "
          f"{'blocks/min':>11}")
    for executor, (latencies, run_ends, total) in results.items():
        print(f"{executor:14} {statistics.median(latencies):26.2f} {max(latencies):6.2f} "
              f"{statistics.median(run_ends):21.2f} {len(latencies) / total * 60:11.1f}")
    base = statistics.median(results["multiprocess"][0]) / statistics.median(results["in_process"][0])
    print(f"multiprocess / in-process median latency: {base:.1f}x")


if __name__ == "__main__":
    main()
