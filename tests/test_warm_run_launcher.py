"""The warm run launcher: runs as processes forked from a warm process, terminated, checked, reaped.

One local instance whose ``dagster.yaml`` is the one ``calmops`` writes (so the launcher is the one named
there) launches runs of the tiny jobs below; the run workers are real processes that import this module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, in_process_executor, job, op, reconstructable
from dagster._core.launcher import WorkerStatus
from live_processes import wait_for

from calmops_dagster.errors import CalmOpsError
from calmops_dagster.orchestration.dead_runs import process_alive
from calmops_dagster.orchestration.instance import instance_yaml, prepare_instance
from calmops_dagster.orchestration.run_scope import RUN_JOB_ENV
from calmops_dagster.orchestration.run_tags import HOST_TAG, PID_TAG
from calmops_dagster.speedups.warm_run_launcher import WarmRunLauncher
from calmops_dagster.speedups.warm_run_worker import PRELOADED_MODULES
from calmops_dagster.store.paths import CalmOpsHome


@op
def write_marker():
    Path(os.environ["WARM_TEST_MARKER"]).write_text(str(os.getpid()))


@job(executor_def=in_process_executor)
def marker_job():
    write_marker()


@op
def write_run_job():
    Path(os.environ["WARM_TEST_MARKER"]).write_text(os.environ.get(RUN_JOB_ENV, "unset"))


@job(executor_def=in_process_executor)
def run_job_marker_job():
    write_run_job()


@op
def wait_a_long_time():
    Path(os.environ["WARM_TEST_MARKER"]).write_text("started")
    time.sleep(600)


@job(executor_def=in_process_executor)
def slow_job():
    wait_a_long_time()


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    saved = {key: os.environ.get(key) for key in ("CALMOPS_HOME", "DAGSTER_HOME", "WARM_TEST_MARKER", "PYTHONPATH")}
    os.environ["CALMOPS_HOME"] = str(root / "home")
    # the run workers import the jobs above from this module, by name, as the test process does
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), saved["PYTHONPATH"]]))
    os.environ["WARM_TEST_MARKER"] = str(root / "marker")
    prepare_instance(CalmOpsHome.from_env())
    with DagsterInstance.get() as instance:
        yield instance
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def launch(instance, job_def):
    recon = reconstructable(job_def)
    run = instance.create_run_for_job(job_def, job_code_origin=recon.get_python_origin())
    instance.launch_run(run.run_id, workspace=None)
    return instance.get_run_by_id(run.run_id)


def finished(instance, run_id):
    run = instance.get_run_by_id(run_id)
    return run if run.is_finished else None


def test_the_local_instance_names_the_warm_launcher_unless_told_otherwise(monkeypatch, instance):
    assert isinstance(instance.run_launcher, WarmRunLauncher)
    monkeypatch.setenv("CALMOPS_RUN_LAUNCHER", "dagster")
    assert "run_launcher" not in instance_yaml(Path("/tmp/home/dagster"))
    monkeypatch.setenv("CALMOPS_RUN_LAUNCHER", "fast")
    with pytest.raises(CalmOpsError, match="CALMOPS_RUN_LAUNCHER='fast'"):
        instance_yaml(Path("/tmp/home/dagster"))


def test_what_the_warm_process_preloads_is_found_outside_the_checkout(tmp_path):
    """``dagster dev`` may run anywhere: every preloaded module must be importable from a folder that is not the
    repository (the wiring folders install as ``calmops_dagster.<name>`` only)."""
    code = ("import importlib.util, json, sys\n"
            "print(json.dumps([m for m in json.loads(sys.argv[1]) if importlib.util.find_spec(m) is None]))")
    result = subprocess.run([sys.executable, "-c", code, json.dumps(PRELOADED_MODULES)], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr[-2000:]


def test_a_run_is_its_own_process_forked_from_the_warm_one(instance):
    marker = Path(os.environ["WARM_TEST_MARKER"])
    marker.unlink(missing_ok=True)
    launched = launch(instance, marker_job)
    # the launcher tags the run with its worker once the fork answers: a run this small may finish first
    run = wait_for(lambda: (r := finished(instance, launched.run_id)) and PID_TAG in r.tags and r, 180,
                   "the run to finish, tagged with its worker")
    assert run.status == DagsterRunStatus.SUCCESS
    worker = int(marker.read_text())
    assert run.tags[PID_TAG] == str(worker) and worker not in (os.getpid(), instance.run_launcher._server.pid)
    assert run.tags[HOST_TAG]
    messages = [e.dagster_event.message for e in instance.all_logs(run.run_id) if e.dagster_event]
    started = [message for message in messages if message and message.startswith("Started process for run")]
    assert started == [f"Started process for run (pid: {worker})."]
    wait_for(lambda: not process_alive(worker), 60, "the run worker to exit")
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.NOT_FOUND


def test_the_run_worker_names_its_runs_job_for_the_code_location(instance):
    """So the code location builds only the pipeline of that job (calmops_dagster.orchestration.run_scope)."""
    marker = Path(os.environ["WARM_TEST_MARKER"])
    marker.unlink(missing_ok=True)
    launched = launch(instance, run_job_marker_job)
    run = wait_for(lambda: finished(instance, launched.run_id), 180, "the run to finish")
    assert run.status == DagsterRunStatus.SUCCESS
    assert marker.read_text() == "run_job_marker_job"
    assert RUN_JOB_ENV not in os.environ


def test_terminating_a_run_stops_its_worker_and_cancels_it(instance):
    marker = Path(os.environ["WARM_TEST_MARKER"])
    marker.unlink(missing_ok=True)
    launched = launch(instance, slow_job)
    wait_for(marker.exists, 180, "the slow op to start")
    run = instance.get_run_by_id(launched.run_id)
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    assert instance.run_launcher.terminate(run.run_id)
    run = wait_for(lambda: finished(instance, run.run_id), 120, "the run to stop")
    assert run.status == DagsterRunStatus.CANCELED
    assert not instance.run_launcher.terminate(run.run_id)  # finished: nothing to stop


def test_a_dead_warm_process_is_replaced_at_the_next_launch(instance):
    launcher = instance.run_launcher
    if launcher._server is None:
        launch(instance, marker_job)
    old = launcher._server
    os.kill(old.pid, signal.SIGKILL)
    old.wait()
    launched = launch(instance, marker_job)
    run = wait_for(lambda: finished(instance, launched.run_id), 180, "the run to finish")
    assert run.status == DagsterRunStatus.SUCCESS
    assert launcher._server is not old and launcher._server.poll() is None
