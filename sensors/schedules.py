"""Schedules from the spec (``cron`` or CalmOps' ``interval``): ingest ``data_dir`` as the sensor does, then
run every block not yet processed at its current version."""


from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from calmops_dagster.orchestration.dead_runs import failed_runs
from calmops_dagster.orchestration.fair_queue import PRIORITY_TAG, block_priorities, runs_ahead
from calmops_dagster.orchestration.headless_runs import pending_blocks
from calmops_dagster.orchestration.ingest_registration import register_new_blocks
from calmops_dagster.orchestration.run_tags import PIPELINE_TAG
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec, ScheduleConfig


def cron_of(config: ScheduleConfig) -> str:
    """The cron string of a schedule config; intervals become ``*/N`` minutes, hours or days.

    >>> cron_of(ScheduleConfig(type="interval", params={"minutes": 10}))
    '*/10 * * * *'
    >>> cron_of(ScheduleConfig(type="interval", params={"hours": 2}))
    '0 */2 * * *'
    """
    if config.type == "cron":
        return config.params["cron"]
    (unit, value), = config.params.items()
    return {"minutes": f"*/{value} * * * *", "hours": f"0 */{value} * * *", "days": f"0 0 */{value} * *"}[unit]


#: A block whose runs failed this many times is no longer requested by the schedule: a block that fails
#: the same way every time would otherwise be retried, and maybe retrained, on every tick for months.
#: ``calmops relaunch`` and ``calmops run`` still run it.
MAX_SCHEDULED_ATTEMPTS = 3


def build_schedule(spec: PipelineSpec, job):
    """A schedule that ingests ``data_dir`` (new partitions, quarantine) and requests one run per pending
    block (none for blocks already queued or running, or whose runs failed :data:`MAX_SCHEDULED_ATTEMPTS`
    times)."""

    @schedule(
        name=f"{spec.name}_schedule",
        job=job,
        cron_schedule=cron_of(spec.schedule),
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Processes pending blocks of {spec.name} on {cron_of(spec.schedule)}.",
    )
    def pipeline_schedule(context: ScheduleEvaluationContext, home: CalmOpsHomeResource,
                          metrics: MetricsStoreResource):
        db = metrics.store()
        register_new_blocks(context.instance, spec, db, home.model_store(spec.name), context.log)
        pending = pending_blocks(context.instance, spec, metrics=db)
        blocks = [b for b in pending if failed_runs(context.instance, spec, b) < MAX_SCHEDULED_ATTEMPTS]
        for block in [b for b in pending if b not in blocks]:
            context.log.warning(f"block {block} failed {MAX_SCHEDULED_ATTEMPTS} times; the schedule leaves it "
                                f"for `calmops relaunch {spec.name}`")
        if not blocks:
            return SkipReason("no pending blocks" if not pending else "every pending block has failed too often")
        stamp = context.scheduled_execution_time.isoformat()
        priorities = block_priorities(runs_ahead(context.instance, PIPELINE_TAG, spec.name), len(blocks))
        return [RunRequest(run_key=f"{block}:{stamp}", partition_key=block,
                           tags={PIPELINE_TAG: spec.name, PRIORITY_TAG: priority})
                for block, priority in zip(blocks, priorities, strict=True)]

    return pipeline_schedule
