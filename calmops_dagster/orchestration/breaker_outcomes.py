"""The circuit breaker's glue: each finished run of a pipeline counts in its breaker.

The transitions themselves are pure (:mod:`calmops_dagster.steps.circuit_breaker`); here a run's failed
steps are read from its Dagster events and the new state is written to DuckDB.
"""

from __future__ import annotations

from datetime import UTC, datetime

from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps import circuit_breaker
from calmops_dagster.store.metrics_store import MetricsStore


def record_run_outcome(metrics: MetricsStore, spec: PipelineSpec, run_id: str, block: str | None,
                       failed_steps: list[str], messages: list[str] | None = None, run_failed: bool = False):
    """Count a finished run of ``spec`` in its circuit breaker: a failed training/promotion step is a
    failure, a successful run is a success. Runs that failed elsewhere (e.g. an unreadable block, or
    ``run_failed`` with no failed step named) and repeats of a run id already counted change nothing.
    Returns ``(state, event)``."""
    if spec.prediction_only:
        return metrics.breaker_state(spec.name), None
    step = circuit_breaker.failed_breaker_step(failed_steps, spec.name)
    now = datetime.now(UTC)
    if step is not None:
        reason = next((m for m in messages or [] if step in m), f"{step} failed")[:500]
        config = spec.circuit_breaker

        def transition(state):
            return circuit_breaker.on_failure(state, config.max_failures, config.backoff_minutes, now,
                                              f"block {block}: {reason}")
    elif failed_steps or run_failed:
        return metrics.breaker_state(spec.name), None
    else:
        def transition(state):
            return circuit_breaker.on_success(state, now)
    return metrics.update_breaker(spec.name, transition, run_id=run_id, block=block, step=step)


def breaker_step_failures(events) -> list:
    """The step failure events that may count in the circuit breaker: all but a blocking asset check that
    failed. A champion below its thresholds is a performance finding, which retraining is there to fix;
    counting it would pause retraining exactly when it is needed."""
    return [event for event in events if event.is_step_failure and not is_check_failure(event)]


def is_check_failure(event) -> bool:
    """Whether a step failure event is a blocking asset check that failed (not an error of the step)."""
    error = event.step_failure_data.error if event.step_failure_data else None
    while error is not None:
        if error.cls_name == "DagsterAssetCheckFailedError":
            return True
        error = error.cause
    return False


def close_breaker(metrics: MetricsStore, spec: PipelineSpec, reason: str = "closed by calmops relaunch"):
    return metrics.update_breaker(spec.name, lambda _state: circuit_breaker.reset(reason))
