"""Headless runs: what the sensor does, then materialize the pending partitions in block order.

``calmops run NAME`` and the pipeline's schedule use this module. It works on the Dagster instance named by
``DAGSTER_HOME`` (``CALMOPS_HOME/dagster``), the same one ``dagster dev`` uses, so runs started from the shell
show up in the UI with their partitions and history.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from calmops_dagster.block_data import sort_block_keys
from calmops_dagster.file_scan import quarantine_file, scan_data_dir
from calmops_dagster.metrics_store import MetricsStore
from calmops_dagster.model_store import ModelStore, now_utc
from calmops_dagster.spec import PipelineSpec

PIPELINE_TAG = "calmops/pipeline"
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
        rows.append({"pipeline": spec.name, "file": str(item.path), "reason": item.reason,
                     "content_hash": item.sha256, "moved_to": str(moved) if moved else None,
                     "quarantined_at": now_utc()})
    metrics.append_rows("quarantine", rows)


def pending_blocks(instance: DagsterInstance, spec: PipelineSpec, skip_in_flight: bool = True) -> list[str]:
    """Registered blocks whose final asset is not materialized, in block order.

    With ``skip_in_flight``, blocks that already have a queued or running run are left out.
    """
    registered = instance.get_dynamic_partitions(spec.partitions_name)
    done = instance.get_materialized_partitions(final_asset(spec))
    pending = [block for block in registered if block not in done]
    if skip_in_flight and pending:
        runs = instance.get_runs(RunsFilter(tags={PIPELINE_TAG: spec.name}, statuses=IN_FLIGHT))
        busy = {run.tags.get("dagster/partition") for run in runs}
        pending = [block for block in pending if block not in busy]
    return sort_block_keys(pending)


def register_new_blocks(instance: DagsterInstance, spec: PipelineSpec, metrics: MetricsStore,
                        models: ModelStore, log) -> list[str]:
    """Scan ``data_dir`` as the sensor does (no cursor: every stable file), quarantine bad files, and add
    partitions for blocks the instance does not know yet. Returns the new block keys."""
    scan = scan_data_dir(spec, expected_kinds=expected_kinds(models))
    record_bad_files(spec, scan.bad, metrics, log)
    for name in scan.waiting:
        log.info(f"file {name} is still being written; it will be read on a later run")
    known = set(instance.get_dynamic_partitions(spec.partitions_name))
    new = [block for block in sort_block_keys(scan.blocks()) if block not in known]
    if new:
        instance.add_dynamic_partitions(spec.partitions_name, new)
    return new


@dataclass
class BlockRun:
    block: str
    success: bool
    seconds: float
    summary: str


def summarize_block(metrics: MetricsStore, spec: PipelineSpec, block: str) -> str:
    """One line about a processed block, read back from DuckDB."""
    rows = metrics.query(
        "SELECT b.rows, s.drift_detected, s.drift_share, p.decision, p.champion_after, p.reason "
        "FROM blocks b LEFT JOIN drift_summary s USING (pipeline, block) "
        "LEFT JOIN promotions p USING (pipeline, block) WHERE b.pipeline = ? AND b.block = ?",
        [spec.name, block],
    )
    if rows.empty:
        return "no metrics recorded"
    row = rows.iloc[0]
    if spec.prediction_only:
        return f"{row['rows']} rows predicted"
    drift = "drift" if row["drift_detected"] else "no drift"
    return (f"{row['rows']} rows, {drift} (share {row['drift_share']:.2f}), {row['decision']}, "
            f"champion {row['champion_after']}: {row['reason']}")


#: Keep Dagster's per-event DEBUG lines out of the console of headless runs (they stay in the run's log).
#: The per-pipeline log file (calmops_dagster.pipeline_logs) still gets every INFO line.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}, "calmops_file": {}}}


def run_pending(instance: DagsterInstance, spec: PipelineSpec, job, metrics: MetricsStore) -> list[BlockRun]:
    """Execute the pipeline's job for every pending block, in order, in-process, on ``instance``.

    ``job`` is the resolved job of the pipeline (``Definitions.resolve_job_def``), so runs appear in the UI
    under the same job the sensor uses. A failing block is reported and the next blocks still run (the
    champion only changes when a block succeeds).
    """
    results = []
    for block in pending_blocks(instance, spec):
        started = time.monotonic()
        outcome = job.execute_in_process(instance=instance, partition_key=block, tags={PIPELINE_TAG: spec.name},
                                         run_config=QUIET_RUN_CONFIG, raise_on_error=False)
        seconds = time.monotonic() - started
        if outcome.success:
            summary = summarize_block(metrics, spec, block)
        else:
            summary = "; ".join(_failure_messages(outcome)) or "failed"
        results.append(BlockRun(block, outcome.success, seconds, summary))
    return results


def _failure_messages(outcome) -> list[str]:
    messages = []
    for event in outcome.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None and error.cause is not None:  # the user's exception, not the wrapper
                error = error.cause
            messages.append(f"{event.step_key}: {error.message.strip() if error else 'failed'}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            if not data.passed and data.severity.value == "ERROR":
                messages.append(f"check {data.asset_check_key.name} failed")
    return messages
