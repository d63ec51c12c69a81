"""Headless runs: what the sensor does, then materialize the pending partitions in block order.

``calmops run NAME`` and the pipeline's schedule use this module. It works on the Dagster instance named by
``DAGSTER_HOME`` (``CALMOPS_HOME/dagster``), the same one ``dagster dev`` uses, so runs started from the shell
show up in the UI with their partitions and history.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultRunLauncher,
    RunsFilter,
)

from calmops_dagster.errors import StoreUnavailableError
from calmops_dagster.ingest.block_data import sort_block_keys
from calmops_dagster.ingest.file_scan import Unsettled, quarantine_file, unsettled_files
from calmops_dagster.ingest.ingest_record import current_versions, ingest_data_dir, load_index
from calmops_dagster.ingest.withdrawal import withdraw_moved_blocks
from calmops_dagster.steps import circuit_breaker
from calmops_dagster.orchestration.run_guard import StopSignals
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore, now_utc
from calmops_dagster.store.paths import CalmOpsHome
from calmops_dagster.store.processed_blocks import store_record
from calmops_dagster.store.storage import Location

PIPELINE_TAG = "calmops/pipeline"
#: Runs executed in-process by ``calmops run``, and runs of the warm run launcher, carry the host and pid of
#: their process, so a later ``calmops run`` can tell a run whose process was killed from one still going.
PID_TAG, HOST_TAG = "calmops/pid", "calmops/host"
#: Set on a run whose dead process :func:`reap_dead_runs` found and marked failed.
REAPED_TAG = "calmops/reaped"
#: Set on the run the file sensor requested to replace a dead run (its run id).
RERUN_OF_TAG = "calmops/rerun_of"
#: Set by ``data_block`` on its run: the version of the block it loaded (hash of its file versions' hashes,
#: :func:`calmops_dagster.ingest.ingest_record.block_version`). A block is processed at a version when a
#: successful run carries it.
VERSION_TAG = "calmops/block_version"
IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
             DagsterRunStatus.STARTED]


def final_asset(spec: PipelineSpec) -> AssetKey:
    """The last asset of a block's run: a block is processed once it is materialized."""
    return AssetKey([spec.name, "predictions"])


def expected_kinds(models: ModelStore) -> dict[str, str] | None:
    """The champion's training schema (feature -> numeric/categorical), used to refuse wrongly-typed files."""
    champion = models.champion_version()
    return models.manifest(champion).get("feature_kinds") if champion else None


def record_bad_files(spec: PipelineSpec, bad, metrics: MetricsStore, log) -> None:
    """Quarantine every bad file (moved aside when the folder allows) and record it in DuckDB."""
    rows = []
    for item in bad:
        moved = quarantine_file(item.path)
        where = f"moved to {moved}" if moved else "left in place (folder not writable)"
        log.error(f"quarantined data file {item.path.name}: {item.reason}; {where}")
        if moved is None and _already_quarantined(metrics, spec, item):
            continue  # a file left in place is seen again by every cursor-less scan: record it once
        rows.append({"pipeline": spec.name, "file": str(item.path), "reason": item.reason,
                     "content_hash": item.sha256, "moved_to": str(moved) if moved else None,
                     "quarantined_at": now_utc()})
    metrics.append_rows("quarantine", rows)


def _already_quarantined(metrics: MetricsStore, spec: PipelineSpec, item) -> bool:
    rows = metrics.query("SELECT 1 FROM quarantine WHERE pipeline = ? AND file = ? AND content_hash IS NOT "
                         "DISTINCT FROM ? AND moved_to IS NULL", [spec.name, str(item.path), item.sha256],
                         pipeline=spec.name)
    return len(rows) > 0


def pending_blocks(instance: DagsterInstance, spec: PipelineSpec, skip_in_flight: bool = True,
                   metrics: MetricsStore | None = None) -> list[str]:
    """Registered blocks not yet processed at their current version, in block order (stream pipelines: in
    the order their files arrived, which is the order their partitions were registered).

    A block is processed at its current version (the ingest record's, :mod:`~calmops_dagster.ingest.
    ingest_record`) when the store's record says its results are of that version
    (:func:`processed_versions`): a file that changed after its blocks were processed makes them pending
    again, and so does a store that lost its state. A block the ingest record does not know (registered by
    hand) is pending until its final asset is materialized. With ``skip_in_flight``, blocks that already have
    a queued or running run are left out. ``metrics`` defaults to ``CALMOPS_HOME``'s database.
    """
    reap_dead_runs(instance, spec)
    metrics = metrics or MetricsStore(CalmOpsHome.from_env().metrics_db)
    registered = instance.get_dynamic_partitions(spec.partitions_name)
    versions = current_versions(metrics, spec)
    done = processed_versions(instance, spec, metrics)
    materialized = instance.get_materialized_partitions(final_asset(spec)) if set(registered) - set(versions) else set()
    pending = unprocessed_blocks(registered, versions, done, materialized)
    if skip_in_flight and pending:
        runs = instance.get_runs(RunsFilter(tags={PIPELINE_TAG: spec.name}, statuses=IN_FLIGHT))
        busy = {run.tags.get("dagster/partition") for run in runs}
        pending = [block for block in pending if block not in busy]
    return pending if spec.type == "stream" else sort_block_keys(pending)


def unprocessed_blocks(registered: list[str], versions: dict[str, str], processed: set[tuple[str, str]],
                       materialized: set[str]) -> list[str]:
    """The ``registered`` blocks to process, in their order: those whose current version (``versions``, the
    ingest record's) is not among the ``processed`` (block, version) pairs, and those the ingest record does
    not know whose final asset is not ``materialized``.

    >>> unprocessed_blocks(["1", "2", "3"], {"1": "a", "2": "b"}, {("1", "a"), ("2", "old")}, set())
    ['2', '3']
    """
    return [block for block in registered
            if ((block, versions[block]) not in processed if block in versions else block not in materialized)]


def processed_versions(instance: DagsterInstance, spec: PipelineSpec, metrics: MetricsStore) -> set[tuple[str, str]]:
    """(block, version) of every block whose results the store holds, from the store's own record
    (:mod:`~calmops_dagster.store.processed_blocks`), not from ``instance``'s run history: a new, empty store
    has processed nothing, whatever this machine ran before.

    A block processed before that record was kept has its rows in the store's ``blocks`` table, which names the
    run that loaded them: it counts at that run's version (:data:`VERSION_TAG`) when the run succeeded."""
    processed, loaded_by = store_record(metrics, spec.name)
    done = set(processed.items())
    if loaded_by:
        runs = instance.get_runs(RunsFilter(run_ids=list(loaded_by.values()), statuses=[DagsterRunStatus.SUCCESS]))
        by_run = {run_id: block for block, run_id in loaded_by.items()}
        done |= {(by_run[run.run_id], run.tags[VERSION_TAG]) for run in runs if VERSION_TAG in run.tags}
    return done


def dead_runs(instance: DagsterInstance, spec: PipelineSpec) -> list[DagsterRun]:
    """The in-flight runs of ``spec`` whose process on this host no longer exists.

    Three kinds of run are looked after: runs executed in-process by ``calmops run`` and runs launched by the
    local instance's warm run launcher (both carry pid and host tags), and runs launched by Dagster's
    default run launcher (``CALMOPS_RUN_LAUNCHER=dagster``), a subprocess on this host whose pid Dagster
    records in the run's "Started process for run" event. Runs of other launchers (Docker, Kubernetes) are
    left to Dagster's run monitoring.

    A run whose process is gone is read again before it counts as dead: its worker may have reported the
    run's end and exited between the first read and the look at its process (seen under load in `dagster
    dev`: a finished block was requested again). Once the process is gone, every status it wrote is stored.
    """
    dead = []
    for run in instance.get_runs(RunsFilter(tags={PIPELINE_TAG: spec.name}, statuses=IN_FLIGHT)):
        pid, host = _run_process(instance, run)
        if pid is not None and host == socket.gethostname() and not process_alive(pid):
            current = instance.get_run_by_id(run.run_id)
            if current is not None and current.status in IN_FLIGHT:
                dead.append((current, pid, host))
    return dead


def reap_run(instance: DagsterInstance, run: DagsterRun, pid: int, host: str) -> None:
    """Mark a dead run failed and tag it ``calmops/reaped``: its block is pending again and the pipeline's
    run-queue slot is free."""
    instance.report_run_failed(run, f"its process {pid} on {host} is gone (killed mid-run?)")
    instance.add_run_tags(run.run_id, {REAPED_TAG: "true"})


def reap_dead_runs(instance: DagsterInstance, spec: PipelineSpec) -> list[DagsterRun]:
    """Mark failed every run of :func:`dead_runs`. Without this, a run worker killed mid-block (OOM,
    SIGKILL, a machine reboot) would stay "started" for ever and, with one run per pipeline at a time,
    hold up every later block. Returns the runs marked failed."""
    reaped = []
    for run, pid, host in dead_runs(instance, spec):
        reap_run(instance, run, pid, host)
        reaped.append(run)
    return reaped


def interrupted_steps(instance: DagsterInstance, run_id: str) -> list[str]:
    """Steps of a run that started and never finished: its process died (SIGKILL, out of memory) while they
    ran, so no step failure was ever reported for them."""
    started, finished = [], set()
    kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
    for entry in instance.all_logs(run_id, of_type=kinds):
        event = entry.dagster_event
        if event.event_type == DagsterEventType.STEP_START:
            started.append(event.step_key)
        else:
            finished.add(event.step_key)
    return [step for step in started if step not in finished]


def failed_runs(instance: DagsterInstance, spec: PipelineSpec, block: str) -> int:
    """How many runs of ``block`` failed."""
    tags = {PIPELINE_TAG: spec.name, "dagster/partition": block}
    return len(instance.get_run_ids(RunsFilter(tags=tags, statuses=[DagsterRunStatus.FAILURE])))


def times_reaped(instance: DagsterInstance, spec: PipelineSpec, block: str) -> int:
    """How many runs of ``block`` were marked failed by :func:`reap_dead_runs`."""
    tags = {PIPELINE_TAG: spec.name, "dagster/partition": block, REAPED_TAG: "true"}
    return len(instance.get_run_ids(RunsFilter(tags=tags)))


def _run_process(instance: DagsterInstance, run: DagsterRun) -> tuple[int | None, str | None]:
    """The pid and host of the process executing ``run``, when it is a process on a known host."""
    if run.tags.get(PID_TAG):
        return int(run.tags[PID_TAG]), run.tags.get(HOST_TAG)
    if run.status != DagsterRunStatus.STARTED or not isinstance(instance.run_launcher, DefaultRunLauncher):
        return None, None
    for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        pid = data.metadata.get("pid") if data else None
        if pid is not None and str(pid.value).isdigit():
            # the default launcher starts the run worker from the code server, on this host
            return int(pid.value), socket.gethostname()
    return None, None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed child not yet reaped by its parent) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def pipeline_dir(models: ModelStore) -> Location:
    """The pipeline's state folder (``pipelines/<name>`` under the storage root), where its models and
    incoming store live."""
    return models.root.parent


@dataclass
class Registered:
    """What :func:`register_new_blocks` found: new partitions, blocks with new file versions, files set aside
    ("name: reason"), duplicates, files still being written ("name (why)"), blocks withdrawn ("block:
    reason", :mod:`~calmops_dagster.ingest.withdrawal`), and blocks read again that this instance knows but
    the store has no record of processing (a new or emptied store)."""

    new_blocks: list[str]
    changed_blocks: list[str]
    set_aside: list[str]
    duplicates: list[str]
    waiting: list[str]
    withdrawn: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)


def register_new_blocks(instance: DagsterInstance, spec: PipelineSpec, metrics: MetricsStore,
                        models: ModelStore, log,
                        wait_to_settle: Callable[[Unsettled], None] | None = None) -> Registered:
    """Ingest ``data_dir`` as the sensor does (through the ingest record, so files already known by size,
    mtime and hash are not read again), quarantine bad files, and add partitions for every recorded block the
    instance does not know yet. Processed blocks that no current file version holds any more are withdrawn
    and their partitions deleted.

    With ``wait_to_settle`` (a headless run), files younger than ``settle_seconds`` are waited out first,
    once: it is called with them and returns when they should have settled; the scan then reads each one
    that did not change meanwhile, so a run started right after its files were written processes them.
    """
    cursor = None
    if wait_to_settle is not None:
        young = unsettled_files(spec, load_index(metrics, spec.name)[0])
        if young.seen:
            wait_to_settle(young)
            cursor = {"seen": young.seen, "seq": 0}
    ingest = ingest_data_dir(spec, metrics, pipeline_dir(models), cursor=cursor,
                             expected_kinds=expected_kinds(models))
    scan = ingest.scan
    record_bad_files(spec, scan.bad, metrics, log)
    for name in scan.waiting:
        log.info(f"file {name} is not complete yet; it will be read on a later run")
    for name in scan.duplicates:
        log.warning(f"file {name} holds content already accepted; ignored")
    versions = ingest.versions
    withdrawn = withdraw_moved_blocks(metrics, spec, pipeline_dir(models), models.champion_version())
    known = set(instance.get_dynamic_partitions(spec.partitions_name))
    for item in withdrawn:
        log.warning(f"block {item.block} withdrawn: {item.reason}")
        if item.block in known:
            instance.delete_dynamic_partition(spec.partitions_name, item.block)
    found = scan.blocks()
    order = list(found) if spec.type == "stream" else sort_block_keys(found)
    new = [block for block in [*order, *sort_block_keys(versions)] if block in versions and block not in known]
    new = list(dict.fromkeys(new))
    if new:
        instance.add_dynamic_partitions(spec.partitions_name, new)
    on_record = {block for block, _version in processed_versions(instance, spec, metrics)} if order else set()
    return Registered(new_blocks=new, changed_blocks=[b for b in order if b in known and b in on_record],
                      set_aside=[f"{item.path.name}: {item.reason}" for item in scan.bad],
                      duplicates=scan.duplicates, waiting=scan.waiting,
                      withdrawn=[f"{item.block}: {item.reason}" for item in withdrawn],
                      unrecorded=[b for b in order if b in known and b not in on_record])


@dataclass
class BlockRun:
    block: str
    success: bool
    seconds: float
    summary: str
    store_failure: str | None = None
    """The object store failed during this block's run or right after it (the store's one-line message):
    the run stopped there."""
    not_started: tuple[str, ...] = ()
    """With ``store_failure``: the pending blocks the run did not start."""


def summarize_block(metrics: MetricsStore, spec: PipelineSpec, block: str) -> str:
    """One line about a processed block, read back from DuckDB."""
    rows = metrics.query(
        "SELECT b.rows, s.drift_detected, s.drift_share, p.decision, p.champion_after, p.reason "
        "FROM blocks b LEFT JOIN drift_summary s USING (pipeline, block) "
        "LEFT JOIN promotions p USING (pipeline, block) WHERE b.pipeline = ? AND b.block = ?",
        [spec.name, block], pipeline=spec.name,
    )
    if rows.empty:
        return "no metrics recorded"
    row = rows.iloc[0]
    if spec.prediction_only:
        return f"{row['rows']} rows predicted"
    drift = "drift" if row["drift_detected"] else "no drift"
    return (f"{row['rows']} rows, {drift} (share {row['drift_share']:.2f}), {row['decision']}, "
            f"champion {row['champion_after'] or 'none'}: {row['reason']}")


#: Keep Dagster's per-event lines out of the console of headless runs (they stay in the run's log): its
#: console only gets the runs' warnings (``calmops_console``); each block's line names its failure. The
#: per-pipeline log file (calmops_dagster.orchestration.pipeline_logs) still gets every INFO line and stack.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}, "calmops_console": {},
                                "calmops_file": {}}}


def run_pending(instance: DagsterInstance, spec: PipelineSpec, job, metrics: MetricsStore,
                stop: StopSignals | None = None, say=print) -> list[BlockRun]:
    """Execute the pipeline's job for every pending block, in order, in-process, on ``instance``.

    ``job`` is the resolved job of the pipeline (``Definitions.resolve_job_def``), so runs appear in the UI
    under the same job the sensor uses. A failing block is reported and the next blocks still run (the
    champion only changes when a block succeeds). Before each block, runs of the pipeline that another
    process started (``dagster dev``'s launcher) are waited for, and the pending blocks are looked up again,
    so one block is processed at a time whoever started it. With ``stop``, each block's run finishes whatever
    SIGTERM/SIGINT arrives meanwhile (:meth:`StopSignals.finish`); once one arrived, no next block starts
    (``stop.received`` says which). When the object store fails (after its client's retries), the block it
    failed in, or after, carries the failure (:attr:`BlockRun.store_failure`) and no next block starts: the
    store's failure is not the block's, so the circuit breaker does not count it.
    """
    results = []
    for run in reap_dead_runs(instance, spec):  # an earlier `calmops run` killed mid-block
        steps = interrupted_steps(instance, run.run_id)
        record_run_outcome(metrics, spec, run.run_id, run.tags.get("dagster/partition"), steps,
                           [f"{step}: interrupted (the run's process died while it ran)" for step in steps],
                           run_failed=True)
    tags = {PIPELINE_TAG: spec.name, PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    tried: set[str] = set()
    pending: list[str] = []
    while not (stop and stop.received):
        try:
            wait_for_other_runs(instance, spec, stop, say)
            pending = [b for b in pending_blocks(instance, spec, metrics=metrics) if b not in tried]
        except StoreUnavailableError as exc:
            if not results:
                raise
            results[-1] = replace(results[-1], store_failure=str(exc), not_started=tuple(pending[1:]))
            break
        block = pending[0] if pending else None
        if block is None or (stop and stop.received):
            break
        tried.add(block)
        started = time.monotonic()
        def execute(block=block):
            return job.execute_in_process(instance=instance, partition_key=block, tags=tags,
                                          run_config=QUIET_RUN_CONFIG, raise_on_error=False)

        outcome = stop.finish(execute) if stop else execute()
        seconds = time.monotonic() - started
        failure = store_failure_of(outcome.all_events)
        if failure is not None:
            results.append(BlockRun(block, False, seconds, failure, failure, tuple(pending[1:])))
            break
        try:
            failed_steps = [e.step_key for e in breaker_step_failures(outcome.all_events)]
            record_run_outcome(metrics, spec, outcome.run_id, block, failed_steps, _failure_messages(outcome),
                               run_failed=not outcome.success)
            if outcome.success:
                summary = summarize_block(metrics, spec, block)
            else:
                summary = "; ".join(_failure_messages(outcome)) or "failed"
        except StoreUnavailableError as exc:
            done = "processed" if outcome.success else "; ".join(_failure_messages(outcome)) or "failed"
            results.append(BlockRun(block, outcome.success, seconds, f"{done}; not recorded: {exc}", str(exc),
                                    tuple(pending[1:])))
            break
        results.append(BlockRun(block, outcome.success, seconds, summary))
    return results


def store_failure_of(events) -> str | None:
    """The object store's one-line failure when a step of the run failed because the store did
    (:class:`~calmops_dagster.errors.StoreUnavailableError` anywhere in its error's chain), else ``None``."""
    name = StoreUnavailableError.__name__
    for event in events:
        if not event.is_step_failure:
            continue
        errors = [event.step_failure_data.error]
        while errors:
            error = errors.pop()
            if error is None:
                continue
            if error.cls_name == name:  # the message is "<module>.StoreUnavailableError: <line>"
                return error.message.strip().split(f"{name}: ", 1)[-1]
            errors += [error.cause, error.context]
    return None


#: Statuses of a run that is executing now (a queued run waits for the run queue, which counts ours).
EXECUTING = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def wait_for_other_runs(instance: DagsterInstance, spec: PipelineSpec, stop: StopSignals | None = None,
                        say=print, poll_seconds: float = 1.0) -> None:
    """Wait while a run of ``spec`` started by another process executes (dead ones are reaped first)."""
    told = False
    while not (stop and stop.received):
        reap_dead_runs(instance, spec)
        running = instance.get_runs(RunsFilter(tags={PIPELINE_TAG: spec.name}, statuses=EXECUTING))
        if not running:
            return
        if not told:
            run = running[0]
            say(f"{spec.name}: waiting for run {run.run_id[:8]} (block {run.tags.get('dagster/partition')}) "
                "started elsewhere to finish")
            told = True
        time.sleep(poll_seconds)


def _failure_messages(outcome) -> list[str]:
    """What failed in a run, one message per failed step or blocking check (with what the check found; the
    step a blocking check stopped is not repeated)."""
    messages = []
    for event in outcome.all_events:
        if event.is_step_failure and not _is_check_failure(event):
            error = event.step_failure_data.error
            while error is not None and error.cause is not None:  # the user's exception, not the wrapper
                error = error.cause
            messages.append(f"{event.step_key}: {error.message.strip() if error else 'failed'}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            if not data.passed and data.severity.value == "ERROR":
                found = data.metadata.get("failures")
                messages.append(f"check {data.asset_check_key.name} failed"
                                + (f": {found.value}" if found is not None else ""))
    return messages


# --- circuit breaker glue (the transitions themselves are pure: calmops_dagster.steps.circuit_breaker) -----------

def record_run_outcome(metrics: MetricsStore, spec: PipelineSpec, run_id: str, block: str | None,
                       failed_steps: list[str], messages: list[str] | None = None, run_failed: bool = False):
    """Count a finished run of ``spec`` in its circuit breaker: a failed training/promotion step is a
    failure, a successful run is a success. Runs that failed elsewhere (e.g. an unreadable block, or
    ``run_failed`` with no failed step named) and repeats of a run id already counted change nothing.
    Returns ``(state, event)``."""
    if spec.prediction_only:
        return metrics.breaker_state(spec.name), None
    step = circuit_breaker.failed_breaker_step(failed_steps, spec.name)
    now = datetime.now(UTC)
    if step is not None:
        reason = next((m for m in messages or [] if step in m), f"{step} failed")[:500]
        config = spec.circuit_breaker

        def transition(state):
            return circuit_breaker.on_failure(state, config.max_failures, config.backoff_minutes, now,
                                              f"block {block}: {reason}")
    elif failed_steps or run_failed:
        return metrics.breaker_state(spec.name), None
    else:
        def transition(state):
            return circuit_breaker.on_success(state, now)
    return metrics.update_breaker(spec.name, transition, run_id=run_id, block=block, step=step)


def breaker_step_failures(events) -> list:
    """The step failure events that may count in the circuit breaker: all but a blocking asset check that
    failed. A champion below its thresholds is a performance finding, which retraining is there to fix;
    counting it would pause retraining exactly when it is needed."""
    return [event for event in events if event.is_step_failure and not _is_check_failure(event)]


def _is_check_failure(event) -> bool:
    error = event.step_failure_data.error if event.step_failure_data else None
    while error is not None:
        if error.cls_name == "DagsterAssetCheckFailedError":
            return True
        error = error.cause
    return False


def breaker_pause_reason(metrics: MetricsStore, spec: PipelineSpec) -> str | None:
    """Why ``spec``'s challenger must not be trained now (its circuit breaker is open), else ``None``."""
    return circuit_breaker.skip_reason(metrics.breaker_state(spec.name), datetime.now(UTC))


def close_breaker(metrics: MetricsStore, spec: PipelineSpec, reason: str = "closed by calmops relaunch"):
    return metrics.update_breaker(spec.name, lambda _state: circuit_breaker.reset(reason))
