"""Re-evaluate a processed block: its kept rows judged against a chosen champion and/or changed settings.

"What would the new thresholds have said last quarter?" The block's kept rows
(``pipelines/<name>/blocks/<block>.parquet``) are assessed against the champion asked for (by default the
one in force when the block was first processed) with the settings recorded then plus the changes. The
results go to ``reevaluation_summary`` / ``reevaluation_results``, marked with the re-evaluation's id and
what was changed, beside the original decisions, never over them. Nothing is trained and no champion moves.
"""

from __future__ import annotations

import copy
import json

from calmops_dagster.errors import CalmOpsError
from calmops_dagster.ingest.block_data import sort_block_keys
from calmops_dagster.ingest.block_history import read_blocks
from calmops_dagster.learning.block_assessment import assessment_rows
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.assess_block import DRIFT_COLUMNS, assess_against, hold_retrain, summary_row
from calmops_dagster.steps.block_context import settings_of, spec_with_settings
from calmops_dagster.steps.results import Reevaluation
from calmops_dagster.steps.step_context import StepContext
from calmops_dagster.store.model_store import now_utc


def reevaluate_block(ctx: StepContext, reevaluation_id: str, against: str = "",
                     changes: dict | None = None) -> Reevaluation:
    """Judge ``ctx.block`` again against ``against`` (``""``: the champion of its first run; ``current``; or
    a version) with the recorded settings changed by ``changes`` (``{"drift.alpha": 0.01}``)."""
    spec, block, store, db, recorded = ctx.spec, ctx.block, ctx.models, ctx.metrics, ctx.recorded
    original = db.query("SELECT reference_version, drift_detected, retrain FROM drift_summary "
                        "WHERE pipeline = ? AND block = ?", [spec.name, block], pipeline=spec.name)
    if original.empty:
        raise CalmOpsError(f"block {block} of '{spec.name}' was never processed: nothing to re-evaluate")
    first = original.iloc[0]
    then = recorded.champion_version if recorded else first["reference_version"]
    version = {"": then, "current": store.champion_version()}.get(against, against)
    if version not in store.versions():
        raise CalmOpsError(f"--against {against or then}: no such model version of '{spec.name}'")
    changes = dict(changes or {})
    settings = changed_settings(recorded.settings if recorded and recorded.settings else settings_of(spec), changes)
    frame = read_blocks(ctx.paths.blocks_dir(spec.name), [block])
    assessment = assess_against(spec_with_settings(spec, settings), store, frame, version)
    decision, _ = hold_retrain(assessment.decision, recorded.promotion_hold if recorded else None)
    row = summary_row(assessment, decision, version)
    what = {**({"against": version} if version != then else {}), **changes}
    stamp, scope = now_utc(), {"reevaluation_id": reevaluation_id}
    db.replace_block_rows("reevaluation_summary", spec.name, block, [{
        **row, "run_id": ctx.run_id, "against": version, "changes": json.dumps(what, sort_keys=True),
        "original_reference_version": first["reference_version"],
        "original_drift_detected": bool(first["drift_detected"]), "original_retrain": bool(first["retrain"]),
        "computed_at": stamp,
    }], scope=scope)
    rows = assessment_rows(assessment).reindex(columns=DRIFT_COLUMNS)
    db.replace_block_rows("reevaluation_results", spec.name, block,
                          rows.assign(run_id=ctx.run_id, computed_at=stamp), scope=scope)
    ctx.log.info(f"block {block} re-evaluated against {version} ({what or 'no change'}): {decision.reason}")
    return Reevaluation(
        block=block, reevaluation_id=reevaluation_id, against=version, changes=what,
        drift_detected=bool(row["drift_detected"]), drift_share=float(row["drift_share"]),
        retrain=bool(row["retrain"]), reason=row["reason"],
        original_drift_detected=bool(first["drift_detected"]), original_retrain=bool(first["retrain"]),
    )


#: Settings a re-evaluation may change (``--drift.alpha 0.01``, ``--performance.max_relative_drop 0.2``).
CHANGEABLE = ("drift", "performance")


def select_blocks(text: str | None, processed: list[str]) -> list[str]:
    """The processed blocks named by ``text`` (``1-5``, ``1,3,7``, ``2-4,9``; ``None``: all), in block order.

    >>> select_blocks("2-4,6", ["1", "2", "3", "4", "5", "6"])
    ['2', '3', '4', '6']
    """
    ordered = sort_block_keys(processed)
    if not text:
        return ordered
    chosen = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        low, sep, high = part.partition("-")
        if sep:  # a range: every processed block from low to high in block order
            missing = [k for k in (low, high) if k not in ordered]
            if missing:
                raise CalmOpsError(f"--blocks {text}: block(s) {missing} not processed (processed: {ordered})")
            chosen.update(ordered[ordered.index(low): ordered.index(high) + 1])
        elif part in ordered:
            chosen.add(part)
        else:
            raise CalmOpsError(f"--blocks {text}: block '{part}' not processed (processed: {ordered})")
    return [block for block in ordered if block in chosen]


def changed_settings(recorded: dict, changes: dict[str, object]) -> dict:
    """``recorded`` settings with the dotted ``changes`` (``{"drift.alpha": 0.01}``) applied."""
    settings = copy.deepcopy(recorded)
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if section not in CHANGEABLE or not field or "." in field:
            raise CalmOpsError(f"--{key}: a re-evaluation changes drift.* and performance.* settings only")
        settings.setdefault(section, {})[field] = value
    return settings


def check_changes(spec: PipelineSpec, changes: dict[str, object]) -> None:
    """Refuse changes the spec's validation would refuse, before any run starts."""
    try:
        spec_with_settings(spec, changed_settings(settings_of(spec), changes))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise CalmOpsError(f"invalid re-evaluation settings: {exc}") from None

