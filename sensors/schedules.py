"""Schedules from the spec (``cron`` or CalmOps' ``interval``): run every block not yet processed."""


from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from calmops_dagster.runner import PIPELINE_TAG, pending_blocks
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


def build_schedule(spec: PipelineSpec, job):
    """A schedule requesting one run per pending block (none for blocks already queued or running)."""

    @schedule(
        name=f"{spec.name}_schedule",
        job=job,
        cron_schedule=cron_of(spec.schedule),
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Processes pending blocks of {spec.name} on {cron_of(spec.schedule)}.",
    )
    def pipeline_schedule(context: ScheduleEvaluationContext):
        blocks = pending_blocks(context.instance, spec)
        if not blocks:
            return SkipReason("no pending blocks")
        stamp = context.scheduled_execution_time.isoformat()
        return [RunRequest(run_key=f"{block}:{stamp}", partition_key=block, tags={PIPELINE_TAG: spec.name})
                for block in blocks]

    return pipeline_schedule
