"""When is a challenger promoted over the champion? A pure decision, recorded with its reason.

Both models are scored on the same evaluation rows. The challenger is promoted only when

1. it passes every absolute threshold of the spec, **and**
2. it beats the champion's primary metric by more than ``min_improvement``, **and**
3. the improvement is significant at ``alpha``: for classifiers McNemar's exact test on the rows where the
   two models disagree (one-sided: the challenger is right more often), for regressors a paired bootstrap
   confidence interval of the metric difference that lies wholly above ``min_improvement``.

CalmOps promoted on a raw difference, so a challenger better by noise replaced a good champion; here it
does not. With no champion yet, a challenger that passes the thresholds becomes the first one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from calmops_dagster.learning.evaluation import REGRESSION_METRICS, higher_is_better, threshold_failures

PROMOTED = "promoted"
KEPT = "kept"
REJECTED = "rejected"
ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class PromotionDecision:
    decision: str  # promoted | kept | rejected | rolled_back
    reason: str
    metric: str
    champion_score: float | None
    challenger_score: float | None
    test: str | None = None  # mcnemar | paired_bootstrap
    p_value: float | None = None
    ci_low: float | None = None  # bounds of the challenger's gain (paired bootstrap)
    ci_high: float | None = None

    @property
    def promoted(self) -> bool:
        return self.decision == PROMOTED


@dataclass(frozen=True)
class Evidence:
    """Whether the challenger's gain over the champion on paired rows is significant."""

    test: str
    significant: bool
    p_value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    def describe(self) -> str:
        if self.test == "mcnemar":
            return f"McNemar p={self.p_value:.3g}"
        return f"paired bootstrap gain CI {self.ci_low:.4f}..{self.ci_high:.4f}"


def mcnemar_test(champion_correct, challenger_correct, alpha: float) -> Evidence:
    """One-sided exact McNemar test: is the challenger right on more of the disagreeing rows?

    >>> champion = [True] * 80 + [False] * 18 + [True] * 2     # 18 rows only the challenger gets right,
    >>> challenger = [True] * 80 + [True] * 18 + [False] * 2   # 2 rows only the champion gets right
    >>> round(mcnemar_test(champion, challenger, 0.05).p_value, 6)
    0.000201
    """
    champion_correct = np.asarray(champion_correct, dtype=bool)
    challenger_correct = np.asarray(challenger_correct, dtype=bool)
    only_challenger = int(np.sum(challenger_correct & ~champion_correct))
    only_champion = int(np.sum(champion_correct & ~challenger_correct))
    discordant = only_challenger + only_champion
    p_value = 1.0 if discordant == 0 else binomtest(only_challenger, discordant, 0.5, alternative="greater").pvalue
    return Evidence("mcnemar", bool(p_value < alpha), p_value=float(p_value))


def paired_bootstrap_test(y_true, champion_pred, challenger_pred, metric: str, min_improvement: float,
                          alpha: float, n_bootstrap: int = 1000, seed: int = 0) -> Evidence:
    """Percentile bootstrap (rows resampled in pairs) of the challenger's gain in ``metric``.

    The gain is oriented so that positive is better (champion - challenger for errors). Significant when
    the lower bound of the two-sided ``1 - alpha`` interval exceeds ``min_improvement``.
    """
    y_true, a, b = (np.asarray(v, dtype=float) for v in (y_true, champion_pred, challenger_pred))
    score = REGRESSION_METRICS[metric]
    sign = 1.0 if higher_is_better(metric) else -1.0
    rng = np.random.default_rng(seed)
    n = len(y_true)
    gains = np.empty(n_bootstrap)
    for i in range(n_bootstrap):
        rows = rng.integers(0, n, n)
        gains[i] = sign * (score(y_true[rows], b[rows]) - score(y_true[rows], a[rows]))
    low, high = np.quantile(gains, [alpha / 2, 1 - alpha / 2])
    return Evidence("paired_bootstrap", bool(low > min_improvement), ci_low=float(low), ci_high=float(high))


def decide_promotion(
    metric: str,
    challenger_scores: dict[str, float] | None,
    champion_scores: dict[str, float] | None,
    thresholds: dict[str, float],
    min_improvement: float = 0.0,
    evidence: Evidence | None = None,
) -> PromotionDecision:
    """Decide between the champion and a challenger scored on the same rows.

    Parameters
    ----------
    metric : the primary metric (direction from :func:`higher_is_better`).
    challenger_scores : the challenger's scores, or ``None`` when no challenger was trained.
    champion_scores : the champion's scores on the same rows, or ``None`` when there is no champion yet.
    thresholds : absolute bars (see :func:`threshold_failures`).
    min_improvement : the challenger must beat the champion by strictly more than this.
    evidence : the significance test of the gain (:func:`mcnemar_test`, :func:`paired_bootstrap_test`);
        required when there is a champion to replace.

    Examples
    --------
    >>> significant = Evidence("mcnemar", True, p_value=0.001)
    >>> decide_promotion("accuracy", {"accuracy": 0.9}, {"accuracy": 0.7}, {"accuracy": 0.8}, 0, significant).decision
    'promoted'
    >>> noise = Evidence("mcnemar", False, p_value=0.4)
    >>> decide_promotion("accuracy", {"accuracy": 0.91}, {"accuracy": 0.9}, {}, 0, noise).decision
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
    if evidence is None:
        raise ValueError("replacing a champion needs the significance evidence of the challenger's gain")
    stats = {"test": evidence.test, "p_value": evidence.p_value, "ci_low": evidence.ci_low,
             "ci_high": evidence.ci_high}
    gain = challenger - champion if higher_is_better(metric) else champion - challenger
    comparison = f"challenger {metric} {challenger:.4f} vs champion {champion:.4f} (gain {gain:.4f})"
    if gain <= min_improvement:
        return PromotionDecision(REJECTED, f"{comparison} is not more than {min_improvement}", metric,
                                 champion, challenger, **stats)
    if not evidence.significant:
        return PromotionDecision(REJECTED, f"{comparison} is not significant ({evidence.describe()})", metric,
                                 champion, challenger, **stats)
    return PromotionDecision(PROMOTED, f"{comparison}, significant ({evidence.describe()})", metric,
                             champion, challenger, **stats)


def choose_rollback(metric: str, current: float, reference: float, max_relative_drop: float,
                    candidates: dict[str, float]) -> str | None:
    """The previous champion to roll back to, or ``None``.

    Only when the champion in force has degraded badly (its ``current`` score on the block is worse than
    its ``reference`` by more than ``max_relative_drop`` of it, CalmOps used 30%) and a previous champion
    (``candidates``: version -> score on the same rows) does better on the block; the best one wins.

    >>> choose_rollback("accuracy", 0.5, 0.9, 0.3, {"v0001": 0.85, "v0002": 0.6})
    'v0001'
    >>> choose_rollback("accuracy", 0.8, 0.9, 0.3, {"v0001": 0.85}) is None
    True
    """
    better = higher_is_better(metric)
    degraded = current < reference * (1 - max_relative_drop) if better else current > reference * (1 + max_relative_drop)
    if not degraded or not candidates:
        return None
    best = max(candidates, key=candidates.get) if better else min(candidates, key=candidates.get)
    improves = candidates[best] > current if better else candidates[best] < current
    return best if improves else None


def gain_evidence(task: str, metric: str, y_true, champion_pred, challenger_pred, min_improvement: float,
                  alpha: float, n_bootstrap: int = 1000, seed: int = 0) -> Evidence:
    """The significance test the spec calls for: McNemar for classifiers, paired bootstrap for regressors."""
    if task == "classification":
        y_true = np.asarray(y_true)
        return mcnemar_test(np.asarray(champion_pred) == y_true, np.asarray(challenger_pred) == y_true, alpha)
    return paired_bootstrap_test(y_true, champion_pred, challenger_pred, metric, min_improvement, alpha,
                                 n_bootstrap, seed)
