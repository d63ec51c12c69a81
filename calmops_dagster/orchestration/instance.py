"""The local Dagster instance under ``CALMOPS_HOME/dagster``, shared by ``dagster dev`` and ``calmops run``.

Its ``dagster.yaml`` keeps Dagster's embedded SQLite storage and adds a run queue that lets at most one run
per pipeline (tag ``calmops/pipeline``) execute at a time (queued runs are looked at every second), so blocks are processed one by one, in the order
their runs were requested, and one pipeline's runs never race for its champion.
"""

from __future__ import annotations

import fcntl
import os

from calmops_dagster.store.atomic import write_text_atomic
from calmops_dagster.store.paths import CalmOpsHome

INSTANCE_YAML = """\
# Written by calmops (calmops_dagster/orchestration/instance.py). Embedded SQLite storage under this folder.
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
# DEBUG lines (the IO manager's "Loading partition ..." / "Writing file at ...", about a quarter of a
# run's events) are not stored: every stored event is a SQLite write
python_logs:
  python_log_level: INFO
telemetry:
  enabled: false
"""


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
            if not config.exists() or config.read_text() != INSTANCE_YAML:
                write_text_atomic(config, INSTANCE_YAML)
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
