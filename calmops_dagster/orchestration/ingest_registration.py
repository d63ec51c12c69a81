"""Ingest registration: what the file sensor and ``calmops run`` do with ``data_dir`` before any run.

The folder is scanned through the ingest record (:mod:`calmops_dagster.ingest.ingest_record`), bad files are
quarantined and recorded, every recorded block the Dagster instance does not know yet becomes a dynamic
partition, and a processed block no current file version holds any more is withdrawn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dagster import DagsterInstance

from calmops_dagster.ingest.block_data import sort_block_keys
from calmops_dagster.ingest.file_scan import Unsettled, quarantine_file, unsettled_files
from calmops_dagster.ingest.ingest_record import ingest_data_dir, load_index
from calmops_dagster.ingest.withdrawal import withdraw_moved_blocks
from calmops_dagster.orchestration.headless_runs import processed_versions
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore, now_utc
from calmops_dagster.store.storage import Location


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

