"""One file sensor per pipeline: new stable file versions in ``data_dir`` become partitions and run requests.

An idle tick costs a ``stat`` per file; a changed folder is ingested through the ingest record shared with
the schedule and ``calmops run`` (:mod:`calmops_dagster.ingest.ingest_record`), and a block is requested
once per version (``run_key = <block>:<block version>``). Every tick also requests again the blocks whose
run's process died. What it reads, waits for and sets aside: docs/ingest.md; its cursor, stream
pipelines and dead runs: docs/unattended.md.
"""


import json
import time

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from calmops_dagster.ingest.block_data import sort_block_keys
from calmops_dagster.ingest.file_scan import listing_fingerprint, load_cursor, settle_wait
from calmops_dagster.ingest.ingest_record import ingest_data_dir, newest_seq
from calmops_dagster.ingest.withdrawal import withdraw_moved_blocks
from calmops_dagster.orchestration.dead_runs import dead_runs, reap_run, times_reaped
from calmops_dagster.orchestration.fair_queue import PRIORITY_TAG, block_priorities, runs_ahead
from calmops_dagster.orchestration.headless_runs import processed_versions
from calmops_dagster.orchestration.ingest_registration import expected_kinds, pipeline_dir, record_bad_files
from calmops_dagster.orchestration.run_tags import PIPELINE_TAG, RERUN_OF_TAG
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.speedups.daemon_interval import daemon_min_interval


def build_file_sensor(spec: PipelineSpec, job):
    """The sensor watching ``spec.data_dir``; on by default so dropped files are processed unattended."""

    @sensor(
        name=f"{spec.name}_files",
        job=job,
        minimum_interval_seconds=daemon_min_interval(spec.sensor.interval_seconds),
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Watches {spec.data_dir} ({spec.file_pattern}) for new block files.",
    )
    def file_sensor(context: SensorEvaluationContext, home: CalmOpsHomeResource, metrics: MetricsStoreResource):
        pause = settle_wait(spec)
        if pause:  # a file landed just now: read it in this tick rather than one interval later
            time.sleep(pause)
        models, db = home.model_store(spec.name), metrics.store()
        cursor, listing = load_cursor(context.cursor), listing_fingerprint(spec)
        if idle(context.cursor, listing, cursor, db, spec):  # nothing new: only dead runs to look after
            reruns = rerun_requests(context, spec)
            return SensorResult(run_requests=reruns, cursor=context.cursor) if reruns else SensorResult(
                skip_reason=SkipReason("no new stable data files"), cursor=context.cursor)
        ingest = ingest_data_dir(spec, db, pipeline_dir(models), cursor, expected_kinds(models))
        scan, changed, seq, versions = ingest.scan, ingest.changed, ingest.seq, ingest.versions
        record_bad_files(spec, scan.bad, db, context.log)
        for name in scan.waiting:
            context.log.info(f"{name} is not stable yet (still being written?); will look again")
        for name in scan.duplicates:
            context.log.info(f"{name} holds content already accepted; ignored")
        withdrawn = withdraw_moved_blocks(db, spec, pipeline_dir(models), models.champion_version())
        for item in withdrawn:
            context.log.warning(f"block {item.block} withdrawn: {item.reason}")
        done = processed_versions(context.instance, spec, db)
        order = [b for b in (changed if spec.type == "stream" else sort_block_keys(changed)) if b in versions]
        known = set(context.instance.get_dynamic_partitions(spec.partitions_name))
        gone = [item.block for item in withdrawn if item.block in known]
        new_blocks = [b for b in order if b not in known]
        todo = [block for block in order if (block, versions[block]) not in done]
        priorities = block_priorities(runs_ahead(context.instance, PIPELINE_TAG, spec.name), len(todo))
        requests = rerun_requests(context, spec) + [
            RunRequest(run_key=f"{block}:{versions[block]}", partition_key=block,
                       tags={PIPELINE_TAG: spec.name, PRIORITY_TAG: priority})
            for block, priority in zip(todo, priorities, strict=True)
        ]
        cursor = json.dumps({"seen": scan.cursor["seen"], "seq": seq, "listing": listing}, sort_keys=True)
        if not requests and not new_blocks and not gone:
            return SensorResult(skip_reason=SkipReason("no new stable data files"), cursor=cursor)
        add = AddDynamicPartitionsRequest(partitions_def_name=spec.partitions_name, partition_keys=new_blocks)
        delete = DeleteDynamicPartitionsRequest(partitions_def_name=spec.partitions_name, partition_keys=gone)
        return SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[add] * bool(new_blocks) + [delete] * bool(gone),
            cursor=cursor,
        )

    return file_sensor


def idle(raw_cursor: str | None, listing: str, cursor: dict, db, spec: PipelineSpec) -> bool:
    """True when the tick has nothing to ingest: the data files are as the cursor's tick left them (same
    :func:`listing_fingerprint`), none was waiting to settle, and no other entry point recorded a scan since
    (``calmops run``, the schedule: their record changes are acted on as the sensor's own)."""
    try:
        previous = json.loads(raw_cursor or "{}").get("listing")
    except (json.JSONDecodeError, AttributeError):
        return False
    return previous == listing and not cursor["seen"] and newest_seq(db, spec.name) == cursor["seq"]


def rerun_requests(context: SensorEvaluationContext, spec: PipelineSpec) -> list[RunRequest]:
    """One more run for each block whose run lost its process, in two ticks so blocks stay in order.

    First tick: the rerun is requested (``dagster/priority`` 1, ahead of runs queued for later blocks) while
    the dead run still holds the pipeline's run-queue slot. A later tick, once the rerun is queued, marks the
    dead run failed, which frees the slot: the queue then starts the rerun, not a later block that was
    queued behind the dead run (marking it failed first let the queue start that later block in between).
    A block that lost its process twice is left for ``calmops relaunch`` (a block that kills its worker
    every time, e.g. by running out of memory, must not loop for ever).
    """
    requests = []
    for run, pid, host in dead_runs(context.instance, spec):
        block = run.tags.get("dagster/partition")
        if block is None or times_reaped(context.instance, spec, block) >= 1:
            reap_run(context.instance, run, pid, host)
            if block is not None:
                context.log.error(f"block {block}: run {run.run_id} lost its process again; not retried "
                                  f"automatically (`calmops relaunch {spec.name}` retries it)")
            continue
        if context.instance.get_run_ids(RunsFilter(tags={RERUN_OF_TAG: run.run_id}), limit=1):
            reap_run(context.instance, run, pid, host)
            context.log.warning(f"block {block}: run {run.run_id} lost its process; marked failed, its rerun "
                                f"goes next")
            continue
        requests.append(RunRequest(run_key=f"rerun-of-{run.run_id}", partition_key=block,
                                   tags={PIPELINE_TAG: spec.name, "dagster/priority": "1",
                                         RERUN_OF_TAG: run.run_id}))
    return requests
