"""Headless runs: ``calmops run NAME`` and the schedule materialize the pending blocks in block order.

They work on the Dagster instance named by ``DAGSTER_HOME`` (``CALMOPS_HOME/dagster``), the same one ``dagster
dev`` uses, so runs started from the shell show up in the UI with their partitions and history.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, replace

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from calmops_dagster.errors import StoreUnavailableError
from calmops_dagster.ingest.block_data import sort_block_keys
from calmops_dagster.ingest.ingest_record import current_versions
from calmops_dagster.orchestration.breaker_outcomes import (
    breaker_step_failures,
    is_check_failure,
    record_run_outcome,
)
from calmops_dagster.orchestration.dead_runs import interrupted_steps, reap_dead_runs
from calmops_dagster.orchestration.run_guard import StopSignals
from calmops_dagster.orchestration.run_tags import (
    EXECUTING,
    HOST_TAG,
    IN_FLIGHT,
    PID_TAG,
    PIPELINE_TAG,
    VERSION_TAG,
)
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.paths import CalmOpsHome
from calmops_dagster.store.processed_blocks import store_record


def final_asset(spec: PipelineSpec) -> AssetKey:
    """The last asset of a block's run: a block is processed once it is materialized."""
    return AssetKey([spec.name, "predictions"])


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
        if event.is_step_failure and not is_check_failure(event):
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
