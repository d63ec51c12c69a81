"""When does a block call for a challenger? A pure decision (CalmOps' rule: statistical drift OR a drop
in the champion's performance), recorded with its reason.

A performance drop counts when the champion's primary metric on the block is worse than its reference
score (measured on held-out rows when it was trained) by more than ``max_relative_drop`` of it **with 95%
confidence**: the whole bootstrap interval of the block's metric lies beyond that bar
(:func:`calmops_dagster.drift.model_drift.performance_drift`). Under the rule ``estimated_performance`` the
drop is read from the performance estimated without labels instead (the whole interval of the estimate
beyond the bar), and data drift alone calls for nothing. A champion below an absolute threshold of the spec
also calls for a challenger.
"""

from __future__ import annotations

from dataclasses import dataclass

from calmops_dagster.drift.model_drift import PerformanceDrift
from calmops_dagster.learning.evaluation import higher_is_better, threshold_failures


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    performance_drop: bool
    reason: str


def decide_retrain(
    has_champion: bool,
    drift_detected: bool,
    drifted_features: list[str],
    performance: PerformanceDrift | None,
    block_scores: dict[str, float] | None,
    thresholds: dict[str, float],
    rule: str = "drift_or_performance",
    estimated: PerformanceDrift | None = None,
) -> RetrainDecision:
    """Decide whether this block gets a challenger, and say why.

    ``performance`` is the champion's bootstrap comparison with its reference on the primary metric and
    ``block_scores`` its scores on the block (both ``None`` for an unlabelled block). ``rule`` says what
    calls for a challenger (``DriftConfig.decision_rule``): ``drift_or_performance``, ``drift`` or
    ``performance``, ``estimated_performance`` (``estimated``: the primary metric's label-free estimate
    against the reference, its interval in ``ci_low``/``ci_high``); a champion below an absolute threshold
    calls for one under every rule.

    >>> decide_retrain(True, True, ["x1"], None, None, {}).reason
    'data drift in 1 feature(s): x1'
    """
    if not has_champion:
        return RetrainDecision(True, False, "no champion yet: this block trains the first one")
    reasons, dropped = [], False
    if drift_detected and rule not in ("performance", "estimated_performance"):
        shown = ", ".join(drifted_features[:5]) + (" ..." if len(drifted_features) > 5 else "")
        reasons.append(f"data drift in {len(drifted_features)} feature(s): {shown}")
    if rule == "estimated_performance" and estimated is not None and estimated.drifted:
        dropped = True
        reasons.append(
            f"estimated {estimated.metric} {'fell' if higher_is_better(estimated.metric) else 'rose'} from "
            f"{estimated.reference:.4f} to {estimated.current:.4f} "
            f"({estimated.confidence:.0%} interval {estimated.ci_low:.4f}..{estimated.ci_high:.4f}, beyond the "
            "allowed drop; no labels used)"
        )
    if performance is not None and performance.drifted and rule in ("drift_or_performance", "performance"):
        dropped = True
        reasons.append(
            f"{performance.metric} fell from {performance.reference:.4f} to {performance.current:.4f} "
            f"(95% CI {performance.ci_low:.4f}..{performance.ci_high:.4f}, beyond the allowed drop)"
        )
    failures = threshold_failures(block_scores, thresholds) if block_scores is not None else []
    if failures:
        dropped = True
        reasons.append("champion below thresholds: " + "; ".join(failures))
    if reasons:
        return RetrainDecision(True, dropped, "; ".join(reasons))
    return RetrainDecision(False, False, "no drift and no performance drop: champion kept without retraining")
