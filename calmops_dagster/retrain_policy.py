"""When does a block call for a challenger? A pure decision (CalmOps' rule: statistical drift OR a drop
in the champion's performance), recorded with its reason."""

from __future__ import annotations

from dataclasses import dataclass

from calmops_dagster.evaluation import higher_is_better, threshold_failures


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    performance_drop: bool
    reason: str


def performance_dropped(metric: str, current: float, reference: float, max_relative_drop: float) -> bool:
    """True when ``current`` is worse than ``reference`` by more than ``max_relative_drop`` of it.

    >>> performance_dropped("accuracy", 0.70, 0.90, 0.10)
    True
    >>> performance_dropped("rmse", 1.05, 1.00, 0.10)
    False
    """
    if higher_is_better(metric):
        return current < reference * (1 - max_relative_drop)
    return current > reference * (1 + max_relative_drop)


def decide_retrain(
    has_champion: bool,
    drift_detected: bool,
    drifted_features: list[str],
    metric: str,
    block_scores: dict[str, float] | None,
    reference_scores: dict[str, float] | None,
    thresholds: dict[str, float],
    max_relative_drop: float,
) -> RetrainDecision:
    """Decide whether this block gets a challenger, and say why.

    ``block_scores`` are the champion's scores on the block (``None`` without labels); ``reference_scores``
    are its scores on held-out rows when it was trained.
    """
    if not has_champion:
        return RetrainDecision(True, False, "no champion yet: this block trains the first one")
    reasons, dropped = [], False
    if drift_detected:
        shown = ", ".join(drifted_features[:5]) + (" ..." if len(drifted_features) > 5 else "")
        reasons.append(f"data drift in {len(drifted_features)} feature(s): {shown}")
    if block_scores is not None and reference_scores and metric in reference_scores:
        current, reference = block_scores[metric], reference_scores[metric]
        if performance_dropped(metric, current, reference, max_relative_drop):
            dropped = True
            reasons.append(
                f"{metric} fell from {reference:.4f} to {current:.4f} (> {max_relative_drop:.0%} relative drop)"
            )
        failures = threshold_failures(block_scores, thresholds)
        if failures:
            dropped = True
            reasons.append("champion below thresholds: " + "; ".join(failures))
    if reasons:
        return RetrainDecision(True, dropped, "; ".join(reasons))
    return RetrainDecision(False, False, "no drift and no performance drop: champion kept without retraining")
