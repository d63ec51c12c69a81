"""Control of a pipeline's sensors, schedule and runs, for ``calmops relaunch / update / delete``.

Two back-ends, chosen per call:

- a running ``dagster dev`` (webserver answering on ``CALMOPS_DAGSTER_HOST``:``CALMOPS_DAGSTER_PORT``,
  default ``127.0.0.1:3000``, or ``--dagster-host/--dagster-port``): its GraphQL API starts sensors and
  schedules, submits runs (queued by the run queue, one per pipeline at a time) and reloads the code
  location (:class:`dagster_graphql.DagsterGraphQLClient`);
- otherwise the local instance (``DAGSTER_HOME``): stored sensor/schedule states that were stopped are set
  to running again (the daemon reads them when ``dagster dev`` next starts; the instigators are on by
  default), and pending blocks are processed in-process as ``calmops run`` does.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass

from calmops_dagster.orchestration.runner import PIPELINE_TAG

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 3000

_REPOSITORIES = """
query {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes { name location { name } sensors { name } schedules { name } }
    }
    ... on PythonError { message }
  }
}
"""

_START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""

_START_SCHEDULE = """
mutation($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""


def instigator_names(pipeline: str, has_schedule: bool) -> tuple[list[str], list[str]]:
    """(sensor names, schedule names) of a pipeline, as ``pipeline_defs`` names them."""
    sensors = [f"{pipeline}_files", f"{pipeline}_run_failures", f"{pipeline}_run_successes"]
    return sensors, [f"{pipeline}_schedule"] if has_schedule else []


def dagster_address(host: str | None = None, port: int | None = None) -> tuple[str, int]:
    return (host or os.environ.get("CALMOPS_DAGSTER_HOST") or DEFAULT_HOST,
            int(port or os.environ.get("CALMOPS_DAGSTER_PORT") or DEFAULT_PORT))


def running_dagster(host: str | None = None, port: int | None = None, timeout: float = 1.5):
    """A GraphQL client of the ``dagster dev`` answering at the address, or ``None`` when none answers."""
    host, port = dagster_address(host, port)
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/server_info", timeout=timeout) as response:
            if response.status != 200:
                return None
    except (urllib.error.URLError, OSError, ValueError):
        return None
    from dagster_graphql import DagsterGraphQLClient

    return DagsterGraphQLClient(host, port_number=port)


@dataclass
class Location:
    location: str
    repository: str
    sensors: set[str]
    schedules: set[str]


def find_location(client, pipeline: str) -> Location | None:
    """The code location and repository holding ``pipeline``'s file sensor."""
    data = client._execute(_REPOSITORIES)["repositoriesOrError"]
    for node in data.get("nodes", []):
        sensors = {s["name"] for s in node["sensors"]}
        if f"{pipeline}_files" in sensors:
            return Location(node["location"]["name"], node["name"], sensors, {s["name"] for s in node["schedules"]})
    return None


def start_instigators_graphql(client, location: Location, pipeline: str, has_schedule: bool) -> list[str]:
    """Start the pipeline's sensors and schedule through GraphQL; returns what happened, one line each."""
    sensors, schedules = instigator_names(pipeline, has_schedule)
    done = []
    for name in sensors:
        if name not in location.sensors:
            continue
        selector = {"repositoryLocationName": location.location, "repositoryName": location.repository,
                    "sensorName": name}
        result = client._execute(_START_SENSOR, {"selector": selector})["startSensor"]
        done.append(f"sensor {name}: {result.get('sensorState', {}).get('status') or result.get('message')}")
    for name in schedules:
        if name not in location.schedules:
            continue
        selector = {"repositoryLocationName": location.location, "repositoryName": location.repository,
                    "scheduleName": name}
        result = client._execute(_START_SCHEDULE, {"selector": selector})["startSchedule"]
        state = (result.get("scheduleState") or {}).get("status")
        done.append(f"schedule {name}: {state or result.get('message')}")
    return done


def submit_block_runs(client, location: Location, pipeline: str, job: str, blocks: list[str]) -> list[str]:
    """Submit one run per block (the run queue runs them one at a time, in this order); returns run ids."""
    return [client.submit_job_execution(job, repository_location_name=location.location,
                                        repository_name=location.repository,
                                        tags={"dagster/partition": block, PIPELINE_TAG: pipeline})
            for block in blocks]


def start_instigators_local(instance, pipeline: str, has_schedule: bool) -> list[str]:
    """Set stored, stopped states of the pipeline's sensors and schedule back to running.

    An instigator that was never stopped has no stored state and runs by default; nothing to do for it.
    """
    from dagster._core.scheduler.instigation import InstigatorStatus

    sensors, schedules = instigator_names(pipeline, has_schedule)
    wanted = set(sensors) | set(schedules)
    done = []
    for state in instance.all_instigator_state():
        if state.instigator_name in wanted and state.status == InstigatorStatus.STOPPED:
            instance.update_instigator_state(state.with_status(InstigatorStatus.RUNNING))
            done.append(f"{state.instigator_type.value.lower()} {state.instigator_name}: RUNNING")
    return done
