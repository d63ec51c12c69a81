"""The drift report: long-format rows (one per feature and test, plus the aggregate) and the decision."""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: Leading columns of :meth:`DriftReport.to_frame`, in this order; extra columns follow.
FRAME_COLUMNS = ["feature", "test", "statistic", "p_value", "effect_size", "threshold", "drifted"]
EXTRA_COLUMNS = ["kind", "p_adjusted", "alpha", "n_ref", "n_cur", "note"]
DATASET = "__dataset__"
MULTIVARIATE = "__multivariate__"
NOT_TESTED = "not_tested"


@dataclass(frozen=True)
class MultivariateResult:
    """One multivariate test on a bounded sample of both sides.

    Attributes
    ----------
    test : str
        ``mmd`` or ``classifier``.
    statistic : float
        MMD^2 (unbiased) or the domain classifier's cross-validated AUC (the mean of its folds' AUCs).
    p_value : float
        Permutation p-value (MMD) or the mean of the folds' Mann-Whitney z-scores' p-value (classifier).
    effect_size, threshold : float
        The size the decision gates on and its minimum (AUC and ``classifier_min_auc``; MMD^2 and 0).
    alpha : float
        The share of the block's alpha this test was given.
    drifted : bool
        ``p_value < alpha`` and ``effect_size >= threshold``.
    n_ref, n_cur : int
        Rows sampled from each side.
    features : list of str
        Features the test used.
    top_features : list of (str, float)
        For the classifier, the features that separate the sets best with their share of the total gain.
    note : str
        Sampling and kernel details.
    """

    test: str
    statistic: float
    p_value: float
    effect_size: float
    threshold: float
    alpha: float
    drifted: bool
    n_ref: int
    n_cur: int
    features: list[str]
    top_features: list[tuple[str, float]] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class DriftReport:
    """Result of :func:`calmops_dagster.drift.detect_drift`.

    Attributes
    ----------
    drift_detected : bool
        The block-level decision.
    drifted_features : list of str
        Features with at least one drifted row, most drifted (largest effect) first.
    drift_share : float
        ``len(drifted_features) / n_tested`` (0 when nothing could be tested).
    n_tested : int
        Features with at least one test run.
    not_tested : list of str
        Features that got a ``not_tested`` row (the row's ``note`` says why).
    multivariate : list of MultivariateResult or None
        None when the multivariate tests were off or could not run (``multivariate_note`` says why).
    multivariate_note : str
    rows : pandas.DataFrame
        Per feature and test rows (``FRAME_COLUMNS + EXTRA_COLUMNS``), without the aggregate row.
    decision_note : str
        The rule that produced the decision, in words.
    """

    drift_detected: bool
    drifted_features: list[str]
    drift_share: float
    n_tested: int
    not_tested: list[str]
    multivariate: list[MultivariateResult] | None
    multivariate_note: str
    rows: pd.DataFrame
    decision_note: str

    def to_frame(self) -> pd.DataFrame:
        """All rows: per feature and test, one per multivariate test (``feature == "__multivariate__"``),
        and one aggregate row (``feature == "__dataset__"``, ``test == "decision"``, statistic = drift share).
        """
        parts = [self.rows]
        for mv in self.multivariate or []:
            parts.append(pd.DataFrame([{
                "feature": MULTIVARIATE, "test": mv.test, "statistic": mv.statistic, "p_value": mv.p_value,
                "effect_size": mv.effect_size, "threshold": mv.threshold, "drifted": mv.drifted,
                "kind": "multivariate", "p_adjusted": mv.p_value, "alpha": mv.alpha,
                "n_ref": mv.n_ref, "n_cur": mv.n_cur, "note": mv.note,
            }]))
        p_adj = self.rows["p_adjusted"].to_numpy(dtype=float)
        parts.append(pd.DataFrame([{
            "feature": DATASET, "test": "decision", "statistic": self.drift_share,
            "p_value": float(np.nanmin(p_adj)) if np.isfinite(p_adj).any() else np.nan,
            "effect_size": self.drift_share, "threshold": np.nan, "drifted": self.drift_detected,
            "kind": "dataset", "p_adjusted": np.nan, "alpha": np.nan,
            "n_ref": int(self.rows["n_ref"].max()) if len(self.rows) else 0,
            "n_cur": int(self.rows["n_cur"].max()) if len(self.rows) else 0,
            "note": self.decision_note,
        }]))
        frame = pd.concat([p for p in parts if len(p)], ignore_index=True)
        frame["drifted"] = frame["drifted"].astype(bool)
        return frame[FRAME_COLUMNS + EXTRA_COLUMNS]

    def summary(self, top: int = 5) -> dict:
        """Plain values for asset metadata and the summary table.

        Keys: ``drift_detected``, ``drift_share``, ``n_drifted``, ``n_tested``, ``n_not_tested``,
        ``top_features`` (up to ``top`` drifted features, largest effect first), ``max_effect_feature``,
        and per multivariate test ``<test>_statistic``, ``<test>_p_value``, ``<test>_drifted``
        (plus ``classifier_top_features``).
        """
        out: dict = {
            "drift_detected": bool(self.drift_detected),
            "drift_share": float(self.drift_share),
            "n_drifted": len(self.drifted_features),
            "n_tested": int(self.n_tested),
            "n_not_tested": len(self.not_tested),
            "top_features": list(self.drifted_features[:top]),
        }
        for mv in self.multivariate or []:
            out[f"{mv.test}_statistic"] = float(mv.statistic)
            out[f"{mv.test}_p_value"] = float(mv.p_value)
            out[f"{mv.test}_drifted"] = bool(mv.drifted)
            if mv.top_features:
                out[f"{mv.test}_top_features"] = [name for name, _ in mv.top_features[:top]]
        return out
