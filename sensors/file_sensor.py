"""One file sensor per pipeline: new stable files in ``data_dir`` become partitions and run requests.

The cursor is the scan state of :mod:`calmops_dagster.ingest.file_scan` (file -> size, mtime, sha256), returned in
the same ``SensorResult`` as the run requests, so a tick is recorded whole or not at all. Run keys are built
from the block and the content hashes of the files that hold it: seeing the same files again requests
nothing, a changed file requests its blocks again.

Stream pipelines: every accepted file version is one partition (``<stem>-<sha12>``, copied into
``pipelines/<name>/incoming/``), requested in arrival order. The cursor is stored by Dagster with the sensor's
state in the instance, so it survives restarts of the daemon and of ``dagster dev``.

Every tick also marks failed the pipeline's runs whose process died
(:func:`~calmops_dagster.orchestration.runner.reap_dead_runs`) and requests each such block once more, so a killed run
worker does not hold up the pipeline's run queue.
"""


import json

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from calmops_dagster.ingest.file_scan import load_cursor, scan_data_dir
from calmops_dagster.orchestration.runner import (
    PIPELINE_TAG,
    expected_kinds,
    ordered_blocks,
    reap_dead_runs,
    record_bad_files,
    stream_store,
    times_reaped,
)
from calmops_dagster.spec import PipelineSpec
from resources.home import CalmOpsHomeResource, MetricsStoreResource


def build_file_sensor(spec: PipelineSpec, job):
    """The sensor watching ``spec.data_dir``; on by default so dropped files are processed unattended."""

    @sensor(
        name=f"{spec.name}_files",
        job=job,
        minimum_interval_seconds=spec.sensor.interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Watches {spec.data_dir} ({spec.file_pattern}) for new block files.",
    )
    def file_sensor(context: SensorEvaluationContext, home: CalmOpsHomeResource, metrics: MetricsStoreResource):
        models = home.model_store(spec.name)
        scan = scan_data_dir(spec, load_cursor(context.cursor), expected_kinds=expected_kinds(models),
                             incoming=stream_store(models))
        record_bad_files(spec, scan.bad, metrics.store(), context.log)
        for name in scan.waiting:
            context.log.info(f"{name} is not stable yet (still being written?); will look again")
        for name in scan.duplicates:
            context.log.info(f"{name} holds content already processed; ignored")
        found = scan.blocks()
        known = set(context.instance.get_dynamic_partitions(spec.partitions_name))
        order = ordered_blocks(spec, scan)
        new_blocks = [b for b in order if b not in known]
        requests = rerun_requests(context, spec) + [
            RunRequest(
                run_key=f"{block}:" + "+".join(sorted(sha[:16] for sha in found[block])),
                partition_key=block,
                tags={PIPELINE_TAG: spec.name},
            )
            for block in order
        ]
        cursor = json.dumps(scan.cursor, sort_keys=True)
        if not requests:
            return SensorResult(skip_reason=SkipReason("no new stable data files"), cursor=cursor)
        add = AddDynamicPartitionsRequest(partitions_def_name=spec.partitions_name, partition_keys=new_blocks)
        return SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[add] if new_blocks else [],
            cursor=cursor,
        )

    return file_sensor


def rerun_requests(context: SensorEvaluationContext, spec: PipelineSpec) -> list[RunRequest]:
    """One more run for each block whose run lost its process; a block that lost it twice is left for
    ``calmops relaunch`` (a block that kills its worker every time, e.g. by running out of memory, must not
    loop for ever)."""
    requests = []
    for run in reap_dead_runs(context.instance, spec):
        block = run.tags.get("dagster/partition")
        if block is None:
            continue
        if times_reaped(context.instance, spec, block) > 1:
            context.log.error(f"block {block}: run {run.run_id} lost its process again; not retried "
                              f"automatically (`calmops relaunch {spec.name}` retries it)")
            continue
        context.log.warning(f"block {block}: run {run.run_id} lost its process; marked failed, running it again")
        # ahead of runs already queued for later blocks, so blocks are still processed in order
        requests.append(RunRequest(run_key=f"rerun-of-{run.run_id}", partition_key=block,
                                   tags={PIPELINE_TAG: spec.name, "dagster/priority": "1"}))
    return requests
