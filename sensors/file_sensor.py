"""One file sensor for every pipeline of the code location (``calmops_files``): new stable file versions in
each pipeline's ``data_dir`` become partitions and run requests.

A tick looks at every pipeline whose ``sensor.interval_seconds`` has passed since its last look (and whose
``sensor.enabled`` is on). An idle pipeline costs a ``stat`` per file and no read of the ingest record
(:func:`idle`); a changed one is ingested through the record shared with the schedule and ``calmops run``
(:mod:`calmops_dagster.ingest.ingest_record`), and a block is requested once per version (``run_key =
<pipeline>:<block>:<block version>``, the run tagged with its pipeline and run-queue priority). Every tick
also requests again the blocks whose run's process died. A tick ingests changed pipelines oldest change
first within :data:`TICK_BUDGET_SECONDS`; the rest keep their place for the next tick. One pipeline's
failure is logged with its name and the others go on.

The cursor holds one small entry per pipeline (:func:`cursor_entries`). What a look reads, waits for and
sets aside: docs/ingest.md; the cursor, stream pipelines and dead runs: docs/unattended.md.
"""

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from dagster import (
    AddDynamicPartitionsRequest,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from calmops_dagster.ingest.block_data import sort_block_keys
from calmops_dagster.ingest.file_scan import MAX_SETTLE_WAIT, listing_fingerprint, settle_wait
from calmops_dagster.ingest.ingest_record import ingest_data_dir
from calmops_dagster.ingest.withdrawal import withdraw_moved_blocks
from calmops_dagster.orchestration.dagster_control import FILES_SENSOR
from calmops_dagster.orchestration.dead_runs import dead_runs, reap_run, times_reaped
from calmops_dagster.orchestration.fair_queue import PRIORITY_TAG, block_priorities, runs_ahead
from calmops_dagster.orchestration.headless_runs import processed_versions
from calmops_dagster.orchestration.ingest_registration import expected_kinds, pipeline_dir, record_bad_files
from calmops_dagster.orchestration.run_tags import IN_FLIGHT, PIPELINE_TAG, RERUN_OF_TAG, VERSION_TAG
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.speedups.daemon_interval import daemon_min_interval
from calmops_dagster.store.metrics_store import MetricsStore

#: The seconds a tick spends ingesting changed pipelines (the settle wait included) before it leaves the
#: others for the next tick. At least one changed pipeline is ingested per tick. Well under Dagster's
#: 60-s limit on a sensor evaluation.
TICK_BUDGET_SECONDS = 20.0
#: Run statuses of a run whose ``data_block`` has not read its block yet.
NOT_YET_STARTED = (DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED)
#: Pipelines named in the sensor's description; beyond them it gives their number.
LISTED_IN_DESCRIPTION = 20


def build_files_sensor(specs: Sequence[PipelineSpec], jobs: Sequence):
    """The one sensor watching the ``data_dir`` of every pipeline in ``specs`` and requesting runs of its
    block job (in ``jobs``, named ``<name>_job``); on by default so dropped files are processed unattended.
    ``None`` without specs."""
    if not specs:
        return None
    specs = sorted(specs, key=lambda spec: spec.name)
    job_names = {job.tags[PIPELINE_TAG]: job.name for job in jobs}

    @sensor(
        name=FILES_SENSOR,
        jobs=list(jobs),
        minimum_interval_seconds=daemon_min_interval(min(spec.sensor.interval_seconds for spec in specs)),
        default_status=DefaultSensorStatus.RUNNING,
        description=files_sensor_description(specs),
    )
    def files_sensor(context: SensorEvaluationContext, home: CalmOpsHomeResource, metrics: MetricsStoreResource):
        return evaluate(context, specs, job_names, home, metrics.store())

    return files_sensor


def files_sensor_description(specs: Sequence[PipelineSpec]) -> str:
    """What the sensor watches: each pipeline's folder and pattern (the first :data:`LISTED_IN_DESCRIPTION`),
    and how to pause one pipeline."""
    lines = [f"- {spec.name}: {spec.data_dir} ({spec.file_pattern})"
             + ("" if spec.sensor.enabled else " [sensor.enabled: false]")
             for spec in specs[:LISTED_IN_DESCRIPTION]]
    more = len(specs) - LISTED_IN_DESCRIPTION
    head = (f"Watches the data folders of the {len(specs)} pipeline(s) of this code location for new block "
            f"files and requests one run per new block version (each run tagged {PIPELINE_TAG}). Pause one "
            "pipeline with `sensor: {enabled: false}` in its spec.")
    return "\n".join([head, *lines, *([f"... and {more} more pipelines"] if more > 0 else [])])


def cursor_entries(cursor: str | None) -> dict[str, dict]:
    """The sensor's cursor: one entry per pipeline, ``listing`` (:func:`listing_fingerprint` of the files
    its last ingest listed), ``seq`` (the ingest record's scan it has acted on), ``seen`` (files not yet
    stable, when any), ``looked`` (the tick of its last look), ``pending`` (since when a change waits for a
    tick's budget, when one does). Empty for an unreadable cursor (every pipeline is then ingested once: nothing is lost or
    requested twice, the record knows what was)."""
    try:
        entries = json.loads(cursor or "{}").get("pipelines") or {}
    except (json.JSONDecodeError, AttributeError):
        return {}
    return {name: dict(entry) for name, entry in entries.items() if isinstance(entry, dict)}


@dataclass
class Look:
    """What one pipeline's ingest asks of the tick: run requests, partitions to add and to delete, and its
    next cursor entry."""

    requests: list[RunRequest] = field(default_factory=list)
    add: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    entry: dict = field(default_factory=dict)


def evaluate(context: SensorEvaluationContext, specs: Sequence[PipelineSpec], job_names: dict[str, str],
             home: CalmOpsHomeResource, db: MetricsStore) -> SensorResult:
    """One tick over ``specs`` (``job_names``: each pipeline's block job): look at the due pipelines, ingest
    the changed ones oldest first within the budget, and request the reruns of dead runs."""
    started, now = time.monotonic(), time.time()
    stored = cursor_entries(context.cursor)
    entries = {spec.name: stored.get(spec.name, {}) for spec in specs}
    in_flight = runs_by_pipeline(context.instance)
    requests, changed = [], []
    for spec in specs:
        entry = entries[spec.name]
        if not spec.sensor.enabled or not due(entry, spec, now):
            continue
        try:
            requests += rerun_requests(context, spec, job_names[spec.name], in_flight.get(spec.name, []))
            listing = listing_fingerprint(spec)
            if idle(entry, listing):
                entries[spec.name] = {**entry, "looked": int(now)}
            else:
                changed.append((entry.get("pending", now), spec.name, spec))
        except Exception as exc:  # noqa: BLE001 -- one pipeline's failure must not stop the others
            context.log.error(f"pipeline {spec.name}: its look failed, the others go on: {exc}")
    changed.sort(key=lambda item: item[:2])  # the change waiting longest first
    pause = max((settle_wait(spec) for *_, spec in changed), default=0.0)
    if pause:  # a file landed just now: read it in this tick rather than one interval later
        time.sleep(min(pause, MAX_SETTLE_WAIT))
    adds: dict[str, list[str]] = {}
    deletes: dict[str, list[str]] = {}
    left = 0
    for position, (since, name, spec) in enumerate(changed):
        if position and time.monotonic() - started > TICK_BUDGET_SECONDS:
            entries[name] = {**entries[name], "pending": since}
            left += 1
            continue
        try:
            look = ingest_pipeline(context, spec, job_names[name], entries[name], home, db,
                                   in_flight.get(name, []))
        except Exception as exc:  # noqa: BLE001 -- one pipeline's failure must not stop the others
            context.log.error(f"pipeline {name}: ingest failed, the others go on: {exc}")
            entries[name] = {**entries[name], "pending": now}  # behind the others next tick: none starves
            continue
        entries[name] = {**look.entry, "looked": int(now)}
        requests += look.requests
        if look.add:
            adds[spec.partitions_name] = look.add
        if look.delete:
            deletes[spec.partitions_name] = look.delete
    if left:
        context.log.info(f"{left} changed pipeline(s) left for the next tick (tick budget "
                         f"{TICK_BUDGET_SECONDS:g} s)")
    cursor = json.dumps({"pipelines": entries}, sort_keys=True, separators=(",", ":"))
    partitions = ([AddDynamicPartitionsRequest(partitions_def_name=n, partition_keys=k) for n, k in adds.items()]
                  + [DeleteDynamicPartitionsRequest(partitions_def_name=n, partition_keys=k)
                     for n, k in deletes.items()])
    if not requests and not partitions:
        return SensorResult(skip_reason=SkipReason("no new stable data files"), cursor=cursor)
    return SensorResult(run_requests=requests, dynamic_partitions_requests=partitions, cursor=cursor)


def due(entry: dict, spec: PipelineSpec, now: float) -> bool:
    """Whether the pipeline's ``interval_seconds`` has passed since its last look (1 s of slack, as the
    daemon's loop stamps ticks a little late: :mod:`calmops_dagster.speedups.daemon_interval`); always when
    a change of it waits for a tick's budget."""
    return "pending" in entry or now - entry.get("looked", 0) >= spec.sensor.interval_seconds - 1


def idle(entry: dict, listing: str) -> bool:
    """True when the pipeline has nothing to ingest: its data files are as its last ingest left them (same
    :func:`listing_fingerprint`), none was waiting to settle and no change waits for a tick's budget.

    The ingest record is not read: whatever another entry point (``calmops run``, the schedule) records is a
    file version that was not in the listing of the sensor's last ingest (that ingest recorded every stable
    file it listed, and kept the others in ``seen``), so the listing differs and the next look ingests it,
    acting on every scan recorded after the entry's ``seq``. An idle look costs the same with 10 or 10,000
    blocks recorded."""
    return entry.get("listing") == listing and not entry.get("seen") and "pending" not in entry


def ingest_pipeline(context: SensorEvaluationContext, spec: PipelineSpec, job: str, entry: dict,
                    home: CalmOpsHomeResource, db: MetricsStore, in_flight: Sequence[DagsterRun] = ()) -> Look:
    """Ingest one changed pipeline: record its new file versions, quarantine bad files, withdraw moved
    blocks, and ask for a run of every block version not processed yet and not already on its way (see
    :func:`on_its_way`; ``in_flight``: the pipeline's queued or executing runs), in block order, with the fair
    queue's priorities."""
    models = home.model_store(spec.name)
    cursor = {"seen": dict(entry.get("seen") or {}), "seq": int(entry.get("seq") or 0)}
    ingest = ingest_data_dir(spec, db, pipeline_dir(models), cursor, expected_kinds(models))
    scan, changed, versions = ingest.scan, ingest.changed, ingest.versions
    record_bad_files(spec, scan.bad, db, context.log)
    for name in scan.waiting:
        context.log.info(f"{spec.name}: {name} is not stable yet (still being written?); will look again")
    for name in scan.duplicates:
        context.log.info(f"{spec.name}: {name} holds content already accepted; ignored")
    withdrawn = withdraw_moved_blocks(db, spec, pipeline_dir(models), models.champion_version())
    for item in withdrawn:
        context.log.warning(f"{spec.name}: block {item.block} withdrawn: {item.reason}")
    done = processed_versions(context.instance, spec, db)
    order = [b for b in (changed if spec.type == "stream" else sort_block_keys(changed)) if b in versions]
    known = set(context.instance.get_dynamic_partitions(spec.partitions_name))
    coming = on_its_way(in_flight, versions)
    todo = [block for block in order if (block, versions[block]) not in done and block not in coming]
    priorities = block_priorities(runs_ahead(context.instance, PIPELINE_TAG, spec.name), len(todo)) if todo else []
    requests = [RunRequest(run_key=f"{spec.name}:{block}:{versions[block]}", job_name=job,
                           partition_key=block, tags={PIPELINE_TAG: spec.name, PRIORITY_TAG: priority})
                for block, priority in zip(todo, priorities, strict=True)]
    if todo:
        blocks = todo[0] if len(todo) == 1 else f"{len(todo)} blocks, {todo[0]} to {todo[-1]}"
        context.log.info(f"{spec.name}: run requested for {blocks}")
    next_entry = {"listing": scan.listing, "seq": ingest.seq, **({"seen": scan.cursor["seen"]} if scan.cursor["seen"]
                                                             else {})}
    return Look(requests=requests, add=[b for b in order if b not in known],
                delete=[item.block for item in withdrawn if item.block in known], entry=next_entry)


def on_its_way(in_flight: Sequence[DagsterRun], versions: dict[str, str]) -> set[str]:
    """Blocks that a run among ``in_flight`` will process at their current version (``versions``): a run not
    started yet (its ``data_block`` reads the block's files as recorded when it runs), or one whose
    ``data_block`` loaded that version (:data:`VERSION_TAG`). Such a block needs no second run, e.g. after
    ``calmops relaunch`` submitted one for a block the sensor it restarted also finds new. A started run
    that has not loaded the block yet may read an older version: the block is requested as usual."""
    coming = set()
    for run in in_flight:
        block = run.tags.get("dagster/partition")
        if block in versions and (run.status in NOT_YET_STARTED or run.tags.get(VERSION_TAG) == versions[block]):
            coming.add(block)
    return coming


def runs_by_pipeline(instance: DagsterInstance) -> dict[str, list[DagsterRun]]:
    """Every queued or executing run, by its pipeline: one read of the run storage per tick, not one per
    pipeline."""
    runs: dict[str, list[DagsterRun]] = {}
    for run in instance.get_runs(RunsFilter(statuses=IN_FLIGHT)):
        if PIPELINE_TAG in run.tags:
            runs.setdefault(run.tags[PIPELINE_TAG], []).append(run)
    return runs


def rerun_requests(context: SensorEvaluationContext, spec: PipelineSpec, job: str,
                   in_flight: list[DagsterRun]) -> list[RunRequest]:
    """One more run for each block whose run (among ``in_flight``, the pipeline's queued or executing runs)
    lost its process, in two ticks so blocks stay in order.

    First tick: the rerun is requested (``dagster/priority`` 1, ahead of runs queued for later blocks) while
    the dead run still holds the pipeline's run-queue slot. A later tick, once the rerun is queued, marks the
    dead run failed, which frees the slot: the queue then starts the rerun, not a later block that was
    queued behind the dead run (marking it failed first let the queue start that later block in between).
    A block that lost its process twice is left for ``calmops relaunch`` (a block that kills its worker
    every time, e.g. by running out of memory, must not loop for ever).
    """
    requests = []
    for run, pid, host in dead_runs(context.instance, spec, in_flight):
        block = run.tags.get("dagster/partition")
        if block is None or times_reaped(context.instance, spec, block) >= 1:
            reap_run(context.instance, run, pid, host)
            if block is not None:
                context.log.error(f"{spec.name}: block {block}: run {run.run_id} lost its process again; not "
                                  f"retried automatically (`calmops relaunch {spec.name}` retries it)")
            continue
        if context.instance.get_run_ids(RunsFilter(tags={RERUN_OF_TAG: run.run_id}), limit=1):
            reap_run(context.instance, run, pid, host)
            context.log.warning(f"{spec.name}: block {block}: run {run.run_id} lost its process; marked failed, "
                                f"its rerun goes next")
            continue
        requests.append(RunRequest(run_key=f"rerun-of-{run.run_id}", job_name=job,
                                   partition_key=block, tags={PIPELINE_TAG: spec.name, "dagster/priority": "1",
                                                              RERUN_OF_TAG: run.run_id}))
    return requests
