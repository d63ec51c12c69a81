"""``python -m calmops_dagster.speedups.warm_run_worker``: run workers forked from one warm process.

Dagster's default run launcher has the code server spawn a fresh Python process for every run. Before the
run's first step that process imports Dagster, the code location, pandas, scikit-learn, LightGBM and skops
(whose list of trusted estimators walks all of scikit-learn), which takes longer than a block's own math.
This process pays for those imports once. It then reads one run per line on standard
input (a serialized ``ExecuteRunArgs``), forks, and answers the child's pid on standard output.

The child is the run worker, its own process as with Dagster's launcher: it executes the run exactly as
``dagster api execute_run`` does (the command Dagster's Docker and Kubernetes launchers start), and it
imports the code location itself, so a pipeline added after this process started is found. This process
stays single-threaded and opens no database, DuckDB file, OpenMP thread pool or Delta table (delta-rs's
runtime does not survive a fork: :func:`serve` refuses to fork a process that used it), so forking it is safe.
It does load delta-rs's library (``import deltalake``, which starts no runtime), so that run workers do not
each map and relocate that large library before their first step.
It exits when its standard input closes (the launcher's process ended).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import traceback

from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import deserialize_value

from calmops_dagster.orchestration.run_scope import RUN_JOB_ENV
from calmops_dagster.store import delta_tables

#: Why a process that used delta-rs is not forked.
FORK_AFTER_DELTA = ("the warm process has used delta-rs (a Delta table was opened in it), whose runtime does "
                    "not survive a fork: a run forked from it would hang; restart dagster dev")

#: What a block's run imports, the code location module (``calmops_dagster.definitions``, which builds the
#: pipelines from the specs on disk when imported) excepted. A module missing here is imported by the run.
PRELOADED_MODULES = (
    "dagster",
    "dagster._cli.api",
    "pandas",
    "deltalake",
    "lightgbm",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "calmops_dagster.orchestration.pipeline_defs",
    "calmops_dagster.steps.assess_block",
    "calmops_dagster.steps.train_challenger",
    "calmops_dagster.steps.decide_champion",
    "calmops_dagster.steps.estimated_performance",
    "calmops_dagster.learning.block_assessment",
    "calmops_dagster.learning.evaluation",
    "calmops_dagster.learning.retrain_modes",
    "calmops_dagster.reports.block_report",
    "calmops_dagster.resources",
)


def preload() -> None:
    """Import :data:`PRELOADED_MODULES` and skops (with its walk over scikit-learn's estimators), and open
    and close the instance of ``DAGSTER_HOME`` once: its storage classes, SQLAlchemy and alembic, imported
    by every run, and the empty run database the pooled event log copies for each run. Nothing stays open and
    no thread is left running (checked), so forking is safe.
    """
    for name in PRELOADED_MODULES:
        importlib.import_module(name)
    from calmops_dagster.store.skops_io import skops_io

    skops_io()
    if os.environ.get("DAGSTER_HOME"):
        from dagster import DagsterInstance

        from calmops_dagster.speedups.sqlite_storage import PooledSqliteEventLogStorage

        with DagsterInstance.get() as instance:
            instance.get_runs(limit=1)
            if isinstance(instance.event_log_storage, PooledSqliteEventLogStorage):
                instance.event_log_storage.empty_run_database()  # each run's database is a copy of it
    if threading.active_count() != 1:
        raise RuntimeError(f"the warm process must be single-threaded to fork; running: {threading.enumerate()}")
    if delta_tables.used_in_this_process():
        raise RuntimeError(FORK_AFTER_DELTA)


def execute_run(execute_run_args: str) -> int:
    """``dagster api execute_run EXECUTE_RUN_ARGS`` in this process; its exit code."""
    from dagster._cli.api import execute_run_command

    try:
        execute_run_command.main(args=[execute_run_args], prog_name="dagster api execute_run",
                                 standalone_mode=False)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # noqa: BLE001 -- the run worker reports, then exits with a failure code
        traceback.print_exc()
        return 1
    return 0


def run_job(execute_run_args: str) -> str:
    """The name of the job a serialized ``ExecuteRunArgs`` runs."""
    return deserialize_value(execute_run_args, ExecuteRunArgs).job_origin.job_name


def _become_run_worker(execute_run_args: str) -> None:
    """In the forked child: let go of the server's pipes and signal settings, name the run's job for the code
    location (which then builds only that job's pipeline: :mod:`~calmops_dagster.orchestration.run_scope`),
    run, exit. Never returns."""
    code = 1
    try:
        os.environ[RUN_JOB_ENV] = run_job(execute_run_args)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the run's own subprocesses are waited for
        signal.signal(signal.SIGINT, signal.default_int_handler)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(2, 1)  # the run's prints go where the server's errors go (the `dagster dev` log)
        os.close(devnull)
        code = execute_run(execute_run_args)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(requests, answers) -> None:
    """Fork one run worker per line of ``requests`` and write its pid (or ``error: ...``) to ``answers``."""
    for line in requests:
        execute_run_args = line.strip()
        if not execute_run_args:
            continue
        if delta_tables.used_in_this_process():
            answers.write(f"error: {FORK_AFTER_DELTA}\n")
            answers.flush()
            continue
        try:
            pid = os.fork()
        except OSError as exc:
            answers.write(f"error: cannot fork a run worker: {exc}\n")
        else:
            if pid == 0:
                _become_run_worker(execute_run_args)
            answers.write(f"{pid}\n")
        answers.flush()


def main() -> None:
    # Ctrl-C in the `dagster dev` terminal reaches the whole process group: end quietly, like the daemon.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # finished run workers are reaped by the kernel; their outcome is in Dagster's event log
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    preload()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    serve(sys.stdin, sys.stdout)


if __name__ == "__main__":
    main()
