"""The circuit breaker's sensors: count a pipeline's training/promotion failures from finished runs.

``<name>_run_failures`` (a run-failure sensor) counts a failed run of the pipeline's job as a failure when
its ``challenger_model`` or ``champion_model`` step failed, or was interrupted because the run's process
died (a step that started and never finished). Any other failed run changes nothing, including a run
stopped by the blocking check ``champion_meets_thresholds`` (a performance finding that retraining should
fix). After counting, it sends the block's alerts (``breaker_open`` and the block's events its failed
run did not get to send; :mod:`calmops_dagster.interfaces.alerts`). ``<name>_run_successes`` resets the count when a run succeeds. Both call
:func:`calmops_dagster.orchestration.runner.record_run_outcome`, which ignores a run id already counted, so runs executed
in-process by ``calmops run`` (which records its own outcomes) are not counted twice. The transitions are
the pure functions of :mod:`calmops_dagster.orchestration.circuit_breaker`.
"""

from calmops_dagster.assets.block_alerts import alert_run
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunStatusSensorContext,
    run_failure_sensor,
    run_status_sensor,
)

from calmops_dagster.orchestration.runner import breaker_step_failures, interrupted_steps, record_run_outcome
from calmops_dagster.spec import PipelineSpec


def _error_text(event) -> str:
    error = event.step_failure_data.error if event.step_failure_data else None
    while error is not None and error.cause is not None:
        error = error.cause
    return f"{event.step_key}: {error.message.strip() if error else 'failed'}"


def build_breaker_sensors(spec: PipelineSpec, job) -> list:
    """The failure and success sensors of ``spec``'s circuit breaker (on by default)."""

    @run_failure_sensor(name=f"{spec.name}_run_failures", monitored_jobs=[job], minimum_interval_seconds=10,
                        default_status=DefaultSensorStatus.RUNNING,
                        description=f"Counts failed training/promotion of {spec.name} in its circuit breaker.")
    def failures(context: RunFailureSensorContext, metrics: MetricsStoreResource, home: CalmOpsHomeResource):
        events = breaker_step_failures(context.get_step_failure_events())
        run = context.dagster_run
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

    @run_status_sensor(run_status=DagsterRunStatus.SUCCESS, name=f"{spec.name}_run_successes",
                       monitored_jobs=[job], minimum_interval_seconds=10,
                       default_status=DefaultSensorStatus.RUNNING,
                       description=f"Resets the failure count of {spec.name}'s circuit breaker on success.")
    def successes(context: RunStatusSensorContext, metrics: MetricsStoreResource):
        run = context.dagster_run
        record_run_outcome(metrics.store(), spec, run.run_id, run.tags.get("dagster/partition"), [])

    return [failures, successes]
