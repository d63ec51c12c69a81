"""How close a synthetic table is to the real one it was learnt from.

Three views, as in the issue: each column's marginal (Kolmogorov-Smirnov statistic for numbers, total
variation distance for categories, missing rates side by side), the dependence between numeric columns
(distance between the Pearson correlation matrices), and usefulness for learning (a model trained on the
synthetic rows and tested on held-out real rows, beside the same model trained on the real rows: TSTR vs
TRTR). The functions are pure: tables in, a :class:`FidelityReport` out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from calmops_dagster.generators.errors import GeneratorConfigError
from calmops_dagster.generators.real import describe_columns, encode


def total_variation(a: pd.Series, b: pd.Series) -> float:
    """Total variation distance between the category frequencies of two series (missing values ignored).

    Examples
    --------
    >>> total_variation(pd.Series(list("aab")), pd.Series(list("abb")))
    0.3333333333333333
    """
    p = a.dropna().astype(str).value_counts(normalize=True)
    q = b.dropna().astype(str).value_counts(normalize=True)
    p, q = p.align(q, fill_value=0.0)
    return float(0.5 * np.abs(p - q).sum())


def column_fidelity(real: pd.DataFrame, synthetic: pd.DataFrame) -> pd.DataFrame:
    """One row per column: the marginal distance (KS or TVD), and the missing rates of both tables."""
    rows = []
    for info in describe_columns(real):
        r, s = real[info.name], synthetic[info.name]
        if info.categorical:
            statistic, value = "tvd", total_variation(r, s)
        else:
            rv, sv = r.dropna().to_numpy(float), pd.to_numeric(s, errors="coerce").dropna().to_numpy(float)
            statistic = "ks"
            value = float(stats.ks_2samp(rv, sv).statistic) if len(rv) and len(sv) else float("nan")
        rows.append(
            {
                "column": info.name,
                "statistic": statistic,
                "value": value,
                "missing_real": float(r.isna().mean()),
                "missing_synthetic": float(s.isna().mean()),
            }
        )
    return pd.DataFrame(rows)


def correlation_distance(real: pd.DataFrame, synthetic: pd.DataFrame) -> dict[str, float]:
    """Frobenius norm and largest absolute entry of the difference of the numeric correlation matrices."""
    numeric = [c.name for c in describe_columns(real) if not c.categorical]
    if len(numeric) < 2:
        return {"frobenius": 0.0, "max_abs": 0.0}
    diff = real[numeric].corr().to_numpy() - synthetic[numeric].astype(float).corr().to_numpy()
    return {"frobenius": float(np.linalg.norm(diff)), "max_abs": float(np.nanmax(np.abs(diff)))}


def _utility_score(train: pd.DataFrame, test: pd.DataFrame, target: str, seed: int) -> float:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import balanced_accuracy_score, r2_score

    infos = describe_columns(pd.concat([train, test], ignore_index=True))
    features = [c for c in infos if c.name != target]
    target_info = next(c for c in infos if c.name == target)
    Xtr, Xte = encode(train, features), encode(test, features)
    categorical = [c.categorical for c in features]
    if target_info.categorical:
        ytr, yte = train[target].astype(str), test[target].astype(str)
        model = HistGradientBoostingClassifier(categorical_features=categorical, random_state=seed)
        return float(balanced_accuracy_score(yte, model.fit(Xtr, ytr).predict(Xte)))
    model = HistGradientBoostingRegressor(categorical_features=categorical, random_state=seed)
    return float(r2_score(test[target], model.fit(Xtr, train[target].astype(float)).predict(Xte)))


@dataclass
class FidelityReport:
    """Fidelity of one synthetic table.

    Attributes
    ----------
    columns : pandas.DataFrame
        Per-column marginal distances and missing rates (see :func:`column_fidelity`).
    correlation : dict
        ``frobenius`` and ``max_abs`` distance between correlation matrices.
    utility : dict
        ``metric`` (balanced accuracy or R2), ``trtr`` (train on real) and ``tstr`` (train on synthetic),
        both tested on the same held-out real rows; empty without a target and holdout.
    """

    columns: pd.DataFrame
    correlation: dict[str, float]
    utility: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for ground_truth.json or DuckDB)."""
        return {
            "columns": self.columns.to_dict(orient="records"),
            "correlation": self.correlation,
            "utility": self.utility,
        }

    def to_text(self) -> str:
        """A short human-readable report."""
        lines = ["column                statistic  value   missing real/synth"]
        for r in self.columns.itertuples():
            lines.append(
                f"{str(r.column)[:20]:<21} {r.statistic:<9} {r.value:6.3f}  "
                f"{r.missing_real:.3f}/{r.missing_synthetic:.3f}"
            )
        c = self.correlation
        lines.append(
            f"correlation matrix distance: frobenius {c['frobenius']:.3f}, max |diff| {c['max_abs']:.3f}"
        )
        if self.utility:
            u = self.utility
            lines.append(
                f"utility ({u['metric']} on held-out real rows): train-on-real {u['trtr']:.3f}, "
                f"train-on-synthetic {u['tstr']:.3f}"
            )
        return "\n".join(lines)


def fidelity_report(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    target: str | None = None,
    holdout: pd.DataFrame | None = None,
    seed: int = 0,
) -> FidelityReport:
    """Compare a synthetic table with the real table it was learnt from.

    Parameters
    ----------
    real : pandas.DataFrame
        The real rows the generator was fitted on.
    synthetic : pandas.DataFrame
        The generated rows (same columns).
    target : str, optional
        Label column for the utility comparison.
    holdout : pandas.DataFrame, optional
        Real rows the generator never saw; both utility models are tested on them.
    seed : int
        Seed of the utility models.
    """
    missing = [c for c in real.columns if c not in synthetic.columns]
    if missing:
        raise GeneratorConfigError(f"synthetic table lacks columns {missing}")
    utility: dict[str, Any] = {}
    if target is not None and holdout is not None:
        target_info = next(c for c in describe_columns(real) if c.name == target)
        utility = {
            "metric": "balanced_accuracy" if target_info.categorical else "r2",
            "trtr": _utility_score(real, holdout, target, seed),
            "tstr": _utility_score(synthetic[real.columns], holdout, target, seed),
        }
    return FidelityReport(column_fidelity(real, synthetic), correlation_distance(real, synthetic), utility)


def synthesize_and_report(
    real: pd.DataFrame, generator: Any, n: int, test_size: float = 0.3
) -> tuple[pd.DataFrame, FidelityReport]:
    """Fit ``generator`` on part of ``real``, draw ``n`` rows and report fidelity against the held-out part.

    The split is stratified by the generator's target (if any) and seeded by ``generator.seed``, so the
    utility scores are honest: neither model sees the held-out rows, and the generator never sees them
    either.

    Parameters
    ----------
    real : pandas.DataFrame
        The real table.
    generator : RealGenerator
        An unfitted generator (its ``target`` and ``seed`` are used).
    n : int
        Rows to synthesize.
    test_size : float
        Share of ``real`` held out for the utility test.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise GeneratorConfigError(f"test_size must be in (0, 1), got {test_size}")
    strata = real[generator.target].astype(str) if generator.target is not None else None
    train, test = train_test_split(real, test_size=test_size, random_state=generator.seed, stratify=strata)
    synthetic = generator.fit(train).sample(n)
    return synthetic, fidelity_report(train, synthetic, generator.target, test, generator.seed)
