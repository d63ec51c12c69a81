"""Withdrawn blocks: a processed block that no current file version holds any more.

Of a block pipeline's file only the newest version counts (:func:`~calmops_dagster.ingest.ingest_record.
current_rows`). When a file is rewritten so that its rows move from block 14 to block 15, block 15 is new data
and block 14 is left without rows; kept as it was, block 14 would still count as processed, with its old rows
in ``blocks``, in the history ``window`` and ``replay_mix`` retrain from, and in its predictions: the same
rows counted twice. So a processed block whose every recorded file version has been replaced by a version that
does not hold it is **withdrawn**, by every entry point right after its scan (:func:`withdraw_moved_blocks`):

- its rows leave the current metric tables (a tombstone in each table keyed by block); they stay readable in
  ``<table>_history``, with ``replaced_at``;
- its ``promotions`` row becomes a ``withdrawn`` decision whose reason names the files that held the block and
  what they hold now (the decision it replaces is in ``promotions_history``); the champion does not change;
- its kept rows (``blocks/<block>.parquet``) are removed (every accepted version stays under
  ``incoming/pieces/``) and its predictions move to ``predictions/withdrawn/<block>-<time>.parquet``.

Deleting a file from ``data_dir`` withdraws nothing: its last version stays current. A withdrawn block that
comes back in a later file version is new data, processed like any other block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from calmops_dagster.ingest.block_data import sort_block_keys
from calmops_dagster.ingest.ingest_record import current_rows
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.store.metrics_store import APPEND_ONLY, SCHEMA, MetricsStore, key_of
from calmops_dagster.store.model_store import now_utc
from calmops_dagster.store.paths import BLOCKS_DIR, PREDICTIONS_DIR
from calmops_dagster.store.storage import Location, as_location, write_atomic

#: The ``promotions.decision`` of a withdrawn block.
WITHDRAWN = "withdrawn"
#: The table whose tombstone marks a block withdrawn: written last, so a withdrawal cut short is done again.
PROCESSED_TABLE = "blocks"


@dataclass(frozen=True)
class Withdrawal:
    block: str
    reason: str


def find_withdrawals(processed, recorded: pd.DataFrame, current: pd.DataFrame) -> list[Withdrawal]:
    """The blocks of ``processed`` that the ingest record held file versions of (``recorded``: block, file)
    and none of whose versions is current (``current``: block, file), in block order, with the reason.

    Blocks the record never held (processed before it existed) are left alone.

    >>> recorded = pd.DataFrame({"block": ["13", "14", "15"], "file": ["a.csv", "batch.csv", "batch.csv"]})
    >>> current = pd.DataFrame({"block": ["13", "15"], "file": ["a.csv", "batch.csv"]})
    >>> find_withdrawals(["13", "14"], recorded, current)
    [Withdrawal(block='14', reason='no current file version holds its rows: batch.csv now holds block(s) 15')]
    """
    now_holds = {file: sort_block_keys(group["block"]) for file, group in current.groupby("file")}
    gone = set(processed) & set(recorded["block"]) - set(current["block"])
    withdrawals = []
    for block in sort_block_keys(gone):
        files = sorted(set(recorded.loc[recorded["block"] == block, "file"]))
        where = "; ".join(f"{file} now holds block(s) {', '.join(now_holds[file])}" if file in now_holds
                          else f"{file} holds no current rows" for file in files)
        withdrawals.append(Withdrawal(block, f"no current file version holds its rows: {where}"))
    return withdrawals


def blocks_to_withdraw(metrics: MetricsStore, spec: PipelineSpec) -> list[Withdrawal]:
    """The processed blocks of ``spec`` to withdraw now (none for stream pipelines: their partitions are
    immutable file versions)."""
    if spec.type == "stream":
        return []
    processed, recorded = metrics.queries(
        [("SELECT block FROM blocks WHERE pipeline = ?", [spec.name]),
         ("SELECT DISTINCT block, file FROM block_files WHERE pipeline = ?", [spec.name])], pipeline=spec.name)
    if processed.empty:
        return []
    return find_withdrawals(processed["block"], recorded, current_rows(metrics, spec))


def block_tables() -> list[str]:
    """The metric tables keyed by (pipeline, block, ...): those a block's rows leave when it is withdrawn."""
    return [table for table in SCHEMA if table not in APPEND_ONLY and key_of(table)[:2] == ("pipeline", "block")]


def withdraw_block(metrics: MetricsStore, spec: PipelineSpec, state_dir: Location, withdrawal: Withdrawal,
                   champion: str | None, now: str | None = None) -> None:
    """Withdraw one block (module docstring): the ``withdrawn`` decision, tombstones, its files moved aside.

    ``now`` is the decision's time (ISO text, :func:`now_utc`). Idempotent: a withdrawal cut short is found
    again (its ``blocks`` row is removed last) and done again.
    """
    now = now or now_utc()
    block = withdrawal.block
    metrics.replace_block_rows("promotions", spec.name, block, [{
        "champion_before": champion, "challenger": None, "decision": WITHDRAWN, "reason": withdrawal.reason,
        "champion_after": champion, "decided_at": now}])
    others = [t for t in block_tables() if t not in ("promotions", PROCESSED_TABLE)]
    scopes = metrics.queries(
        [(f"SELECT DISTINCT {', '.join(key_of(t)[2:]) or 'true AS present'} FROM {t} WHERE pipeline = ? AND block = ?",
          [spec.name, block]) for t in others], pipeline=spec.name)
    for table, found in zip(others, scopes, strict=True):
        for scope in found.to_dict("records"):
            metrics.replace_block_rows(table, spec.name, block, [], scope={k: scope[k] for k in key_of(table)[2:]})
    state_dir = as_location(state_dir)
    (state_dir / BLOCKS_DIR / f"{block}.parquet").unlink(missing_ok=True)
    predictions = state_dir / PREDICTIONS_DIR / f"{block}.parquet"
    if predictions.exists():
        stamp = re.sub(r"[^0-9T]", "", now)[:15]  # 2026-01-05T10:30:00.1+00:00 -> 20260105T103000
        write_atomic(state_dir / PREDICTIONS_DIR / WITHDRAWN / f"{block}-{stamp}.parquet", predictions.read_bytes())
        predictions.unlink(missing_ok=True)
    metrics.replace_block_rows(PROCESSED_TABLE, spec.name, block, [])


def withdraw_moved_blocks(metrics: MetricsStore, spec: PipelineSpec, state_dir: Location,
                          champion: str | None) -> list[Withdrawal]:
    """Withdraw every processed block of ``spec`` that no current file version holds (the call every entry point
    makes after its scan); ``state_dir`` is the pipeline's state folder, ``champion`` the champion in force,
    which a withdrawal leaves as it is. Returns the withdrawals made."""
    withdrawals = blocks_to_withdraw(metrics, spec)
    for withdrawal in withdrawals:
        withdraw_block(metrics, spec, state_dir, withdrawal, champion)
    return withdrawals
