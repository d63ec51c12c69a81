"""Stopped sensors and schedules set running again in the instance's stored state, without Dagster's CLI.

``calmops relaunch`` without a running ``dagster dev`` starts a pipeline's stopped sensors and schedule for
the daemon's next start. Dagster's public way, ``dagster sensor start`` (what
:func:`calmops_dagster.orchestration.dagster_control.start_instigators_with_dagster_cli` runs with the
speed-ups off), loads the code location in a process of its own for every call: several seconds each. Here
the stored states are read and written directly, which takes Dagster's private ``InstigatorStatus``.
An instigator that was never stopped has no stored state and runs by default; nothing to do for it.
"""

from __future__ import annotations

from dagster._core.scheduler.instigation import InstigatorStatus

from calmops_dagster.orchestration.dagster_control import instigator_names


def start_stopped_instigators(instance, pipeline: str, has_schedule: bool) -> list[str]:
    """Set stored, stopped states of the pipeline's sensors and schedule back to running; returns what
    happened, one line each."""
    sensors, schedules = instigator_names(pipeline, has_schedule)
    wanted = set(sensors) | set(schedules)
    done = []
    for state in instance.all_instigator_state():
        if state.instigator_name in wanted and state.status == InstigatorStatus.STOPPED:
            instance.update_instigator_state(state.with_status(InstigatorStatus.RUNNING))
            done.append(f"{state.instigator_type.value.lower()} {state.instigator_name}: RUNNING")
    return done
