"""The speed-ups' switch: ``CALMOPS_DAGSTER_SPEEDUPS=0`` gives stock Dagster, and everything still works.

- the instance ``calmops`` writes: Dagster's ``storage: sqlite`` and default run launcher, nothing of
  ``calmops_dagster.speedups`` named in it; the sensors at the spec's interval;
- the `dagster dev` story once in stock mode: one demo pipeline on a fresh home, block 1 in its watched
  folder as `dagster dev` starts, decided by the sensor's run; then the file sensor is stopped through the
  webserver, block 2 is copied in, and ``calmops relaunch`` starts the sensor again and gets block 2
  decided, and ``calmops update`` reloads the code location, all through Dagster's GraphQL API over plain
  HTTP;
- after it, with ``dagster dev`` stopped, ``calmops relaunch`` starts the stopped sensor both ways: with
  Dagster's CLI in stock mode, in the stored state with the speed-ups on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import block_spec_dict
from dagster import DagsterInstance
from live_processes import free_port, wait_for
from test_dagster_dev import CALMOPS, demo_files, processed_blocks, running_dev, server_up

from calmops_dagster.errors import CalmOpsError
from calmops_dagster.interfaces.cli import main
from calmops_dagster.orchestration.dagster_control import DagsterWebserver
from calmops_dagster.orchestration.instance import instance_yaml
from calmops_dagster.orchestration.pipeline_defs import build_job, build_pipeline_definitions
from calmops_dagster.sensors.file_sensor import build_files_sensor
from calmops_dagster.spec import parse_spec

STOCK = {"CALMOPS_DAGSTER_SPEEDUPS": "0"}


def test_without_the_speedups_the_instance_is_stock_dagster(monkeypatch, tmp_path):
    monkeypatch.delenv("CALMOPS_RUN_LAUNCHER", raising=False)
    monkeypatch.setenv("CALMOPS_DAGSTER_SPEEDUPS", "1")
    fast = instance_yaml(tmp_path)
    assert yaml.safe_load(fast)["storage"]["custom"]["module"] == "calmops_dagster.speedups.sqlite_storage"
    assert yaml.safe_load(fast)["run_launcher"]["module"] == "calmops_dagster.speedups.warm_run_launcher"
    monkeypatch.setenv("CALMOPS_DAGSTER_SPEEDUPS", "0")
    stock = instance_yaml(tmp_path)
    config = yaml.safe_load(stock)
    assert config["storage"] == {"sqlite": {"base_dir": str(tmp_path.resolve())}}
    assert "run_launcher" not in config and "calmops_dagster" not in stock.replace(
        "calmops_dagster/orchestration/instance.py", "")
    assert config["run_queue"] == yaml.safe_load(fast)["run_queue"]  # the run queue is public configuration


@pytest.mark.parametrize("value, launcher, message", [
    ("yes", None, "CALMOPS_DAGSTER_SPEEDUPS='yes': expected 1 (the speed-ups on, the default) or 0"),
    ("0", "warm", "CALMOPS_RUN_LAUNCHER=warm is a speed-up, but CALMOPS_DAGSTER_SPEEDUPS=0 turns them off"),
])
def test_a_bad_switch_is_named(monkeypatch, tmp_path, value, launcher, message):
    monkeypatch.setenv("CALMOPS_DAGSTER_SPEEDUPS", value)
    if launcher:
        monkeypatch.setenv("CALMOPS_RUN_LAUNCHER", launcher)
    with pytest.raises(CalmOpsError, match=re.escape(message)):
        instance_yaml(tmp_path)


@pytest.mark.parametrize("switch, expected", [("1", 4), ("0", 5)])
def test_the_sensors_interval_is_corrected_only_with_the_speedups(monkeypatch, tmp_path, switch, expected):
    monkeypatch.setenv("CALMOPS_DAGSTER_SPEEDUPS", switch)
    labels = tmp_path / "labels"
    labels.mkdir()
    raw = block_spec_dict("five", tmp_path, sensor={"interval_seconds": 5},
                          labels={"dir": str(labels), "id_col": "id"})
    spec = parse_spec(raw, tmp_path / "five" / "pipeline.yaml")
    sensors = [*build_pipeline_definitions(spec).sensors, build_files_sensor([spec], [build_job(spec)])]
    intervals = {s.name: s.minimum_interval_seconds for s in sensors}
    assert intervals == {"calmops_files": expected, "five_labels": expected}


SENSOR = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { id minIntervalSeconds sensorState { status } }
  }
}
"""
STOP_SENSOR = """
mutation($id: String!) {
  stopSensor(id: $id) { __typename ... on StopSensorMutationResult { instigationState { status } } }
}
"""


@dataclass
class StockStory:
    """What the stock story saw: the sensor's state through GraphQL before and after it was stopped, what
    ``calmops relaunch`` and ``update`` printed with ``dagster dev`` up, the instance's classes, and the local
    relaunches after it (stock, then with the speed-ups): printed lines and the sensor's stored status."""

    home: Path
    log: Path
    sensor_before: dict
    sensor_stopped: dict
    relaunched: str
    updated: str
    instance_classes: tuple[str, str, str]
    local_relaunches: dict[str, tuple[str, str]]

    @property
    def db(self) -> Path:
        return self.home / "metrics.duckdb"


@pytest.fixture(scope="module")
def stock_story(tmp_path_factory) -> StockStory:
    root = tmp_path_factory.mktemp("stock_dagster")
    home, port, log = root / "home", free_port(), root / "dev.log"
    env = {**os.environ, "CALMOPS_HOME": str(home), **STOCK}
    env.pop("CALMOPS_RUN_LAUNCHER", None)
    # block 1 is in the watched folder before `dagster dev` starts: its sensor's first tick finds it settled
    assert main(["--home", str(home), "demo", "--initial", "1", "--blocks", "2", "--rows-per-block", "200"]) == 0
    blocks, data = demo_files(home, "demo")
    with running_dev(home, port, log, **STOCK) as process:
        wait_for(lambda: server_up(process, port), 300, "the webserver to answer /server_info")
        wait_for(lambda: processed_blocks(home / "metrics.duckdb") == {"1"}, 900, "block 1 decided")
        webserver = DagsterWebserver("127.0.0.1", port)
        selector = {"repositoryLocationName": "calmops_dagster.definitions", "repositoryName": "__repository__",
                    "sensorName": "calmops_files"}
        sensor = webserver.query(SENSOR, {"selector": selector})["sensorOrError"]
        stopped = webserver.query(STOP_SENSOR, {"id": sensor["id"]})["stopSensor"]
        shutil.copy(blocks[1], data / blocks[1].name)
        address = ["--dagster-port", str(port)]
        relaunched = subprocess.run([*CALMOPS, "relaunch", "demo", *address], env=env, check=True,
                                    capture_output=True, text=True).stdout
        wait_for(lambda: "2" in processed_blocks(home / "metrics.duckdb"), 600, "block 2 decided")
        updated = subprocess.run([*CALMOPS, "update", "demo", "--sensor.settle_seconds", "1", *address], env=env,
                                 check=True, capture_output=True, text=True).stdout
        wait_for(lambda: server_up(process, port), 120, "the webserver to answer /server_info")
    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        classes = tuple(type(part).__name__ for part in (instance.run_launcher, instance.run_storage,
                                                         instance.event_log_storage))
    local = {mode: relaunch_stopped_sensor_locally(home, {**env, "CALMOPS_DAGSTER_SPEEDUPS": mode})
             for mode in ("0", "1")}
    yield StockStory(home, log, sensor, stopped, relaunched, updated, classes, local)


def file_sensor_state(instance):
    """The file sensor's one stored state (Dagster keys states by name, location and repository)."""
    (state,) = [s for s in instance.all_instigator_state() if s.instigator_name == "calmops_files"]
    return state


def relaunch_stopped_sensor_locally(home: Path, env: dict) -> tuple[str, str]:
    """Stop the file sensor in the stored state, ``calmops relaunch`` with no ``dagster dev`` answering:
    (what it printed, the sensor's stored status after)."""
    from dagster._core.scheduler.instigation import InstigatorStatus

    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        instance.update_instigator_state(file_sensor_state(instance).with_status(InstigatorStatus.STOPPED))
    out = subprocess.run([*CALMOPS, "relaunch", "demo", "--dagster-port", "9"], env=env, check=True,
                         capture_output=True, text=True).stdout
    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        return out, file_sensor_state(instance).status.value


def test_dagster_dev_on_stock_dagster_decides_every_dropped_block(stock_story):
    assert processed_blocks(stock_story.db) == {"1", "2"}
    assert stock_story.instance_classes == ("DefaultRunLauncher", "SqliteRunStorage", "SqliteEventLogStorage")
    with DagsterInstance.from_config(str(stock_story.home / "dagster")) as instance:
        runs = [run for run in instance.get_runs() if run.tags.get("calmops/pipeline") == "demo"]
    assert {run.tags["dagster/partition"] for run in runs} == {"1", "2"}
    assert not [run for run in runs if "calmops/pid" in run.tags]  # the warm launcher's tag
    assert "is superseded" in stock_story.log.read_text()  # Dagster's own `dagster dev`, notice and all


def test_on_stock_dagster_the_sensor_asks_for_the_specs_interval(stock_story):
    assert stock_story.sensor_before["minIntervalSeconds"] == 5
    assert stock_story.sensor_before["sensorState"]["status"] == "RUNNING"
    assert stock_story.sensor_stopped["instigationState"]["status"] == "STOPPED"


def test_relaunch_and_update_talk_to_stock_dagster_dev_over_graphql(stock_story):
    assert "demo: sensor calmops_files: RUNNING" in stock_story.relaunched
    assert "reloaded code location calmops_dagster.definitions: SUCCESS" in stock_story.updated


@pytest.mark.parametrize("mode", ["0", "1"], ids=["stock: Dagster's CLI", "speed-ups: the stored state"])
def test_relaunch_without_dagster_dev_starts_the_stopped_sensor(stock_story, mode):
    out, status = stock_story.local_relaunches[mode]
    assert "demo: sensor calmops_files: RUNNING" in out and status == "RUNNING"
