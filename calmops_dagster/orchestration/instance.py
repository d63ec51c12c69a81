"""The local Dagster instance under ``CALMOPS_HOME/dagster``, shared by ``dagster dev`` and ``calmops run``.

Its ``dagster.yaml`` keeps Dagster's embedded SQLite storage and adds a run queue that lets at most one run
per pipeline (tag ``calmops/pipeline``) execute at a time (queued runs are looked at every second), so blocks
are processed one by one, in the order their runs were requested, and one pipeline's runs never race for its
champion. With the speed-ups on (:mod:`calmops_dagster.speedups`, the default) the storage keeps its
connections open (``PooledSqliteStorage``) and runs are launched by ``WarmRunLauncher`` (each run its own
process, forked from a process that has already imported the libraries), or by Dagster's default launcher
when the environment sets ``CALMOPS_RUN_LAUNCHER=dagster``. ``CALMOPS_DAGSTER_SPEEDUPS=0`` writes stock
Dagster: ``storage: sqlite`` on the same files and the default run launcher.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from calmops_dagster.errors import CalmOpsError
from calmops_dagster.speedups import SWITCH, speedups_on
from calmops_dagster.store.atomic import write_text_atomic
from calmops_dagster.store.paths import CalmOpsHome

POOLED_STORAGE_YAML = """\
# Written by calmops (calmops_dagster/orchestration/instance.py).
# Dagster's embedded SQLite storage under this folder (the same files as `storage: sqlite`), keeping each
# database's connections open between statements instead of making an engine per statement (a speed-up:
# CALMOPS_DAGSTER_SPEEDUPS=0 writes `storage: sqlite`); every calmops command rewrites the folder's path if
# the home has moved
storage:
  custom:
    module: calmops_dagster.speedups.sqlite_storage
    class: PooledSqliteStorage
    config:
      base_dir: {base_dir}
"""

SQLITE_STORAGE_YAML = """\
# Written by calmops (calmops_dagster/orchestration/instance.py), speed-ups off (CALMOPS_DAGSTER_SPEEDUPS=0).
# Dagster's embedded SQLite storage under this folder; every calmops command rewrites the folder's path if
# the home has moved
storage:
  sqlite:
    base_dir: {base_dir}
"""

INSTANCE_YAML = """\
run_queue:
  max_concurrent_runs: 4
  # look for queued runs every second (Dagster's default: 5 s), so a block's run starts soon after the
  # sensor asked for it
  dequeue_interval_seconds: 1
  tag_concurrency_limits:
    - key: "calmops/pipeline"
      value:
        applyLimitPerUniqueValue: true
      limit: 1
# the daemon evaluates sensors (one file sensor and two run-status sensors for all pipelines, a labels
# sensor per pipeline with delayed labels) and schedules in 4 threads, not one after the other; the runs one
# tick of the file sensor requests (many pipelines' blocks) are submitted by 4 threads, not one after the other
sensors:
  use_threads: true
  num_workers: 4
  num_submit_workers: 4
schedules:
  use_threads: true
  num_workers: 4
# DEBUG lines (the IO manager's "Loading partition ..." / "Writing file at ...", about a quarter of a
# run's events) are not stored: every stored event is a SQLite write
python_logs:
  python_log_level: INFO
telemetry:
  enabled: false
"""

WARM_RUN_LAUNCHER_YAML = """\
# each run is its own process, forked from one that has already imported Dagster and the model libraries
# (a speed-up; CALMOPS_RUN_LAUNCHER=dagster or CALMOPS_DAGSTER_SPEEDUPS=0: Dagster's default launcher, a fresh
# process per run)
run_launcher:
  module: calmops_dagster.speedups.warm_run_launcher
  class: WarmRunLauncher
"""

#: ``CALMOPS_RUN_LAUNCHER``: ``warm`` (the default with the speed-ups on) or ``dagster``.
RUN_LAUNCHERS = ("warm", "dagster")


def instance_yaml(dagster_home: Path) -> str:
    """The ``dagster.yaml`` of the local instance in ``dagster_home``: with the speed-ups on, the pooled
    storage and the run launcher ``CALMOPS_RUN_LAUNCHER`` names; with them off, Dagster's own."""
    speedups = speedups_on()
    launcher = os.environ.get("CALMOPS_RUN_LAUNCHER") or ("warm" if speedups else "dagster")
    if launcher not in RUN_LAUNCHERS:
        raise CalmOpsError(f"CALMOPS_RUN_LAUNCHER={launcher!r}: expected one of {', '.join(RUN_LAUNCHERS)}")
    if launcher == "warm" and not speedups:
        raise CalmOpsError(f"CALMOPS_RUN_LAUNCHER=warm is a speed-up, but {SWITCH}=0 turns them off: "
                           "unset one of the two")
    storage = POOLED_STORAGE_YAML if speedups else SQLITE_STORAGE_YAML
    storage = storage.replace("{base_dir}", json.dumps(str(Path(dagster_home).resolve())))
    return storage + INSTANCE_YAML + (WARM_RUN_LAUNCHER_YAML if launcher == "warm" else "")


def prepare_instance(home: CalmOpsHome) -> None:
    """Create ``DAGSTER_HOME`` with its ``dagster.yaml`` and point the environment at it.

    The first caller also creates the instance's SQLite storage, under an exclusive file lock: two
    ``calmops run`` started at once on a fresh home would otherwise both try to create its tables.
    """
    home.dagster_home.mkdir(parents=True, exist_ok=True)
    with open(home.dagster_home / ".calmops-init.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            config = home.dagster_home / "dagster.yaml"
            text = instance_yaml(home.dagster_home)
            if not config.exists() or config.read_text() != text:
                write_text_atomic(config, text)
            os.environ["DAGSTER_HOME"] = str(home.dagster_home)
            os.environ["CALMOPS_HOME"] = str(home.root)
            marker = home.dagster_home / ".calmops-storage-ready"
            if not marker.exists():
                from dagster import DagsterInstance

                with DagsterInstance.get():  # creates the storage tables
                    pass
                marker.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
