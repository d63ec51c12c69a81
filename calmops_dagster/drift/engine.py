"""``detect_drift``: every univariate test, the multiple-testing correction and the block decision."""

import numpy as np
import pandas as pd

from calmops_dagster.drift import univariate as uv
from calmops_dagster.drift.columns import CategoricalColumn, NumericColumn, Skipped, prepare, select_features
from calmops_dagster.drift.config import DriftConfig
from calmops_dagster.drift.corrections import adjust_pvalues
from calmops_dagster.drift.multivariate import run_multivariate
from calmops_dagster.drift.profile import FrameReference, ReferenceProfile
from calmops_dagster.drift.report import EXTRA_COLUMNS, FRAME_COLUMNS, NOT_TESTED, DriftReport


def _row(name, test, kind, value: uv.TestValue, threshold, n_ref, n_cur, note) -> dict:
    return {"feature": name, "test": test, "statistic": value.statistic, "p_value": value.p_value,
            "effect_size": value.effect_size, "threshold": threshold, "drifted": False, "kind": kind,
            "p_adjusted": np.nan, "alpha": np.nan, "n_ref": n_ref, "n_cur": n_cur, "note": note}


def _skipped_row(s: Skipped) -> dict:
    nan = uv.TestValue(np.nan, np.nan, np.nan)
    return _row(s.name, NOT_TESTED, s.kind, nan, np.nan, s.n_ref, s.n_cur, s.note)


def _numeric_rows(col: NumericColumn, config: DriftConfig) -> list[dict]:
    m = col.merged
    rows = []
    for test in config.numeric_tests:
        if test == "psi":
            value = uv.psi_numeric(m, config.psi_bins, config.psi_binning)
        else:
            value = uv.NUMERIC_TESTS[test](m)
        rows.append(_row(col.name, test, "numeric", value, config.effect_threshold(test), m.ref.size, m.cur.size, ""))
    return rows


def _categorical_rows(col: CategoricalColumn, config: DriftConfig) -> list[dict]:
    n_ref, n_cur = int(col.ref_counts.sum()), int(col.cur_counts.sum())
    return [
        _row(col.name, test, "categorical", uv.CATEGORICAL_TESTS[test](col.ref_counts, col.cur_counts),
             config.effect_threshold(test), n_ref, n_cur, col.note)
        for test in config.categorical_tests
    ]


def _present(col: NumericColumn | CategoricalColumn | Skipped) -> tuple[int, int]:
    """Non-missing values of a prepared feature on each side (counted while preparing it)."""
    if isinstance(col, NumericColumn):
        return col.merged.ref.size, col.merged.cur.size
    if isinstance(col, CategoricalColumn):
        return int(col.ref_counts.sum()), int(col.cur_counts.sum())
    return col.n_ref, col.n_cur


def _missing_rows(present: dict[str, tuple[int, int]], n_ref: int, n_cur: int, config: DriftConfig) -> list[dict]:
    """One ``missing`` row per feature whose values are missing on either side (all-empty columns too)."""
    rows = []
    for name, (ref_present, cur_present) in present.items():
        ref_missing, cur_missing = n_ref - ref_present, n_cur - cur_present
        if ref_missing or cur_missing:
            value = uv.missing_rate(ref_missing, n_ref, cur_missing, n_cur)
            note = f"missing {ref_missing / n_ref:.1%} -> {cur_missing / n_cur:.1%}"
            rows.append(_row(name, "missing", "missing", value, config.effect_threshold("missing"),
                             n_ref, n_cur, note))
    return rows


def _decide(rows: pd.DataFrame, config: DriftConfig) -> pd.DataFrame:
    """Correct the p-values across the block and mark drifted rows (see :class:`DriftConfig`)."""
    alpha = config.univariate_alpha
    tested = rows["test"] != NOT_TESTED
    has_p = tested & rows["p_value"].notna()
    rows.loc[has_p, "p_adjusted"] = adjust_pvalues(rows.loc[has_p, "p_value"].to_numpy(float), config.correction)
    rows.loc[tested, "alpha"] = alpha
    big = rows["effect_size"] >= rows["threshold"]
    significant = rows["p_adjusted"] < alpha
    feature_significant = significant.groupby(rows["feature"]).transform("any")
    distance = tested & rows["p_value"].isna()
    rows["drifted"] = tested & big & ((has_p & significant) | (distance & feature_significant))
    return rows


def detect_drift(reference: pd.DataFrame | ReferenceProfile, current: pd.DataFrame, config: DriftConfig | None = None,
                 features: list[str] | None = None) -> DriftReport:
    """Compare a block of data with its reference, feature by feature and jointly.

    Parameters
    ----------
    reference : pandas.DataFrame or ReferenceProfile
        The reference data (e.g. the champion's training data), or its
        :class:`~calmops_dagster.drift.profile.ReferenceProfile` prepared once for many blocks (same report,
        without re-sorting the reference).
    current : pandas.DataFrame
        The new block.
    config : DriftConfig, optional
        Tests, thresholds and decision rule; defaults to ``DriftConfig()``.
    features : list of str, optional
        Features to compare. None compares every column the two frames share; columns found on one side
        only then get a ``not_tested`` row. A requested feature missing on either side is an error.

    Returns
    -------
    DriftReport

    Raises
    ------
    DriftInputError
        Inputs that cannot be compared at all (not DataFrames, no rows, no common column), or a profile
        prepared under other settings than ``config``'s (:class:`~calmops_dagster.drift.profile.ProfileMismatchError`).
    MissingFeatureError
        A requested feature is absent on a side.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = pd.DataFrame({"x": rng.normal(size=2000), "c": rng.choice(list("ab"), 2000)})
    >>> cur = pd.DataFrame({"x": rng.normal(1.0, size=2000), "c": rng.choice(list("ab"), 2000)})
    >>> report = detect_drift(ref, cur, DriftConfig(multivariate=False))
    >>> report.drift_detected, report.drifted_features
    (True, ['x'])
    """
    config = config or DriftConfig()
    if isinstance(reference, ReferenceProfile):
        reference.check(config)
    else:
        reference = FrameReference(reference, config)
    names, one_sided = select_features(reference.columns, reference.present, current, features)
    records: list[dict] = [_skipped_row(s) for s in one_sided]
    numeric, categorical, skipped = [], [], [s.name for s in one_sided]
    present: dict[str, tuple[int, int]] = {}
    for name in names:
        col = prepare(str(name), reference.column(name), current[name], config)  # one column's arrays at a time
        present[str(name)] = _present(col)
        if isinstance(col, Skipped):
            records.append(_skipped_row(col))
            skipped.append(col.name)
        elif isinstance(col, NumericColumn):
            records.extend(_numeric_rows(col, config))
            numeric.append(name)
        else:
            records.extend(_categorical_rows(col, config))
            categorical.append(name)
    if config.missing_values:
        records.extend(_missing_rows(present, reference.n_rows, len(current), config))
    rows = pd.DataFrame.from_records(records, columns=FRAME_COLUMNS + EXTRA_COLUMNS)
    rows = _decide(rows, config)

    tested_names = list(dict.fromkeys(rows.loc[rows["test"] != NOT_TESTED, "feature"]))  # incl. missing-only
    drifted_rows = rows[rows["drifted"]]
    order = drifted_rows.groupby("feature")["effect_size"].max().sort_values(ascending=False)
    drifted = [f for f in order.index]
    share = len(drifted) / len(tested_names) if tested_names else 0.0
    univariate_drift = bool(drifted) and share >= config.min_drift_share

    multivariate, mv_note = None, "multivariate tests off"
    if config.multivariate:
        multivariate, mv_note = run_multivariate(reference.sample(), current, numeric, categorical, config)
    mv_drift = any(r.drifted for r in multivariate or [])
    decision = univariate_drift or mv_drift
    split = (f", the univariate part of alpha={config.alpha:g}" if config.univariate_alpha != config.alpha else "")
    note = (f"{len(drifted)}/{len(tested_names)} features drifted ({config.correction}-corrected p < "
            f"{config.univariate_alpha:g}{split}; min_drift_share={config.min_drift_share:g})")
    if multivariate:
        note += "; " + ", ".join(f"{r.test} p={r.p_value:.3g} vs {r.alpha:.3g}: {'drift' if r.drifted else 'ok'}"
                                 for r in multivariate)
    elif config.multivariate:
        note += f"; {mv_note}"
    if not tested_names:
        note += "; no feature could be tested"
    return DriftReport(
        drift_detected=decision, drifted_features=drifted, drift_share=share, n_tested=len(tested_names),
        not_tested=skipped, multivariate=multivariate, multivariate_note=mv_note, rows=rows,
        decision_note=note,
    )
