"""A Dagster run launcher whose run workers are forked from a warm process on this host.

The local instance (:mod:`calmops_dagster.orchestration.instance`) names it in its ``dagster.yaml``. It is
Dagster's default launcher with a cheaper start: each run is still its own process, executing
``dagster api execute_run``, but that process is forked from :mod:`calmops_dagster.speedups.warm_run_worker`,
which has already imported Dagster, the pipelines' code and the model libraries. The
warm process is started by the first launch in a process (``dagster dev``'s daemon) and lives as long as it.

Each launched run carries the pid and host of its worker (tags ``calmops/pid`` and ``calmops/host``, as runs
of ``calmops run`` do), which is how it is terminated (SIGTERM, which Dagster's run worker turns into an
interrupt, as a Docker or Kubernetes launcher's stop does), how the daemon's run monitoring checks it, and
how a run whose worker died is found after a restart (:func:`calmops_dagster.orchestration.dead_runs.
reap_dead_runs`). Like Dagster's default launcher it launches on the machine it runs on.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import Any

from dagster import DagsterRun
from dagster._core.errors import DagsterLaunchFailedError
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

from calmops_dagster.orchestration.dead_runs import process_alive
from calmops_dagster.orchestration.run_tags import HOST_TAG, PID_TAG


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run in a process forked from a warm ``warm_run_worker`` process on this host."""

    def __init__(self, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        self._lock = threading.Lock()
        self._server: subprocess.Popen | None = None
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if run.job_code_origin is None:
            raise DagsterLaunchFailedError(f"run {run.run_id} has no code origin to execute")
        args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id,
                              instance_ref=self._instance.get_ref())
        pid = self._fork(serialize_value(args))
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(pid), HOST_TAG: socket.gethostname()})

    def _fork(self, execute_run_args: str) -> int:
        """Ask the warm process for a run worker; start (or restart, once) the warm process as needed."""
        with self._lock:
            for _attempt in range(2):
                server = self._warm_process()
                try:
                    server.stdin.write(execute_run_args + "\n")
                    server.stdin.flush()
                    answer = server.stdout.readline().strip()
                except (BrokenPipeError, ValueError):
                    answer = ""
                if answer.isdigit():
                    return int(answer)
                if answer:
                    raise DagsterLaunchFailedError(answer)
                self._stop_warm_process()  # it died (killed, out of memory): start a new one
            raise DagsterLaunchFailedError("the warm run-worker process exited before starting the run; "
                                           "its error is in this process's standard error")

    def _warm_process(self) -> subprocess.Popen:
        if self._server is None or self._server.poll() is not None:
            self._server = subprocess.Popen(
                [sys.executable, "-m", "calmops_dagster.speedups.warm_run_worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            if self._server.stdout.readline().strip() != "ready":
                self._server.wait()
                raise DagsterLaunchFailedError(
                    f"the warm run-worker process failed to start (exit code {self._server.returncode}); "
                    "its error is in this process's standard error")
        return self._server

    def _stop_warm_process(self) -> None:
        """Close the warm process's input (it exits); its run workers go on."""
        if self._server is not None:
            for stream in (self._server.stdin, self._server.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            self._server.wait()
            self._server = None

    def dispose(self) -> None:
        with self._lock:
            self._stop_warm_process()

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        pid = _local_pid(run)
        if pid is None:
            self._instance.report_engine_event("Cannot terminate: the run has no worker process on this host.",
                                               run, cls=self.__class__)
            return False
        self._instance.report_run_canceling(run)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = _local_pid(run)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no worker process of this run on this host")
        if not process_alive(pid):
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, f"run worker process {pid} is gone")
        return CheckRunHealthResult(WorkerStatus.RUNNING)


def _local_pid(run: DagsterRun) -> int | None:
    """The pid of ``run``'s worker when it was launched on this host."""
    if run.tags.get(PID_TAG) and run.tags.get(HOST_TAG) == socket.gethostname():
        return int(run.tags[PID_TAG])
    return None
