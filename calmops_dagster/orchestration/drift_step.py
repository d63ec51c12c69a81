"""The drift step of a block, shared by the ``drift_report`` asset and the re-evaluation job.

:func:`assess_against` measures a block against a given champion (its model, manifest and reference data
from the model store); :func:`hold_retrain` applies the late-block rule to the retrain decision;
:func:`summary_row` is the block's ``drift_summary`` row (also the figures of a re-evaluation).
"""

from __future__ import annotations

import pandas as pd

from calmops_dagster.learning.block_assessment import BlockAssessment, assess_block
from calmops_dagster.learning.retrain_policy import RetrainDecision
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.store.model_store import ModelStore


def assess_against(spec: PipelineSpec, store: ModelStore, frame: pd.DataFrame,
                   champion: str | None) -> BlockAssessment:
    """:func:`~calmops_dagster.learning.block_assessment.assess_block` of ``frame`` against ``champion``
    (``None``: no champion yet) with ``spec``'s settings."""
    if champion is None:
        return assess_block(spec, frame)
    model = store.load(champion, spec.pickle_trusted)
    return assess_block(spec, frame, model, store.manifest(champion), store.reference(champion))


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
