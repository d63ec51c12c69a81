"""The circuit breaker's two sensors, shared by every pipeline of the code location.

``calmops_run_failures`` (a run-failure sensor) counts a failed run of a pipeline's job as a failure of that
pipeline (its ``calmops/pipeline`` tag) when its ``challenger_model`` or ``champion_model`` step failed, or was
interrupted because the run's process died (a step that started and never finished). Any other failed run
changes nothing, including a run stopped by the blocking check ``champion_meets_thresholds`` (a performance
finding that retraining should fix). After counting, it sends the block's alerts (``breaker_open`` and the
block's events its failed run did not get to send; :mod:`calmops_dagster.interfaces.alerts`).
``calmops_run_successes`` resets the pipeline's count when a run succeeds. Both call
:func:`calmops_dagster.orchestration.breaker_outcomes.record_run_outcome`, which ignores a run id already counted, so runs
executed in-process by ``calmops run`` (which records its own outcomes) are not counted twice. The transitions
are the pure functions of :mod:`calmops_dagster.steps.circuit_breaker`.

One pair for all pipelines, not one per pipeline: each tick of a run-status sensor is one read of the
instance's run-status events, so a pair per pipeline made the daemon repeat that read twice per pipeline
every interval, whether or not any run had finished.
"""

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunStatusSensorContext,
    run_failure_sensor,
    run_status_sensor,
)

from calmops_dagster.assets.block_alerts import alert_run
from calmops_dagster.orchestration.breaker_outcomes import breaker_step_failures, record_run_outcome
from calmops_dagster.orchestration.dagster_control import RUN_FAILURES_SENSOR, RUN_SUCCESSES_SENSOR
from calmops_dagster.orchestration.dead_runs import interrupted_steps
from calmops_dagster.orchestration.run_tags import PIPELINE_TAG
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec

#: Seconds between ticks. A run-status sensor handles at most 5 finished runs per tick (Dagster's
#: ``DAGSTER_RUN_STATUS_SENSOR_PROCESS_LIMIT``), so this also bounds how many runs per minute it keeps up with.
INTERVAL_SECONDS = 5


def _error_text(event) -> str:
    error = event.step_failure_data.error if event.step_failure_data else None
    while error is not None and error.cause is not None:
        error = error.cause
    return f"{event.step_key}: {error.message.strip() if error else 'failed'}"


def build_breaker_sensors(specs: list[PipelineSpec], jobs: list) -> list:
    """The failure and success sensors of the circuit breakers of ``specs`` (on by default), watching
    ``jobs``, the pipelines' block jobs; none when no spec has a breaker (all prediction-only)."""
    by_name = {spec.name: spec for spec in specs if not spec.prediction_only}
    monitored = [job for job in jobs if job.tags.get(PIPELINE_TAG) in by_name]
    if not monitored:
        return []
    serves = f"Serves the {len(by_name)} pipeline(s) of this code location that have a breaker."

    @run_failure_sensor(name=RUN_FAILURES_SENSOR, monitored_jobs=monitored,
                        minimum_interval_seconds=INTERVAL_SECONDS, default_status=DefaultSensorStatus.RUNNING,
                        description="Counts a failed training/promotion in the circuit breaker of the run's "
                                    f"pipeline and sends its alerts. {serves}")
    def failures(context: RunFailureSensorContext, metrics: MetricsStoreResource, home: CalmOpsHomeResource):
        run = context.dagster_run
        spec = by_name.get(run.tags.get(PIPELINE_TAG))
        if spec is None:
            return  # not a pipeline's block run: nothing to count
        events = breaker_step_failures(context.get_step_failure_events())
        failed, messages = [e.step_key for e in events], [_error_text(e) for e in events]
        for step in interrupted_steps(context.instance, run.run_id):
            failed.append(step)
            messages.append(f"{step}: interrupted (the run's process died while it ran)")
        state, event = record_run_outcome(metrics.store(), spec, run.run_id, run.tags.get("dagster/partition"),
                                          failed, messages, run_failed=True)
        context.log.info(f"circuit breaker of {spec.name}: {event or 'unchanged'} -> {state.status} "
                         f"({state.consecutive_failures} consecutive failures)")
        # the block's alerts (breaker_open, and its other events, which the failed run never reached)
        alert_run(spec, home.paths, metrics.store(), run.tags.get("dagster/partition"), context.instance, run.run_id,
                  log=context.log)

    @run_status_sensor(run_status=DagsterRunStatus.SUCCESS, name=RUN_SUCCESSES_SENSOR, monitored_jobs=monitored,
                       minimum_interval_seconds=INTERVAL_SECONDS, default_status=DefaultSensorStatus.RUNNING,
                       description="Resets the failure count of the circuit breaker of the run's pipeline when "
                                   f"a run succeeds. {serves}")
    def successes(context: RunStatusSensorContext, metrics: MetricsStoreResource):
        run = context.dagster_run
        spec = by_name.get(run.tags.get(PIPELINE_TAG))
        if spec is None:
            return
        record_run_outcome(metrics.store(), spec, run.run_id, run.tags.get("dagster/partition"), [])

    return [failures, successes]
