"""Dagster on Postgres, for real: the instance ``deploy/dagster.yaml`` ships, against a real PostgreSQL server.

A throw-away PostgreSQL server (tests/postgres_server.py) holds Dagster's run, event-log and schedule
storage. ``dagster-daemon`` runs the demo pipeline's file sensor and the queued run coordinator; a block file
dropped into the watched folder becomes a queued run, dequeued by the daemon and processed end to end
(metrics in DuckDB, champion in the model store). One block only: the run is a fresh process (Dagster's default
launcher) that imports the code location, which takes long on a loaded machine. What the test swaps in
``deploy/dagster.yaml``, and why: the run launcher becomes Dagster's default one (runs as subprocesses of the code server) because no
Docker engine runs here; the Postgres port becomes the test server's port; artifact and compute-log folders
move from the Docker volume ``/calmops`` to the temporary directory. Storage, run queue, run monitoring and
telemetry are the file's own sections, unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.scheduler.instigation import InstigatorType, TickStatus
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from live_processes import stop_group, wait_for
from postgres_server import postgres_server

from calmops_dagster.interfaces.cli import main

REPO = Path(__file__).resolve().parents[1]
DAGSTER_DAEMON = [sys.executable, "-m", "dagster._daemon", "run", "-m", "calmops_dagster.definitions"]


def deploy_instance_yaml(port: int, local_root: Path) -> dict:
    """``deploy/dagster.yaml`` with only what cannot exist here swapped (see the module docstring)."""
    raw = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    raw["run_launcher"] = {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"}
    raw["storage"]["postgres"]["postgres_db"]["port"] = port
    raw["local_artifact_storage"]["config"]["base_dir"] = str(local_root / "artifacts")
    raw["compute_logs"]["config"]["base_dir"] = str(local_root / "compute_logs")
    return raw


@pytest.fixture
def postgres_instance(tmp_path, monkeypatch):
    """A DAGSTER_HOME whose dagster.yaml is the deploy one on a fresh PostgreSQL database; env set for it."""
    with postgres_server() as server:
        dagster_home = tmp_path / "dagster_home"
        dagster_home.mkdir()
        (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(deploy_instance_yaml(server.port, tmp_path)))
        env = {"DAGSTER_HOME": str(dagster_home), "CALMOPS_HOME": str(tmp_path / "home"),
               "DAGSTER_POSTGRES_HOST": server.host, "DAGSTER_POSTGRES_USER": server.user,
               "DAGSTER_POSTGRES_PASSWORD": "trust-auth-ignores-it", "DAGSTER_POSTGRES_DB": server.database}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield dagster_home


def test_a_pipeline_runs_end_to_end_on_postgres_with_the_daemon_sensor_and_run_queue(tmp_path, postgres_instance):
    home = Path(os.environ["CALMOPS_HOME"])
    assert main(["demo", "--initial", "0", "--blocks", "1", "--rows-per-block", "200"]) == 0  # in this process
    blocks_dir, data_dir = home / "demo" / "demo" / "blocks", home / "demo" / "demo" / "data"

    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert isinstance(instance.run_launcher, DefaultRunLauncher)

        def finished_runs():
            runs = instance.get_runs(RunsFilter(tags={"calmops/pipeline": "demo"}))
            if any(run.status == DagsterRunStatus.FAILURE for run in runs):
                raise AssertionError(f"a run failed; see {tmp_path / 'daemon.log'}")
            return [run for run in runs if run.status == DagsterRunStatus.SUCCESS]

        with open(tmp_path / "daemon.log", "w") as log:
            daemon = subprocess.Popen(DAGSTER_DAEMON, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                for path in blocks_dir.glob("*.csv"):
                    shutil.copy(path, data_dir / path.name)
                [run] = wait_for(finished_runs, 1800, "a successful run of the demo pipeline", interval=2)
            finally:
                stop_group(daemon, timeout=90)

        # Run storage: the block's run went through the queue (enqueued by the sensor, launched by the daemon)
        assert run.tags["dagster/partition"] == "1"
        assert run.tags["dagster/sensor_name"] == "calmops_files"
        events = [record.event_log_entry.dagster_event.event_type
                  for record in instance.get_records_for_run(run.run_id).records
                  if record.event_log_entry.is_dagster_event]
        assert events.index(DagsterEventType.RUN_ENQUEUED) < events.index(DagsterEventType.RUN_STARTING) \
            < events.index(DagsterEventType.RUN_START) < events.index(DagsterEventType.RUN_SUCCESS)

        # Event-log storage: the block's assets materialized, recorded in Postgres
        for asset in ("data_block", "drift_report", "challenger_model", "champion_model"):
            assert instance.get_materialized_partitions(AssetKey(["demo", asset])) == {"1"}, asset

        # Schedule storage: the sensor's state and its ticks, one of which requested runs
        sensors = {state.instigator_name: state for state in instance.all_instigator_state(
            instigator_type=InstigatorType.SENSOR)}
        ticks = instance.get_ticks(sensors["calmops_files"].instigator_origin_id,
                                   sensors["calmops_files"].selector_id)
        assert any(tick.status == TickStatus.SUCCESS and tick.run_ids for tick in ticks)

    # Nothing fell back to SQLite under CALMOPS_HOME or DAGSTER_HOME
    assert not list(postgres_instance.rglob("*.db"))
    assert not (home / "dagster").exists()
    # and the pipeline's own state was written: both blocks judged, a champion chosen
    from calmops_dagster.store.metrics_store import MetricsStore
    promoted = MetricsStore(home / "metrics.duckdb").query("SELECT block FROM promotions ORDER BY block")
    assert list(promoted["block"]) == ["1"]
    assert (home / "pipelines" / "demo" / "models" / "champion.json").is_file()
