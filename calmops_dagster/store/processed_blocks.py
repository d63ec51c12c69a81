"""The store's record of processed blocks: the version of each block whose results the store holds.

The metric table ``processed_blocks`` (pipeline, block, block_version, run_id, processed_at) gets a row when a
block's run has stored its last output (its predictions), naming the block version that run loaded (the
hash of its file versions, :func:`calmops_dagster.ingest.ingest_record.block_version`). One row per block: a
later version replaces it, and the rows it replaced stay in ``processed_blocks_history``.

What is pending is decided from this record, which lives with the results it describes, not from a Dagster
instance's run history, which lives on one machine: a store that lost its state (a new, empty bucket) has no
record, so every block is processed again from the first, and a new ``DAGSTER_HOME`` or another machine sharing
the store sees what the store holds.
"""

from __future__ import annotations

from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import now_utc

TABLE = "processed_blocks"


def record_processed(metrics: MetricsStore, pipeline: str, block: str, version: str, run_id: str) -> None:
    """Record that run ``run_id`` stored the results of ``block`` at ``version``."""
    metrics.replace_block_rows(TABLE, pipeline, block, [{"block_version": version, "processed_at": now_utc()}],
                               run_id=run_id)


def store_record(metrics: MetricsStore, pipeline: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(processed, loaded_by)``: the version each recorded block was processed at, and for each block the
    store holds rows of (``blocks``) but no record, the run that loaded those rows (blocks processed before
    this record was kept)."""
    rows = metrics.rows(
        "SELECT coalesce(p.block, b.block) AS block, p.block_version, b.run_id "
        "FROM (SELECT block, run_id FROM blocks WHERE pipeline = ?) b "
        f"FULL JOIN (SELECT block, block_version FROM {TABLE} WHERE pipeline = ?) p ON b.block = p.block",
        [pipeline, pipeline], pipeline=pipeline)
    processed = {row["block"]: row["block_version"] for row in rows if row["block_version"] is not None}
    loaded_by = {row["block"]: row["run_id"] for row in rows
                 if row["block_version"] is None and row["run_id"] is not None}
    return processed, loaded_by
