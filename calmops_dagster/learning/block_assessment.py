"""Everything the ``drift_report`` asset measures about a block, as one pure function.

Given the block, the champion, its manifest and its training data (the reference), it returns the data
drift report, the champion's scores on the block, the bootstrap comparison of its primary metric with
its reference score, where in the block the error stream changed (streaming detectors), and the retrain
decision. :func:`assessment_rows` turns it into the long ``drift_results`` format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from calmops_dagster.drift import DriftReport, ReferenceProfile, detect_drift
from calmops_dagster.drift.model_drift import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    PerformanceDrift,
    StreamDriftSummary,
    error_stream,
    performance_drift,
    stream_drift,
)
from calmops_dagster.learning.evaluation import higher_is_better, score_model
from calmops_dagster.learning.retrain_policy import RetrainDecision, decide_retrain
from calmops_dagster.learning.training import too_few_rows_to_train
from calmops_dagster.spec import PipelineSpec

#: Our metric names as the bootstrap in ``drift.model_drift`` knows them (roc_auc has no bootstrap there).
BOOTSTRAP_METRIC = {name: name for name in (*CLASSIFICATION_METRICS, *REGRESSION_METRICS)} | {"f1": "f1_macro"}
PERFORMANCE_ROW = "__performance__"
ERROR_STREAM_ROW = "__error_stream__"


@dataclass
class BlockAssessment:
    report: DriftReport | None
    block_scores: dict[str, float] | None
    performance: PerformanceDrift | None
    stream: StreamDriftSummary | None
    decision: RetrainDecision


def assess_block(spec: PipelineSpec, block: pd.DataFrame, champion=None, manifest: dict | None = None,
                 reference: pd.DataFrame | ReferenceProfile | None = None,
                 estimated: PerformanceDrift | None = None) -> BlockAssessment:
    """Measure ``block`` against the champion (``None`` before the first one) and decide on retraining.

    ``reference`` is the champion's training data, or its profile over the manifest's features
    (:class:`~calmops_dagster.drift.profile.ReferenceProfile`, prepared once for many blocks). ``estimated``
    is the primary metric's label-free estimate against its reference (used by the rule
    ``estimated_performance``; for a prediction-only pipeline it raises an alert, never a retraining)."""
    if champion is None:
        return BlockAssessment(None, None, None, None, _enough_rows(
            spec, block, None, decide_retrain(False, False, [], None, None, {})))
    features = manifest["features"]
    if isinstance(reference, pd.DataFrame):
        reference = reference[features]
    report = detect_drift(reference, block[features], config=spec.drift)
    block_scores = performance = stream = None
    labelled = not spec.prediction_only and spec.target in block.columns
    if labelled:
        y = block[spec.target].to_numpy()
        predicted = champion.predict(block[features])
        block_scores = score_model(champion, block[features], y, spec.task, predicted)
        metric = spec.performance.metric
        reference_score = (manifest.get("metrics") or {}).get(metric)
        if metric in BOOTSTRAP_METRIC and reference_score is not None:
            performance = performance_drift(
                y, predicted, reference=reference_score, metric=BOOTSTRAP_METRIC[metric],
                tolerance=abs(reference_score) * spec.performance.max_relative_drop, seed=spec.seed,
            )
        stream = stream_drift(error_stream(y, predicted, spec.task), tuple(spec.drift.error_detectors))
    decision = decide_retrain(True, report.drift_detected, report.drifted_features, performance, block_scores,
                              spec.performance.thresholds, spec.drift.decision_rule, estimated)
    if spec.prediction_only and decision.performance_drop:
        decision = RetrainDecision(False, True, f"prediction-only, alert: {decision.reason}; no retraining")
    elif spec.prediction_only:
        decision = RetrainDecision(False, False, "prediction-only: drift reported, no retraining")
    elif spec.target not in block.columns:  # delayed labels: nothing to train or score on yet
        decision = RetrainDecision(False, decision.performance_drop, f"labels not arrived: {decision.reason}; "
                                   "retraining and promotion are decided when they land")
    elif spec.type == "ipip":  # IPIP adapts every block; drift is recorded for information only
        decision = RetrainDecision(True, decision.performance_drop, f"ipip retrains every block ({decision.reason})")
    return BlockAssessment(report, block_scores, performance, stream, _enough_rows(spec, block, champion, decision))


def _enough_rows(spec: PipelineSpec, block: pd.DataFrame, champion, decision: RetrainDecision) -> RetrainDecision:
    """``decision``, or no retraining with the reason when the block has too few rows to train a challenger
    (:func:`~calmops_dagster.learning.training.too_few_rows_to_train`): a decision, not a failed step."""
    if not decision.retrain:
        return decision
    alone = champion is None or (spec.retrain_mode == "full" and spec.type != "ipip")
    shortfall = too_few_rows_to_train(block, spec, alone)
    if shortfall is None:
        return decision
    if champion is None:
        return RetrainDecision(False, False, f"{shortfall}; no champion yet: a later block with enough rows "
                                             "trains the first one")
    return RetrainDecision(False, decision.performance_drop, f"{shortfall}; champion kept ({decision.reason})")


def assessment_rows(assessment: BlockAssessment) -> pd.DataFrame:
    """The ``drift_results`` rows: the drift report's, plus one ``__performance__`` row (statistic = the
    block's metric, threshold = the bar it must not cross, note = the CI) and one ``__error_stream__`` row
    per streaming detector (statistic = the 0-based row where it fired, NaN when it did not)."""
    parts = [assessment.report.to_frame()] if assessment.report is not None else []
    perf = assessment.performance
    if perf is not None:
        bar = perf.reference - perf.tolerance if higher_is_better(perf.metric) else perf.reference + perf.tolerance
        parts.append(pd.DataFrame([{
            "feature": PERFORMANCE_ROW, "test": f"bootstrap_{perf.metric}", "statistic": perf.current,
            "p_value": np.nan, "effect_size": perf.reference - perf.current, "threshold": bar,
            "drifted": perf.drifted,
            "note": f"reference {perf.reference:.4f}; {perf.confidence:.0%} CI {perf.ci_low:.4f}..{perf.ci_high:.4f}"
                    f" over {perf.n} rows",
        }]))
    if assessment.stream is not None:
        parts.append(pd.DataFrame([{
            "feature": ERROR_STREAM_ROW, "test": r.detector,
            "statistic": np.nan if r.drift_index is None else float(r.drift_index), "p_value": np.nan,
            "effect_size": np.nan, "threshold": np.nan, "drifted": r.detected,
            "note": r.note or (f"change detected at row {r.drift_index}" if r.detected else "no change"),
        } for r in assessment.stream.results]))
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, ignore_index=True)
