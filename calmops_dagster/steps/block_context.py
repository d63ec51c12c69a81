"""What was in force when a block was first processed, so that a rerun reproduces it.

The first run of a block records, in DuckDB ``block_context`` (one row per block), the champion it was
judged against, the spec's ``drift``, ``performance`` and ``promotion`` settings, the late-block verdict,
the challenger trained for it and the champion after its decision. Once the decision is made
(``decided``), every later materialization of any asset of the block (the UI's "Materialize", a backfill,
``dagster asset materialize``) is a **rerun**: it uses that champion, its reference data and those settings,
reuses the recorded challenger instead of training one, and never moves the champion pointer. So drift
rows, scores and the decision come out as they did, and history is not rewritten by a normal Dagster action.

A pipeline's runs go one at a time (the run queue of ``dagster dev``, the run lock of ``calmops run``), so
while a run processes a block nothing else changes the block's context: it is read from the store once per
run, and each later step of the run gets what this process last read or wrote for that run
(:func:`read_context` with ``run_id``, which every :class:`~calmops_dagster.steps.step_context.StepContext`
is opened with).
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field, fields, replace

import pandas as pd

from calmops_dagster.spec import PipelineSpec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore, now_utc

#: Spec sections recorded with a block and restored by its reruns.
RECORDED_SETTINGS = ("drift", "performance", "promotion")


@dataclass
class BlockContext:
    champion_version: str | None = None
    settings: dict = field(default_factory=dict)
    late: bool = False
    promotion_hold: str | None = None
    rollback_hold: str | None = None
    challenger: str | None = None
    challenger_reason: str | None = None
    champion_after: str | None = None
    decided: bool = False
    recorded_at: str | None = None
    content_hash: str | None = None
    """Content hash of the block's rows when first processed: rows that differ are a new version of the
    block, processed as new data (not a rerun)."""


def settings_of(spec: PipelineSpec) -> dict:
    """The recorded sections of ``spec`` as plain data."""
    return {name: getattr(spec, name).model_dump(mode="json") for name in RECORDED_SETTINGS}


def spec_with_settings(spec: PipelineSpec, settings: dict) -> PipelineSpec:
    """``spec`` with its recorded sections replaced by ``settings`` (sections not recorded stay current)."""
    update = {name: type(getattr(spec, name)).model_validate(value)
              for name, value in settings.items() if name in RECORDED_SETTINGS}
    return spec.model_copy(update=update)


def _clean(value):
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


#: Per (metric store, pipeline): the run id, block and context this process last read or wrote for it.
_LAST_OF_RUN: dict[tuple[str, str], tuple[str, str, BlockContext | None]] = {}
_LAST_OF_RUN_LOCK = threading.Lock()


def _remember(metrics: MetricsStore, spec: PipelineSpec, block: str, run_id: str | None,
              context: BlockContext | None) -> None:
    """Keep ``context`` as a query would return it (its time in ``isoformat``, its settings through JSON)."""
    if run_id is None:
        return
    if context is not None:
        context = replace(context, settings=json.loads(json.dumps(context.settings, sort_keys=True)),
                          recorded_at=_iso(context.recorded_at))
    with _LAST_OF_RUN_LOCK:
        _LAST_OF_RUN[(str(metrics.data_dir), spec.name)] = (run_id, block, context)


def _iso(when) -> str | None:
    return None if when is None else pd.Timestamp(when).isoformat()


def read_context(metrics: MetricsStore, spec: PipelineSpec, block: str,
                 run_id: str | None = None) -> BlockContext | None:
    """The recorded context of ``block``, or ``None`` when it has none yet. With ``run_id`` (the Dagster run
    asking), what this process last read or wrote for that run and block is answered without a query."""
    if run_id is not None:
        with _LAST_OF_RUN_LOCK:
            known = _LAST_OF_RUN.get((str(metrics.data_dir), spec.name))
        if known is not None and known[:2] == (run_id, block):
            return copy.deepcopy(known[2])
    context = _query_context(metrics, spec, block)
    _remember(metrics, spec, block, run_id, context)
    return context


def _query_context(metrics: MetricsStore, spec: PipelineSpec, block: str) -> BlockContext | None:
    rows = metrics.query("SELECT * FROM block_context WHERE pipeline = ? AND block = ?", [spec.name, block],
                         pipeline=spec.name)
    if rows.empty:
        return None
    row = rows.iloc[0]
    values = {f.name: _clean(row.get(f.name)) for f in fields(BlockContext)}
    values["settings"] = json.loads(values["settings"]) if values["settings"] else {}
    values["late"], values["decided"] = bool(values["late"]), bool(values["decided"])
    values["recorded_at"] = _iso(values["recorded_at"])
    return BlockContext(**values)


def decided_blocks(metrics: MetricsStore, spec: PipelineSpec) -> set[str]:
    """The blocks whose decision the store records: the blocks already processed, for event time (a store
    that lost its state has decided none, whatever a Dagster instance materialized before)."""
    rows = metrics.rows("SELECT block FROM block_context WHERE pipeline = ? AND decided", [spec.name],
                        pipeline=spec.name)
    return {row["block"] for row in rows}


def is_rerun(context: BlockContext | None) -> bool:
    """A block whose decision was made before is re-processed as a rerun."""
    return context is not None and context.decided


def write_context(metrics: MetricsStore, spec: PipelineSpec, block: str, run_id: str | None,
                  base: BlockContext | None = None, **changes) -> BlockContext:
    """Merge ``changes`` into the block's context (a new one when ``champion_version`` is given) and save
    it; return it. ``base``: the context as the calling step read it (a pipeline's runs go one at a time, so
    nothing else changed it since), which spares reading it again."""
    if "champion_version" in changes:
        current = None
    else:
        current = replace(base) if base is not None else read_context(metrics, spec, block, run_id)
    if current is None or current.recorded_at is None:
        current = BlockContext(recorded_at=now_utc())
    for name, value in changes.items():
        setattr(current, name, value)
    row = {f.name: getattr(current, f.name) for f in fields(BlockContext)}
    row["settings"] = json.dumps(row["settings"], sort_keys=True)
    metrics.replace_block_rows("block_context", spec.name, block, [{**row, "run_id": run_id}])
    _remember(metrics, spec, block, run_id, current)
    return current


def champions_before(store: ModelStore, context: BlockContext) -> set[str]:
    """Versions that had been champion before the block was first processed (rollback candidates then)."""
    if context.recorded_at is None:
        return set()
    recorded = pd.Timestamp(context.recorded_at)
    return {entry["version"] for entry in store.champion_history() if pd.Timestamp(entry["at"]) < recorded}
