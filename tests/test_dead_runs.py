"""Runs whose process died (a run worker of ``dagster dev`` SIGKILLed, OOM) are marked failed and rerun once.

The instance is a real local one with Dagster's default run launcher; the runs are real run records whose
"Started process for run" engine event names a pid, as the run worker writes it.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import evaluate_file_sensor
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    build_run_status_sensor_context,
)
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.plan.objects import StepSuccessData
from dagster._core.test_utils import create_run_for_test

from calmops_dagster.orchestration.dead_runs import reap_dead_runs
from calmops_dagster.orchestration.headless_runs import pending_blocks
from calmops_dagster.orchestration.pipeline_defs import (
    build_breaker_definitions,
    build_pipeline_definitions,
    job_name,
)
from calmops_dagster.orchestration.run_tags import PIPELINE_TAG, REAPED_TAG, RERUN_OF_TAG
from calmops_dagster.resources import build_resources
from calmops_dagster.store.metrics_store import MetricsStore


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster_home").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster_home")) as inst:
        yield inst


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def started_run(instance, spec, block: str, pid: int):
    """A run of ``block`` in status STARTED whose worker process is ``pid``."""
    run = create_run_for_test(instance, job_name=job_name(spec), status=DagsterRunStatus.STARTED,
                              tags={PIPELINE_TAG: spec.name, "dagster/partition": block})
    instance.report_engine_event(f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid))
    return run


def status(instance, run):
    return instance.get_run_by_id(run.run_id).status


def test_sensor_marks_a_dead_run_failed_and_reruns_its_block_once(demo_spec, home, instance):
    instance.add_dynamic_partitions(demo_spec.partitions_name, ["1", "2"])
    dead = started_run(instance, demo_spec, "1", dead_pid())
    alive = started_run(instance, demo_spec, "2", os.getpid())

    # first tick: the rerun is requested while the dead run still holds the run-queue slot ...
    result = evaluate_file_sensor(demo_spec, home, instance)
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [("1", f"rerun-of-{dead.run_id}")]
    request = result.run_requests[0]
    assert request.tags["dagster/priority"] == "1"  # before runs queued for later blocks
    assert request.tags[RERUN_OF_TAG] == dead.run_id
    assert status(instance, dead) == DagsterRunStatus.STARTED
    # ... the daemon starts it; next tick: the dead run is marked failed (the queue would now pick the rerun)
    worker = subprocess.Popen(["sleep", "120"])
    rerun = started_run(instance, demo_spec, "1", worker.pid)
    instance.add_run_tags(rerun.run_id, request.tags)  # carries calmops/rerun_of
    assert not (evaluate_file_sensor(demo_spec, home, instance).run_requests or [])
    assert status(instance, dead) == DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(dead.run_id).tags[REAPED_TAG] == "true"
    assert status(instance, rerun) == status(instance, alive) == DagsterRunStatus.STARTED

    # the rerun's worker dies too: marked failed, but not requested a third time
    worker.kill()
    worker.wait()
    again = evaluate_file_sensor(demo_spec, home, instance)
    assert not (again.run_requests or [])
    assert status(instance, rerun) == DagsterRunStatus.FAILURE
    # ... and the block is pending for `calmops relaunch` / the schedule
    assert pending_blocks(instance, demo_spec) == ["1"]


def test_runs_without_a_known_process_are_left_alone(demo_spec, instance):
    # no engine event yet (the worker has not started): nothing to judge by
    waiting = create_run_for_test(instance, job_name=job_name(demo_spec), status=DagsterRunStatus.STARTED,
                                  tags={PIPELINE_TAG: demo_spec.name, "dagster/partition": "1"})
    # another pipeline's dead run is not this pipeline's business
    other = create_run_for_test(instance, job_name="other_job", status=DagsterRunStatus.STARTED,
                                tags={PIPELINE_TAG: "other", "dagster/partition": "1"})
    instance.report_engine_event("Started process", other, EngineEventData.in_process(dead_pid()))
    assert reap_dead_runs(instance, demo_spec) == []
    assert status(instance, waiting) == status(instance, other) == DagsterRunStatus.STARTED


def test_a_run_that_ends_while_it_is_judged_is_not_rerun(demo_spec, home, instance, monkeypatch):
    """The worker reports the run's success and exits between the sensor's read of the in-flight runs and its
    look at the process (seen in `dagster dev` under load: a finished block was requested again)."""
    from calmops_dagster.orchestration import dead_runs

    instance.add_dynamic_partitions(demo_spec.partitions_name, ["1"])
    worker = subprocess.Popen(["sleep", "120"])
    run = started_run(instance, demo_spec, "1", worker.pid)

    def worker_ends_now(pid: int) -> bool:
        success = DagsterEvent(DagsterEventType.RUN_SUCCESS.value, run.job_name, message="Finished.")
        instance.report_dagster_event(success, run.run_id)
        worker.kill()
        worker.wait()
        return False

    monkeypatch.setattr(dead_runs, "process_alive", worker_ends_now)
    assert not (evaluate_file_sensor(demo_spec, home, instance).run_requests or [])
    assert status(instance, run) == DagsterRunStatus.SUCCESS
    assert REAPED_TAG not in instance.get_run_by_id(run.run_id).tags


def step_started(instance, run, step_key: str) -> None:
    event = DagsterEvent(DagsterEventType.STEP_START.value, run.job_name, step_key=step_key,
                         message=f"Started execution of step {step_key}.")
    instance.report_dagster_event(event, run.run_id)


def failure_sensor_sees(spec, home, instance, run) -> None:
    """What the daemon does once a run failed: evaluate the pipeline's run-failure sensor on it."""
    pipeline = build_pipeline_definitions(spec)
    (sensor,) = [s for s in build_breaker_definitions([spec], [pipeline]).sensors if s.name == "calmops_run_failures"]
    failure = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)[-1]
    context = build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=failure.dagster_event, dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run.run_id),
        resources={k: build_resources(home)[k] for k in ("home", "metrics")}).for_run_failure()
    sensor(context)


def test_a_run_killed_while_training_counts_in_the_breaker_and_other_dead_runs_do_not_reset_it(
        demo_spec, home, instance):
    metrics = MetricsStore(home.metrics_db)
    training = started_run(instance, demo_spec, "1", dead_pid())
    step_started(instance, training, f"{demo_spec.name}__data_block")
    instance.report_dagster_event(DagsterEvent(DagsterEventType.STEP_SUCCESS.value, training.job_name,
                                               step_key=f"{demo_spec.name}__data_block",
                                               event_specific_data=StepSuccessData(12.0)), training.run_id)
    step_started(instance, training, f"{demo_spec.name}__challenger_model")
    loading = started_run(instance, demo_spec, "2", dead_pid())
    step_started(instance, loading, f"{demo_spec.name}__data_block")
    reap_dead_runs(instance, demo_spec)

    failure_sensor_sees(demo_spec, home, instance, training)
    state = metrics.breaker_state(demo_spec.name)
    assert state.consecutive_failures == 1 and "challenger_model: interrupted" in state.last_reason
    failure_sensor_sees(demo_spec, home, instance, loading)  # died loading data: not training, not a success
    assert metrics.breaker_state(demo_spec.name).consecutive_failures == 1
