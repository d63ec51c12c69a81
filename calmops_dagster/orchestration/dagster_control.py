"""Control of a pipeline's sensors, schedule and runs, for ``calmops relaunch / update / delete``.

Two back-ends, chosen per call:

- a running ``dagster dev`` (webserver answering on ``CALMOPS_DAGSTER_HOST``:``CALMOPS_DAGSTER_PORT``,
  default ``127.0.0.1:3000``, or ``--dagster-host/--dagster-port``): its GraphQL API, over plain HTTP, starts
  sensors and schedules; Dagster's public GraphQL client submits runs (queued by the run queue, one per
  pipeline at a time) and reloads the code location;
- otherwise the local instance (``DAGSTER_HOME``): stopped sensors and schedule are started with Dagster's
  CLI (``dagster sensor start``; the daemon runs them when ``dagster dev`` next starts; the instigators are
  on by default), or, with the speed-ups on, in the stored state by
  :mod:`calmops_dagster.speedups.instigator_state`, without loading the code location; pending blocks are
  processed in-process as ``calmops run`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass

from calmops_dagster.errors import CalmOpsError
from calmops_dagster.orchestration.run_tags import PIPELINE_TAG

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 3000

_REPOSITORIES = """
query {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes { name location { name } jobs { name } sensors { name } schedules { name } }
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


#: The circuit breaker's two sensors, one pair serving every pipeline of the code location.
RUN_FAILURES_SENSOR, RUN_SUCCESSES_SENSOR = "calmops_run_failures", "calmops_run_successes"
#: The file sensor serving every pipeline of the code location (it replaced one ``<pipeline>_files`` each).
FILES_SENSOR = "calmops_files"


def instigator_names(pipeline: str, has_schedule: bool) -> tuple[list[str], list[str]]:
    """(sensor names, schedule names) a pipeline runs on, as ``pipeline_defs`` names them: the shared file
    sensor and breaker sensors, and its schedule."""
    sensors = [FILES_SENSOR, RUN_FAILURES_SENSOR, RUN_SUCCESSES_SENSOR]
    return sensors, [f"{pipeline}_schedule"] if has_schedule else []


def dagster_address(host: str | None = None, port: int | None = None) -> tuple[str, int]:
    return (host or os.environ.get("CALMOPS_DAGSTER_HOST") or DEFAULT_HOST,
            int(port or os.environ.get("CALMOPS_DAGSTER_PORT") or DEFAULT_PORT))


def running_dagster(host: str | None = None, port: int | None = None,
                    timeout: float = 1.5) -> DagsterWebserver | None:
    """The ``dagster dev`` answering at the address, or ``None`` when none answers."""
    host, port = dagster_address(host, port)
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/server_info", timeout=timeout) as response:
            if response.status != 200:
                return None
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return DagsterWebserver(host, port)


@dataclass(frozen=True)
class DagsterWebserver:
    """A running ``dagster dev``'s webserver: its GraphQL endpoint over plain HTTP for the queries Dagster's
    public client has no method for, and that client (:meth:`graphql_client`) for those it has."""

    host: str
    port: int

    @property
    def graphql_url(self) -> str:
        return f"http://{self.host}:{self.port}/graphql"

    def query(self, query: str, variables: dict | None = None, timeout: float = 120) -> dict:
        """The ``data`` of a GraphQL query or mutation; a :class:`CalmOpsError` naming the webserver when it
        cannot be reached or answers with errors."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(self.graphql_url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.load(response)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise CalmOpsError(f"dagster dev at {self.graphql_url}: {exc}") from exc
        if answer.get("errors"):
            raise CalmOpsError(f"dagster dev at {self.graphql_url}: {answer['errors'][0].get('message')}")
        return answer["data"]

    def graphql_client(self):
        """Dagster's public GraphQL client (:class:`dagster_graphql.DagsterGraphQLClient`) of this webserver."""
        from dagster_graphql import DagsterGraphQLClient

        return DagsterGraphQLClient(self.host, port_number=self.port)


@dataclass
class Location:
    location: str
    repository: str
    sensors: set[str]
    schedules: set[str]


def find_location(webserver: DagsterWebserver, pipeline: str) -> Location | None:
    """The code location and repository holding ``pipeline``'s block job."""
    data = webserver.query(_REPOSITORIES)["repositoriesOrError"]
    if data["__typename"] != "RepositoryConnection":
        raise CalmOpsError(f"dagster dev at {webserver.graphql_url} lists no repositories: {data.get('message')}")
    for node in data["nodes"]:
        sensors = {s["name"] for s in node["sensors"]}
        if f"{pipeline}_job" in {job["name"] for job in node["jobs"]}:
            return Location(node["location"]["name"], node["name"], sensors, {s["name"] for s in node["schedules"]})
    return None


def start_instigators_graphql(webserver: DagsterWebserver, location: Location, pipeline: str,
                              has_schedule: bool) -> list[str]:
    """Start the pipeline's sensors and schedule through GraphQL; returns what happened, one line each."""
    sensors, schedules = instigator_names(pipeline, has_schedule)
    done = []
    for name in sensors:
        if name not in location.sensors:
            continue
        selector = {"repositoryLocationName": location.location, "repositoryName": location.repository,
                    "sensorName": name}
        result = webserver.query(_START_SENSOR, {"selector": selector})["startSensor"]
        done.append(f"sensor {name}: {(result.get('sensorState') or {}).get('status') or result.get('message')}")
    for name in schedules:
        if name not in location.schedules:
            continue
        selector = {"repositoryLocationName": location.location, "repositoryName": location.repository,
                    "scheduleName": name}
        result = webserver.query(_START_SCHEDULE, {"selector": selector})["startSchedule"]
        state = (result.get("scheduleState") or {}).get("status")
        done.append(f"schedule {name}: {state or result.get('message')}")
    return done


def submit_block_runs(webserver: DagsterWebserver, location: Location, pipeline: str, job: str,
                      blocks: list[str]) -> list[str]:
    """Submit one run per block (the run queue runs them one at a time, in this order); returns run ids."""
    client = webserver.graphql_client()
    return [client.submit_job_execution(job, repository_location_name=location.location,
                                        repository_name=location.repository,
                                        tags={"dagster/partition": block, PIPELINE_TAG: pipeline})
            for block in blocks]


def start_instigators_with_dagster_cli(instance, pipeline: str, has_schedule: bool) -> list[str]:
    """Start the pipeline's stopped sensors and schedule on the local instance with Dagster's CLI
    (``dagster sensor start NAME``, ``dagster schedule start NAME``), each call loading the code location in a
    process of its own. Which are stopped is read from the instance's stored states (``dagster sensor list``
    cannot tell: it matches them by the origin of its own code server, not the one ``dagster dev`` stored).
    An instigator that was never stopped has no stored state and runs by default; nothing to do for it.
    Returns what happened, one line each."""
    sensors, schedules = instigator_names(pipeline, has_schedule)
    stopped = {state.instigator_name for state in instance.all_instigator_state() if not state.is_running}
    done = []
    for kind, names in (("sensor", sensors), ("schedule", schedules)):
        for name in names:
            if name in stopped:
                _dagster_cli(kind, "start", name)
                done.append(f"{kind} {name}: RUNNING")
    return done


def _dagster_cli(*args: str) -> None:
    """Run ``dagster ARGS -m calmops_dagster.definitions``; a :class:`CalmOpsError` with its last error line
    when it fails."""
    command = [sys.executable, "-m", "dagster", *args, "-m", "calmops_dagster.definitions"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        raise CalmOpsError(f"`dagster {' '.join(args)}` failed (exit code {result.returncode}): {reason}")
