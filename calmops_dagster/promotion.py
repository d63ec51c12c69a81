"""When is a challenger promoted over the champion? A pure decision, recorded with its reason.

Both models are scored on the same evaluation rows. The challenger is promoted only when it passes every
absolute threshold of the spec **and** beats the champion's primary metric by more than
``min_improvement``. With no champion yet, a challenger that passes the thresholds becomes the first one.
"""

from __future__ import annotations

from dataclasses import dataclass

from calmops_dagster.evaluation import higher_is_better, threshold_failures

PROMOTED = "promoted"
KEPT = "kept"
REJECTED = "rejected"


@dataclass(frozen=True)
class PromotionDecision:
    decision: str  # promoted | kept | rejected
    reason: str
    metric: str
    champion_score: float | None
    challenger_score: float | None

    @property
    def promoted(self) -> bool:
        return self.decision == PROMOTED


def decide_promotion(
    metric: str,
    challenger_scores: dict[str, float] | None,
    champion_scores: dict[str, float] | None,
    thresholds: dict[str, float],
    min_improvement: float = 0.0,
) -> PromotionDecision:
    """Decide between the champion and a challenger scored on the same data.

    Parameters
    ----------
    metric : the primary metric (direction from :func:`higher_is_better`).
    challenger_scores : the challenger's scores, or ``None`` when no challenger was trained.
    champion_scores : the champion's scores on the same rows, or ``None`` when there is no champion yet.
    thresholds : absolute bars (see :func:`threshold_failures`).
    min_improvement : the challenger must beat the champion by strictly more than this.

    Examples
    --------
    >>> decide_promotion("accuracy", {"accuracy": 0.9}, {"accuracy": 0.7}, {"accuracy": 0.8}).decision
    'promoted'
    >>> decide_promotion("accuracy", {"accuracy": 0.75}, {"accuracy": 0.7}, {"accuracy": 0.8}).decision
    'rejected'
    """
    champion = None if champion_scores is None else champion_scores.get(metric)
    if challenger_scores is None:
        return PromotionDecision(KEPT, "no challenger was trained for this block", metric, champion, None)
    challenger = challenger_scores.get(metric)
    failures = threshold_failures(challenger_scores, thresholds)
    if failures:
        return PromotionDecision(
            REJECTED, "challenger fails thresholds: " + "; ".join(failures), metric, champion, challenger
        )
    if champion_scores is None:
        return PromotionDecision(PROMOTED, "first champion of the pipeline", metric, None, challenger)
    gain = challenger - champion if higher_is_better(metric) else champion - challenger
    if gain > min_improvement:
        return PromotionDecision(
            PROMOTED,
            f"challenger {metric} {challenger:.4f} beats champion {champion:.4f} "
            f"by {gain:.4f} (> {min_improvement})",
            metric,
            champion,
            challenger,
        )
    return PromotionDecision(
        REJECTED,
        f"challenger {metric} {challenger:.4f} does not beat champion {champion:.4f} "
        f"by more than {min_improvement}",
        metric,
        champion,
        challenger,
    )
