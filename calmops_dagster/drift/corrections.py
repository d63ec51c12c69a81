"""Multiple-testing corrections: many features tested at once must not mean many false alarms.

``bonferroni`` and ``holm`` control the family-wise error rate (the chance of any false alarm in a block);
``fdr_bh`` (Benjamini-Hochberg) controls the expected share of false alarms among the alarms. Under the
global null (no feature drifted) all three keep the chance of flagging the block at or below ``alpha``.
"""

import numpy as np

from calmops_dagster.drift.config import Correction


def adjust_pvalues(p_values: np.ndarray, method: Correction) -> np.ndarray:
    """Return adjusted p-values, comparable directly with the unadjusted ``alpha``.

    Parameters
    ----------
    p_values : array of float
        Raw p-values; NaN entries (tests that were not run) are left NaN and not counted in the family.
    method : {"bonferroni", "holm", "fdr_bh", "none"}
        The correction. The adjusted values are the same as ``statsmodels.stats.multitest.multipletests``.

    Returns
    -------
    numpy.ndarray
        Adjusted p-values, clipped to [0, 1], same shape as ``p_values``.

    Examples
    --------
    >>> adjust_pvalues(np.array([0.01, 0.04, 0.03]), "holm").round(3).tolist()
    [0.03, 0.06, 0.06]
    >>> adjust_pvalues(np.array([0.01, 0.04, 0.03]), "fdr_bh").round(3).tolist()
    [0.03, 0.04, 0.04]
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    valid = ~np.isnan(p)
    pv = p[valid]
    m = pv.size
    if m == 0:
        return out
    if method == "none":
        adj = pv.copy()
    elif method == "bonferroni":
        adj = pv * m
    elif method == "holm":
        order = np.argsort(pv, kind="stable")
        stepped = np.maximum.accumulate(pv[order] * (m - np.arange(m)))
        adj = np.empty(m)
        adj[order] = stepped
    elif method == "fdr_bh":
        order = np.argsort(pv, kind="stable")
        ranked = pv[order] * m / np.arange(1, m + 1)
        stepped = np.minimum.accumulate(ranked[::-1])[::-1]
        adj = np.empty(m)
        adj[order] = stepped
    else:
        raise ValueError(f"unknown correction {method!r}; valid: bonferroni, holm, fdr_bh, none")
    out[valid] = np.clip(adj, 0.0, 1.0)
    return out
