"""Runs whose process died: found, marked failed, and their interrupted steps named.

A run worker killed mid-block (OOM, SIGKILL, a machine reboot) leaves its run "started" for ever; with one
run per pipeline at a time it would hold up every later block. ``calmops run``, the file sensor and the
schedule look for such runs before they start new ones.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultRunLauncher,
    RunsFilter,
)

from calmops_dagster.orchestration.run_tags import HOST_TAG, IN_FLIGHT, PID_TAG, PIPELINE_TAG, REAPED_TAG
from calmops_dagster.spec import PipelineSpec


def dead_runs(instance: DagsterInstance, spec: PipelineSpec,
              in_flight: list[DagsterRun] | None = None) -> list[DagsterRun]:
    """The in-flight runs of ``spec`` (``in_flight`` when the caller has read them already) whose process on
    this host no longer exists.

    Three kinds of run are looked after: runs executed in-process by ``calmops run`` and runs launched by the
    local instance's warm run launcher (both carry pid and host tags), and runs launched by Dagster's
    default run launcher (``CALMOPS_RUN_LAUNCHER=dagster``), a subprocess on this host whose pid Dagster
    records in the run's "Started process for run" event. Runs of other launchers (Docker, Kubernetes) are
    left to Dagster's run monitoring.

    A run whose process is gone is read again before it counts as dead: its worker may have reported the
    run's end and exited between the first read and the look at its process (seen under load in `dagster
    dev`: a finished block was requested again). Once the process is gone, every status it wrote is stored.
    """
    dead = []
    if in_flight is None:
        in_flight = instance.get_runs(RunsFilter(tags={PIPELINE_TAG: spec.name}, statuses=IN_FLIGHT))
    for run in in_flight:
        pid, host = _run_process(instance, run)
        if pid is not None and host == socket.gethostname() and not process_alive(pid):
            current = instance.get_run_by_id(run.run_id)
            if current is not None and current.status in IN_FLIGHT:
                dead.append((current, pid, host))
    return dead


def reap_run(instance: DagsterInstance, run: DagsterRun, pid: int, host: str) -> None:
    """Mark a dead run failed and tag it ``calmops/reaped``: its block is pending again and the pipeline's
    run-queue slot is free."""
    instance.report_run_failed(run, f"its process {pid} on {host} is gone (killed mid-run?)")
    instance.add_run_tags(run.run_id, {REAPED_TAG: "true"})


def reap_dead_runs(instance: DagsterInstance, spec: PipelineSpec) -> list[DagsterRun]:
    """Mark failed every run of :func:`dead_runs`. Without this, a run worker killed mid-block (OOM,
    SIGKILL, a machine reboot) would stay "started" for ever and, with one run per pipeline at a time,
    hold up every later block. Returns the runs marked failed."""
    reaped = []
    for run, pid, host in dead_runs(instance, spec):
        reap_run(instance, run, pid, host)
        reaped.append(run)
    return reaped


def interrupted_steps(instance: DagsterInstance, run_id: str) -> list[str]:
    """Steps of a run that started and never finished: its process died (SIGKILL, out of memory) while they
    ran, so no step failure was ever reported for them."""
    started, finished = [], set()
    kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
    for entry in instance.all_logs(run_id, of_type=kinds):
        event = entry.dagster_event
        if event.event_type == DagsterEventType.STEP_START:
            started.append(event.step_key)
        else:
            finished.add(event.step_key)
    return [step for step in started if step not in finished]


def failed_runs(instance: DagsterInstance, spec: PipelineSpec, block: str) -> int:
    """How many runs of ``block`` failed."""
    tags = {PIPELINE_TAG: spec.name, "dagster/partition": block}
    return len(instance.get_run_ids(RunsFilter(tags=tags, statuses=[DagsterRunStatus.FAILURE])))


def times_reaped(instance: DagsterInstance, spec: PipelineSpec, block: str) -> int:
    """How many runs of ``block`` were marked failed by :func:`reap_dead_runs`."""
    tags = {PIPELINE_TAG: spec.name, "dagster/partition": block, REAPED_TAG: "true"}
    return len(instance.get_run_ids(RunsFilter(tags=tags)))


def _run_process(instance: DagsterInstance, run: DagsterRun) -> tuple[int | None, str | None]:
    """The pid and host of the process executing ``run``, when it is a process on a known host."""
    if run.tags.get(PID_TAG):
        return int(run.tags[PID_TAG]), run.tags.get(HOST_TAG)
    if run.status != DagsterRunStatus.STARTED or not isinstance(instance.run_launcher, DefaultRunLauncher):
        return None, None
    for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        pid = data.metadata.get("pid") if data else None
        if pid is not None and str(pid.value).isdigit():
            # the default launcher starts the run worker from the code server, on this host
            return int(pid.value), socket.gethostname()
    return None, None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed child not yet reaped by its parent) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True
