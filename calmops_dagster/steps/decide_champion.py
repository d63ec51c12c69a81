"""Decide the champion: the challenger against the champion on the same rows, or an automatic rollback.

The significance test runs on the challenger's paired held-out rows
(:func:`~calmops_dagster.learning.promotion.gain_evidence`), then
:func:`~calmops_dagster.learning.promotion.decide_promotion` (the promotion rule) applies; when nothing is
promoted and the champion has degraded badly on the labelled block, a previous champion is rolled back to. A
late block never promotes over newer data nor rolls back. The champion pointer moves on the block's first
run only; a rerun re-derives the decision against the champions of the time.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from calmops_dagster.learning.evaluation import score_model, threshold_failures
from calmops_dagster.learning.event_time import LATE_KEPT
from calmops_dagster.learning.promotion import (
    PROMOTED,
    ROLLED_BACK,
    PromotionDecision,
    choose_rollback,
    decide_promotion,
    gain_evidence,
)
from calmops_dagster.reports.pipeline_overview import pipeline_overview
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.block_context import champions_before, write_context
from calmops_dagster.steps.estimated_performance import prepare_calibration
from calmops_dagster.steps.results import (
    PERFORMANCE_CHECK,
    Assessment,
    ChallengerOutcome,
    ChampionDecision,
    LoadedBlock,
    PairedRows,
)
from calmops_dagster.steps.step_context import StepContext
from calmops_dagster.store.model_store import ModelStore, now_utc


def decide_champion(ctx: StepContext, rows: LoadedBlock, assessment: Assessment,
                    challenger: ChallengerOutcome) -> ChampionDecision:
    """Decide (and on the block's first run apply) the promotion, write the ``promotions`` row, and return
    the decision with the pipeline's overview after it."""
    spec, block, store, recorded, frame = ctx.spec, ctx.block, ctx.models, ctx.recorded, rows.frame
    if ctx.rerun:  # the decision as it was made, against the champions of the time; nothing is moved
        before = recorded.champion_version
        decision, in_force, after = judge_champion(
            ctx.settings, store, frame, challenger, assessment.block_scores, before,
            champions_before(store, recorded), assessment.held, assessment.rollback_hold)
    else:
        before = store.champion_version()
        decision, in_force = settle_champion(spec, store, block, frame, challenger, assessment.block_scores,
                                             assessment.held, assessment.rollback_hold)
        after = store.champion_version()
        write_context(ctx.metrics, spec, block, ctx.run_id, recorded, champion_after=after, decided=True)
        if after not in (None, before):  # the next block's estimate reads the folds instead of fitting them
            ctx.log.debug(f"block {block}: estimation for {after}: " + prepare_calibration(
                spec, store, after, ctx.paths.estimation_dir(spec.name)))
    perf = ctx.settings.performance
    reason = decision.reason if challenger.version or decision.decision != "kept" else challenger.reason
    ctx.metrics.replace_block_rows("promotions", spec.name, block, [{
        "champion_before": before, "challenger": challenger.version, "decision": decision.decision,
        "reason": reason, "metric": perf.metric, "champion_score": decision.champion_score,
        "challenger_score": decision.challenger_score, "champion_after": after, "test": decision.test,
        "p_value": decision.p_value, "ci_low": decision.ci_low, "ci_high": decision.ci_high,
        "late": assessment.late, "decided_at": now_utc(), "trained_by": challenger.trained_by,
    }], run_id=ctx.run_id)
    drift = "drift" if assessment.drift_detected else "no drift"
    ctx.log.info(f"block {block}: {decision.decision} ({reason}); {drift}; champion {after or 'none'}")
    failures = [f"no champion ({reason})"] if after is None else threshold_failures(in_force or {}, perf.thresholds)
    unlabelled = spec.target not in frame.columns  # delayed labels: nothing to check yet
    untrained = after is None and challenger.version is None  # e.g. too few rows to train
    ctx.alerts({PERFORMANCE_CHECK: failures})  # the block's rows are all written: its alerts can be told
    return ChampionDecision(
        block=block, decision=decision, reason=reason, before=before, after=after, in_force=in_force,
        late=assessment.late, rerun=ctx.rerun, failures=failures,
        # a late block never replaces the champion, so its predictions are made by the champion in force anyway
        blocking=not (assessment.late or unlabelled or untrained),
        overview=pipeline_overview(ctx.paths, spec.name, spec.performance.metric, metrics=ctx.metrics),
    )


def _rollback(spec: PipelineSpec, store: ModelStore, frame: pd.DataFrame, block_scores: dict | None,
              current_version: str | None, previous: set[str]):
    """The automatic rollback decision from ``current_version`` to one of the ``previous`` champions, or
    ``None`` (see :func:`choose_rollback`)."""
    metric = spec.performance.metric
    if current_version is None or not block_scores or metric not in block_scores:
        return None
    reference = (store.manifest(current_version).get("metrics") or {}).get(metric)
    previous = set(previous) - {current_version}
    if reference is None or not previous:
        return None
    candidates = {}
    for version in sorted(previous):
        features = store.manifest(version)["features"]
        candidates[version] = score_model(store.load(version, spec.pickle_trusted), frame[features], frame[spec.target],
                                          spec.task)[metric]
    target = choose_rollback(metric, block_scores[metric], reference, spec.performance.rollback_drop, candidates)
    if target is None:
        return None
    return PromotionDecision(
        ROLLED_BACK,
        f"champion {current_version} {metric} {block_scores[metric]:.4f} fell more than "
        f"{spec.performance.rollback_drop:.0%} below its reference {reference:.4f}; "
        f"previous champion {target} scores {candidates[target]:.4f} on the block",
        metric, block_scores[metric], candidates[target],
    ), target


def paired_evidence(spec: PipelineSpec, paired: PairedRows | None):
    """The significance test of the challenger's gain on the paired evaluation rows (``None``: no champion)."""
    if paired is None:
        return None
    perf = spec.performance
    return gain_evidence(spec.task, perf.metric, paired.y_true, paired.champion_pred,
                         paired.challenger_pred, perf.min_improvement, perf.alpha, perf.n_bootstrap, spec.seed)


def settle_champion(spec: PipelineSpec, store: ModelStore, block: str, frame: pd.DataFrame,
                    challenger: ChallengerOutcome, block_scores: dict | None, held: str | None = None,
                    rollback_hold: str | None = None) -> tuple[PromotionDecision, dict | None]:
    """Decide, move the champion pointer, and return the decision and the in-force champion's scores.

    ``held`` says why the block called for a challenger that the late-block rule did not let it train (the
    decision is then ``late_kept``); ``rollback_hold`` why an automatic rollback must not happen (a late
    block): a rollback that would have happened is then recorded as ``late_kept`` and not applied.
    """
    current = store.champion_version()
    previous = {h["version"] for h in store.champion_history()}
    decision, in_force, target = judge_champion(spec, store, frame, challenger, block_scores, current, previous,
                                                held, rollback_hold)
    if target != current:
        store.set_champion(target, block, decision.decision)
    return decision, in_force


def judge_champion(spec: PipelineSpec, store: ModelStore, frame: pd.DataFrame, challenger: ChallengerOutcome,
                   block_scores: dict | None, current: str | None, previous: set[str], held: str | None = None,
                   rollback_hold: str | None = None) -> tuple[PromotionDecision, dict | None, str | None]:
    """The decision of :func:`settle_champion` with ``current`` in force and ``previous`` champions to roll
    back to, without moving anything: ``(decision, in-force scores, champion after)``. A rerun calls it with
    the champions of the time the block was first processed."""
    perf = spec.performance
    if challenger.version is None:
        decision = decide_promotion(perf.metric, None, None, perf.thresholds)
    elif spec.type == "ipip":
        decision = PromotionDecision(
            PROMOTED, "ipip retrains every block: the updated ensembles replace the champion", perf.metric,
            (challenger.champion_scores or {}).get(perf.metric), challenger.challenger_scores[perf.metric])
    else:
        evidence = paired_evidence(spec, challenger.paired)
        decision = decide_promotion(perf.metric, challenger.challenger_scores, challenger.champion_scores,
                                    perf.thresholds, perf.min_improvement, evidence)
    if decision.promoted:
        return decision, challenger.challenger_scores, challenger.version
    kept_scores = challenger.champion_scores or block_scores
    if spec.type != "ipip" and spec.target in frame.columns:
        rolled = _rollback(spec, store, frame, block_scores, current, previous)
        if rolled is not None and rollback_hold:
            why = "; ".join(part for part in (held, rollback_hold) if part)
            return PromotionDecision(LATE_KEPT, f"{why}; it would have rolled back: {rolled[0].reason}",
                                     perf.metric, rolled[0].champion_score, None), kept_scores, current
        if rolled is not None:
            rollback, target = rolled
            if challenger.version is not None:  # say what became of the challenger too
                rollback = replace(rollback, reason=f"{rollback.reason}; challenger {challenger.version} "
                                                    f"{decision.decision}: {decision.reason}")
            features = store.manifest(target)["features"]
            model = store.load(target, spec.pickle_trusted)
            return rollback, score_model(model, frame[features], frame[spec.target], spec.task), target
    if held and challenger.version is None:
        decision = replace(decision, decision=LATE_KEPT, reason=held)
    return decision, kept_scores, current

