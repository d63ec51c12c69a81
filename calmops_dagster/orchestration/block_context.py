"""What was in force when a block was first processed, so that a rerun reproduces it.

The first run of a block records, in DuckDB ``block_context`` (one row per block), the champion it was
judged against, the spec's ``drift``, ``performance`` and ``promotion`` settings, the late-block verdict,
the challenger trained for it and the champion after its decision. Once the decision is made
(``decided``), every later materialization of any asset of the block (the UI's "Materialize", a backfill,
``dagster asset materialize``) is a **rerun**: it uses that champion, its reference data and those settings,
reuses the recorded challenger instead of training one, and never moves the champion pointer. So drift
rows, scores and the decision come out as they did, and history is not rewritten by a normal Dagster action.
"""

from __future__ import annotations

import json
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


def read_context(metrics: MetricsStore, spec: PipelineSpec, block: str) -> BlockContext | None:
    """The recorded context of ``block``, or ``None`` when it has none yet."""
    rows = metrics.query("SELECT * FROM block_context WHERE pipeline = ? AND block = ?", [spec.name, block],
                         pipeline=spec.name)
    if rows.empty:
        return None
    row = rows.iloc[0]
    values = {f.name: _clean(row.get(f.name)) for f in fields(BlockContext)}
    values["settings"] = json.loads(values["settings"]) if values["settings"] else {}
    values["late"], values["decided"] = bool(values["late"]), bool(values["decided"])
    if values["recorded_at"] is not None:
        values["recorded_at"] = pd.Timestamp(values["recorded_at"]).isoformat()
    return BlockContext(**values)


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
        current = replace(base) if base is not None else read_context(metrics, spec, block)
    if current is None or current.recorded_at is None:
        current = BlockContext(recorded_at=now_utc())
    for name, value in changes.items():
        setattr(current, name, value)
    row = {f.name: getattr(current, f.name) for f in fields(BlockContext)}
    row["settings"] = json.dumps(row["settings"], sort_keys=True)
    metrics.replace_block_rows("block_context", spec.name, block, [{**row, "run_id": run_id}])
    return current


def champions_before(store: ModelStore, context: BlockContext) -> set[str]:
    """Versions that had been champion before the block was first processed (rollback candidates then)."""
    if context.recorded_at is None:
        return set()
    recorded = pd.Timestamp(context.recorded_at)
    return {entry["version"] for entry in store.champion_history() if pd.Timestamp(entry["at"]) < recorded}
