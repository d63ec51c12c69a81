"""Assess the block: drift against the champion in force, the champion's performance on it (measured with
labels, estimated without), and whether it calls for a challenger.

The first run of a block places it in event time (a late block trains no challenger to promote over newer
data) and records what is in force (:mod:`calmops_dagster.steps.block_context`); a rerun is judged against
what was recorded then. The block's ``drift_results``, ``drift_summary`` and ``performance`` rows are written,
and its HTML drift report. :func:`assess_against`, :func:`hold_retrain` and :func:`summary_row` are shared
with the re-evaluation job.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pandas as pd

from calmops_dagster.ingest.block_data import sort_block_keys
from calmops_dagster.learning import block_assessment
from calmops_dagster.learning.block_assessment import BlockAssessment, assessment_rows
from calmops_dagster.learning.event_time import EventTime, place_block
from calmops_dagster.learning.retrain_policy import RetrainDecision
from calmops_dagster.reports.block_report import write_drift_report_html
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.block_context import decided_blocks, settings_of, write_context
from calmops_dagster.steps.drift_profile import champion_profile
from calmops_dagster.steps.estimated_performance import (
    BlockEstimates,
    KeptBlocks,
    estimate_block,
    estimated_drop,
)
from calmops_dagster.steps.predict_block import ensure_champion
from calmops_dagster.steps.results import Assessment, LoadedBlock
from calmops_dagster.steps.step_context import StepContext
from calmops_dagster.store.model_store import ModelStore, now_utc

#: The columns of ``drift_results`` (and ``reevaluation_results``) a block's assessment fills.
DRIFT_COLUMNS = ["feature", "test", "statistic", "p_value", "effect_size", "threshold", "drifted", "note"]


@dataclass(frozen=True)
class _InForce:
    """The champion, settings and late-block verdict a block is judged with."""

    spec: PipelineSpec
    champion: str | None
    late: bool = False
    hold: str | None = None
    rollback_hold: str | None = None
    newest_processed: str | None = None


def assess_block(ctx: StepContext, rows: LoadedBlock) -> Assessment:
    """Measure ``rows`` against the champion in force, decide on a challenger, write the block's rows."""
    spec, block, store = ctx.spec, ctx.block, ctx.models
    frame = rows.frame
    now = _in_force(ctx, rows)
    champion, run_spec = now.champion, now.spec
    manifest = None
    if champion:  # the estimate first, from the features alone: no label is read for it
        model, manifest = store.load_verified(champion, spec.pickle_trusted)
        read_reference = cache(lambda: store.reference(champion))  # read at most once, when needed
        profile = champion_profile(store, champion, manifest, run_spec.drift, read_reference, ctx.log)
        kept = KeptBlocks(ctx.paths.blocks_dir(spec.name), block,
                          ctx.order.registered() if spec.type == "stream" else None)
        estimates = estimate_block(run_spec, store, champion, model, frame.drop(columns=spec.target or [],
                                   errors="ignore"), ctx.paths.estimation_dir(spec.name), kept)
        measured = block_assessment.assess_block(run_spec, frame, model, manifest, profile,
                                                 estimated_drop(run_spec, estimates))
    else:
        estimates = BlockEstimates(note="no estimate: no champion yet")
        measured = block_assessment.assess_block(run_spec, frame)
    # a late block is monitored, but trains no challenger to promote over newer data
    decision, held = hold_retrain(measured.decision, now.hold)
    report = measured.report
    change_row = measured.stream.first_drift_index if measured.stream is not None else None
    all_rows = assessment_rows(measured)  # what drift_results stores and the block report shows
    drift_rows = all_rows.reindex(columns=DRIFT_COLUMNS)
    _write_rows(ctx, measured, decision, now, drift_rows, estimates, change_row)
    path = None
    if report is not None:
        history = ctx.metrics.query("SELECT block, drift_share, n_drifted, drift_detected FROM drift_summary "
                                    "WHERE pipeline = ?", [spec.name], pipeline=spec.name)
        history = history.iloc[_block_order(history["block"])]
        features = manifest["features"]
        # the reference's distributions are plotted for drifted features only: read it only for them
        reference = read_reference()[features] if report.drifted_features else frame[features].iloc[:0]
        path = str(write_drift_report_html(
            report, reference, frame[features], ctx.paths.reports_dir(spec.name) / f"{block}.html",
            history=history, title=f"{spec.name} block {block}", plotlyjs="directory", results=all_rows,
        ))
    # DEBUG: the block's one INFO line is its decision (champion_model, or predictions when prediction-only)
    ctx.log.debug(f"block {block}: {decision.reason}")
    return Assessment(
        block=block, champion=champion, rerun=ctx.rerun, late=now.late, decision=decision,
        summary=report.summary() if report is not None else {},
        drifted_features=report.drifted_features if report is not None else [],
        block_scores=measured.block_scores, estimates=estimates, drift_rows=drift_rows,
        newest_processed=now.newest_processed, held=held, rollback_hold=now.rollback_hold,
        error_change_row=change_row, report_path=path,
    )


def _in_force(ctx: StepContext, rows: LoadedBlock) -> _InForce:
    """A rerun's recorded champion, settings and late verdict; or, on the block's first run, the champion
    now, its place in event time, recorded for the steps after it and for later reruns."""
    spec, block, recorded = ctx.spec, ctx.block, ctx.recorded
    if ctx.rerun:  # what was in force when the block was first processed: champion, settings, late verdict
        ctx.log.info(f"block {block} was processed before: rerun against champion {recorded.champion_version} "
                     "and the settings recorded then")
        return _InForce(ctx.settings, recorded.champion_version, recorded.late, recorded.promotion_hold,
                        recorded.rollback_hold)
    champion = ensure_champion(spec, ctx.models)
    if spec.prediction_only:
        return _InForce(spec, champion)
    when = place_in_event_time(spec, ctx.models, block, decided_blocks(ctx.metrics, spec),
                               ctx.order.registered() if spec.type == "stream" else None)
    now = _InForce(spec, champion, when.late, when.promotion_hold(spec.promotion.allow_late_promotion),
                   when.rollback_hold(), when.newest_processed if when.late else None)
    if now.late:
        ctx.log.warning(f"block {block} is late: block {when.newest_processed} was already processed")
    write_context(ctx.metrics, spec, block, ctx.run_id, champion_version=champion, settings=settings_of(spec),
                  late=now.late, promotion_hold=now.hold, rollback_hold=now.rollback_hold,
                  content_hash=rows.content_hash)
    return now


def _write_rows(ctx: StepContext, measured: BlockAssessment, decision: RetrainDecision, now: _InForce,
                drift_rows: pd.DataFrame, estimates: BlockEstimates, change_row: int | None) -> None:
    """The block's ``drift_results``, ``drift_summary`` and ``performance`` (on the block) rows."""
    spec, block, db, champion, stamp = ctx.spec, ctx.block, ctx.metrics, now.champion, now_utc()
    db.replace_block_rows("drift_results", spec.name, block, drift_rows.assign(computed_at=stamp),
                          run_id=ctx.run_id)
    db.replace_block_rows("drift_summary", spec.name, block, [{
        **summary_row(measured, decision, champion), "error_change_row": change_row, "late": now.late,
        "computed_at": stamp,
    }], run_id=ctx.run_id)
    db.replace_block_rows("performance", spec.name, block, [
        *({"model_version": champion, "role": "realized" if spec.labels else "champion", "metric": m,
           "value": v, "computed_at": stamp}
          for m, v in (measured.block_scores or {}).items()),
        *({**row, "computed_at": stamp} for row in estimates.rows(champion)),
    ], scope={"evaluated_on": "block"}, run_id=ctx.run_id)


def _block_order(blocks: pd.Series) -> list[int]:
    """Row positions of ``blocks`` in block order."""
    position = {key: i for i, key in enumerate(sort_block_keys(blocks))}
    return sorted(range(len(blocks)), key=lambda i: position[blocks.iloc[i]])


def place_in_event_time(spec: PipelineSpec, store: ModelStore, block: str, processed,
                        arrival_order: list[str] | None = None) -> EventTime:
    """:func:`~calmops_dagster.learning.event_time.place_block` for ``block`` of ``spec``: event order is
    block order, or for stream pipelines ``arrival_order`` (the partitions in registration order);
    ``processed`` are the blocks already decided; the champion's blocks come from its manifest."""
    champion = store.champion_version()
    manifest = store.manifest(champion) if champion else {}
    champion_blocks = [*manifest.get("trained_on_blocks", []), *manifest.get("history_blocks", [])]
    if spec.type == "stream":
        order = list(arrival_order or [])
    else:
        order = sort_block_keys([*processed, block, *champion_blocks])
    return place_block(block, order, processed, champion, champion_blocks)


def assess_against(spec: PipelineSpec, store: ModelStore, frame: pd.DataFrame,
                   champion: str | None) -> BlockAssessment:
    """:func:`~calmops_dagster.learning.block_assessment.assess_block` of ``frame`` against ``champion``
    (``None``: no champion yet) with ``spec``'s settings."""
    if champion is None:
        return block_assessment.assess_block(spec, frame)
    model = store.load(champion, spec.pickle_trusted)
    return block_assessment.assess_block(spec, frame, model, store.manifest(champion), store.reference(champion))


def hold_retrain(decision: RetrainDecision, hold: str | None) -> tuple[RetrainDecision, str | None]:
    """A late block's decision: it asks for no challenger when ``hold`` (the late-block rule) says so.
    Returns the decision and, when a challenger was held back, why (the ``late_kept`` reason)."""
    if not hold or not decision.retrain:
        return decision, None
    held = f"{decision.reason}; {hold}"
    return RetrainDecision(False, decision.performance_drop, f"{held}: no challenger trained"), held


def summary_row(assessment: BlockAssessment, decision: RetrainDecision, champion: str | None) -> dict:
    """The ``drift_summary`` figures of a block judged against ``champion``."""
    report, perf = assessment.report, assessment.performance
    summary = report.summary() if report is not None else {}
    drifted = report.drifted_features if report is not None else []
    return {
        "reference_version": champion, "drift_detected": bool(summary.get("drift_detected", False)),
        "drift_share": summary.get("drift_share", 0.0), "n_drifted": len(drifted),
        "n_tested": summary.get("n_tested", 0), "drifted_features": ",".join(drifted),
        "performance_drop": decision.performance_drop, "retrain": decision.retrain,
        "reason": decision.reason, "performance_metric": perf.metric if perf else None,
        "performance_value": perf.current if perf else None,
        "performance_ci_low": perf.ci_low if perf else None,
        "performance_ci_high": perf.ci_high if perf else None,
    }
