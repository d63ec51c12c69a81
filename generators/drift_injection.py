"""Inject known drift into any table, and record where and what was injected.

:class:`DriftInjector` holds a copy of a table and a ground-truth list. Every injection selects rows by
positional range, by block value or by time window, changes them in one documented way, and appends one
record to :attr:`DriftInjector.ground_truth`, so the drift engine's alarms can later be scored against it.

Kinds of drift
--------------
- feature drift (:meth:`~DriftInjector.feature_drift`): shift, scale or gaussian noise on numeric columns,
  applied abruptly, gradually (each row comes from the new concept with a probability that rises along a
  sigmoid, linear or cosine curve), incrementally (the magnitude itself rises along the curve) or
  recurrently (on/off in periods);
- label flips and label shift (prior change) on the target;
- conditional drift: P(y | x) changed inside a region of feature space, P(x) untouched;
- correlation drift: the dependence between columns changed while each marginal stays exactly the same;
- missing-value drift and new categories.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from calmops_dagster.generators.errors import GeneratorConfigError, check_option

PROFILES = ("abrupt", "gradual", "incremental", "recurrent")
CURVES = ("sigmoid", "linear", "cosine")
FEATURE_KINDS = ("shift", "scale", "noise")


def transition_curve(curve: str, n: int) -> np.ndarray:
    """Weights rising from 0 to 1 over ``n`` rows along the named curve.

    Examples
    --------
    >>> transition_curve("linear", 3).tolist()
    [0.0, 0.5, 1.0]
    """
    check_option("curve", curve, CURVES)
    t = np.linspace(0.0, 1.0, n) if n > 1 else np.ones(n)
    if curve == "linear":
        return t
    if curve == "cosine":
        return (1.0 - np.cos(np.pi * t)) / 2.0
    raw = 1.0 / (1.0 + np.exp(-12.0 * (t - 0.5)))
    return (raw - raw.min()) / (raw.max() - raw.min()) if n > 1 else raw


class DriftInjector:
    """Inject drift into a copy of a table and keep the ground truth.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table; it is copied and its index reset, so row positions are 0..n-1.
    seed : int
        Seed of every random choice made by the injections.
    block_col : str, optional
        Column of block values, needed to select rows by ``blocks=``.
    time_col : str, optional
        Column of times (numbers or datetimes), needed to select rows by ``time=``.

    Attributes
    ----------
    frame : pandas.DataFrame
        The table with all injections applied so far.
    ground_truth : list of dict
        One record per injection.

    Examples
    --------
    >>> df = pd.DataFrame({"a": np.arange(10.0), "block": np.repeat([0, 1], 5)})
    >>> inj = DriftInjector(df, seed=0, block_col="block")
    >>> inj.feature_drift(["a"], kind="shift", magnitude=1.0, blocks=[1])["rows"]
    [5, 10]
    """

    def __init__(
        self, frame: pd.DataFrame, seed: int = 0, block_col: str | None = None, time_col: str | None = None
    ) -> None:
        for col in (block_col, time_col):
            if col is not None and col not in frame.columns:
                raise GeneratorConfigError(f"column {col!r} not in the table")
        self.frame = frame.reset_index(drop=True).copy()
        self.block_col = block_col
        self.time_col = time_col
        self.ground_truth: list[dict[str, Any]] = []
        self._rng = np.random.default_rng(seed)

    # -- selection -------------------------------------------------------------------------------------
    def _select(
        self,
        rows: Sequence[int] | None,
        blocks: Sequence[Any] | None,
        time: Sequence[Any] | None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        given = [name for name, v in (("rows", rows), ("blocks", blocks), ("time", time)) if v is not None]
        if len(given) > 1:
            raise GeneratorConfigError(f"select rows by one of rows/blocks/time, got {given}")
        n = len(self.frame)
        if rows is not None:
            start, stop = int(rows[0]), int(rows[1])
            if not 0 <= start < stop <= n:
                raise GeneratorConfigError(f"rows must satisfy 0 <= start < stop <= {n}, got {list(rows)}")
            mask = np.zeros(n, dtype=bool)
            mask[start:stop] = True
        elif blocks is not None:
            if self.block_col is None:
                raise GeneratorConfigError("selecting by blocks needs block_col")
            mask = self.frame[self.block_col].isin(list(blocks)).to_numpy()
        elif time is not None:
            if self.time_col is None:
                raise GeneratorConfigError("selecting by time needs time_col")
            t = self.frame[self.time_col]
            mask = ((t >= time[0]) & (t < time[1])).to_numpy()
        else:
            mask = np.ones(n, dtype=bool)
        positions = np.flatnonzero(mask)
        if positions.size == 0:
            raise GeneratorConfigError("the selection matches no rows")
        where: dict[str, Any] = {
            "rows": [int(positions[0]), int(positions[-1]) + 1],
            "n_rows": int(positions.size),
        }
        if self.block_col is not None:
            where["blocks"] = sorted(pd.unique(self.frame[self.block_col].to_numpy()[positions]).tolist())
        if time is not None:
            where["time"] = [str(time[0]), str(time[1])]
        return positions, where

    def _record(self, drift_type: str, where: Mapping[str, Any], **details: Any) -> dict[str, Any]:
        record = {"type": drift_type, **details, **where}
        self.ground_truth.append(record)
        return record

    def _numeric(self, columns: Sequence[str]) -> list[str]:
        cols = list(columns)
        for c in cols:
            if c not in self.frame.columns:
                raise GeneratorConfigError(f"column {c!r} not in the table")
            if not pd.api.types.is_numeric_dtype(self.frame[c]) or pd.api.types.is_bool_dtype(self.frame[c]):
                raise GeneratorConfigError(f"column {c!r} is not numeric; this drift needs numeric columns")
        return cols

    def _target(self, target: str) -> str:
        if target not in self.frame.columns:
            raise GeneratorConfigError(f"target column {target!r} not in the table")
        return target

    # -- feature drift ---------------------------------------------------------------------------------
    def _weights(self, n: int, profile: str, curve: str, period: int | None) -> np.ndarray:
        check_option("profile", profile, PROFILES)
        if profile == "abrupt":
            return np.ones(n)
        if profile == "incremental":
            return transition_curve(curve, n)
        if profile == "gradual":
            return (self._rng.random(n) < transition_curve(curve, n)).astype(float)
        period = period or max(n // 4, 1)
        if period <= 0:
            raise GeneratorConfigError(f"period must be positive, got {period}")
        return ((np.arange(n) // period) % 2 == 0).astype(float)

    def feature_drift(
        self,
        columns: Sequence[str],
        kind: str = "shift",
        magnitude: float = 1.0,
        profile: str = "abrupt",
        curve: str = "sigmoid",
        period: int | None = None,
        rows: Sequence[int] | None = None,
        blocks: Sequence[Any] | None = None,
        time: Sequence[Any] | None = None,
    ) -> dict[str, Any]:
        """Shift, scale or add noise to numeric columns in the selected rows.

        Parameters
        ----------
        columns : sequence of str
            Numeric columns to drift.
        kind : {"shift", "scale", "noise"}
            ``shift`` adds ``magnitude`` standard deviations (of the whole column); ``scale`` multiplies the
            deviation from the column mean by ``magnitude``; ``noise`` adds gaussian noise with standard
            deviation ``magnitude`` column standard deviations.
        magnitude : float
            Size of the drift, see ``kind``.
        profile : {"abrupt", "gradual", "incremental", "recurrent"}
            ``abrupt``: every selected row fully drifted. ``gradual``: row ``i`` is drifted with probability
            ``curve(i)``, a mixture of old and new concept. ``incremental``: every row drifted by
            ``curve(i) * magnitude``. ``recurrent``: drifted in alternate periods of ``period`` rows,
            starting drifted.
        curve : {"sigmoid", "linear", "cosine"}
            Shape of the 0 to 1 rise across the selection for gradual and incremental profiles.
        period : int, optional
            Period length in rows for ``recurrent`` (default a quarter of the selection).
        rows, blocks, time
            Selection: ``[start, stop)`` positions, block values, or a ``[t0, t1)`` time window.

        Returns
        -------
        dict
            The ground-truth record appended.
        """
        check_option("feature drift kind", kind, FEATURE_KINDS)
        cols = self._numeric(columns)
        positions, where = self._select(rows, blocks, time)
        weights = self._weights(positions.size, profile, curve, period)
        for c in cols:
            values = self.frame[c].to_numpy(dtype=float)
            std = float(np.nanstd(values)) or 1.0
            old = values[positions]
            if kind == "shift":
                new = old + weights * magnitude * std
            elif kind == "scale":
                mean = float(np.nanmean(values))
                new = mean + (old - mean) * (1.0 + weights * (magnitude - 1.0))
            else:
                new = old + weights * self._rng.normal(0.0, magnitude * std, positions.size)
            self.frame[c] = self.frame[c].astype(float)
            self.frame.loc[positions, c] = new
        return self._record(
            "feature_drift",
            where,
            kind=kind,
            columns=cols,
            magnitude=magnitude,
            profile=profile,
            curve=curve if profile in ("gradual", "incremental") else None,
            period=(period or max(positions.size // 4, 1)) if profile == "recurrent" else None,
        )

    # -- label drift -----------------------------------------------------------------------------------
    def label_flip(
        self,
        target: str,
        fraction: float,
        rows: Sequence[int] | None = None,
        blocks: Sequence[Any] | None = None,
        time: Sequence[Any] | None = None,
    ) -> dict[str, Any]:
        """Replace the label of a random ``fraction`` of the selected rows by another class (uniformly)."""
        self._target(target)
        if not 0.0 < fraction <= 1.0:
            raise GeneratorConfigError(f"fraction must be in (0, 1], got {fraction}")
        positions, where = self._select(rows, blocks, time)
        chosen = positions[self._rng.random(positions.size) < fraction]
        self._flip(target, chosen)
        return self._record("label_flip", where, target=target, fraction=fraction, n_flipped=int(chosen.size))

    def _flip(self, target: str, positions: np.ndarray) -> None:
        classes = pd.unique(self.frame[target].dropna())
        if len(classes) < 2:
            raise GeneratorConfigError(f"target {target!r} needs at least two classes to flip labels")
        current = self.frame.loc[positions, target].to_numpy()
        new = current.copy()
        for i, y in enumerate(current):
            others = [c for c in classes if c != y]
            new[i] = others[self._rng.integers(len(others))]
        self.frame.loc[positions, target] = new

    def label_shift(
        self,
        target: str,
        priors: Mapping[Any, float],
        rows: Sequence[int] | None = None,
        blocks: Sequence[Any] | None = None,
        time: Sequence[Any] | None = None,
    ) -> dict[str, Any]:
        """Change the class priors P(y) in the selection, keeping P(x | y).

        The selected rows are replaced by rows drawn (with replacement) from the same selection, class by
        class, in the proportions ``priors``. Block and time columns keep their original values.
        """
        self._target(target)
        total = sum(priors.values())
        if total <= 0 or any(p < 0 for p in priors.values()):
            raise GeneratorConfigError(f"priors must be non-negative with a positive sum, got {dict(priors)}")
        positions, where = self._select(rows, blocks, time)
        labels = self.frame.loc[positions, target].to_numpy()
        missing = [c for c, p in priors.items() if p > 0 and not np.any(labels == c)]
        if missing:
            raise GeneratorConfigError(f"classes {missing} do not occur in the selection")
        classes = list(priors)
        counts = self._rng.multinomial(positions.size, np.array([priors[c] for c in classes]) / total)
        drawn = np.concatenate(
            [self._rng.choice(positions[labels == c], size=k) for c, k in zip(classes, counts) if k > 0]
        )
        self._rng.shuffle(drawn)
        keep = [c for c in (self.block_col, self.time_col) if c is not None]
        cols = [c for c in self.frame.columns if c not in keep]
        self.frame.loc[positions, cols] = self.frame.loc[drawn, cols].to_numpy()
        return self._record(
            "label_shift", where, target=target, priors={str(c): p / total for c, p in priors.items()}
        )

    def conditional_drift(
        self,
        target: str,
        region: str,
        fraction: float = 1.0,
        rows: Sequence[int] | None = None,
        blocks: Sequence[Any] | None = None,
        time: Sequence[Any] | None = None,
    ) -> dict[str, Any]:
        """Change P(y | x) inside a region of feature space; P(x) is untouched.

        Parameters
        ----------
        target : str
            Label column.
        region : str
            A ``pandas.DataFrame.query`` expression on the features, e.g. ``"age > 60 and bmi > 30"``.
        fraction : float
            Share of the rows in the region (and the selection) whose label is flipped to another class.
        """
        self._target(target)
        positions, where = self._select(rows, blocks, time)
        try:
            in_region = self.frame.iloc[positions].eval(region)
        except Exception as exc:  # pandas raises many types for a bad expression
            raise GeneratorConfigError(f"bad region expression {region!r}: {exc}") from exc
        hits = positions[np.asarray(in_region, dtype=bool)]
        chosen = hits[self._rng.random(hits.size) < fraction]
        self._flip(target, chosen)
        return self._record(
            "conditional_drift",
            where,
            target=target,
            region=region,
            fraction=fraction,
            n_flipped=int(chosen.size),
        )

    # -- joint and data-quality drift ------------------------------------------------------------------
    def correlation_drift(
        self,
        columns: Sequence[str],
        correlation: float,
        rows: Sequence[int] | None = None,
        blocks: Sequence[Any] | None = None,
        time: Sequence[Any] | None = None,
    ) -> dict[str, Any]:
        """Give the columns a new dependence while each column's values in the selection stay the same.

        The first column is the anchor. Every other column's selected values are permuted so that their
        ranks follow a Gaussian copula with correlation ``correlation`` to the anchor's ranks: the marginal
        distributions are exactly unchanged, only the joint one drifts.
        """
        cols = self._numeric(columns)
        if len(cols) < 2:
            raise GeneratorConfigError("correlation drift needs at least two columns")
        if not -1.0 < correlation < 1.0:
            raise GeneratorConfigError(f"correlation must be in (-1, 1), got {correlation}")
        positions, where = self._select(rows, blocks, time)
        anchor = self.frame.loc[positions, cols[0]].to_numpy(dtype=float)
        n = positions.size
        z_anchor = stats.norm.ppf((stats.rankdata(anchor, method="ordinal") - 0.5) / n)
        for c in cols[1:]:
            latent = correlation * z_anchor + np.sqrt(1.0 - correlation**2) * self._rng.standard_normal(n)
            values = np.sort(self.frame.loc[positions, c].to_numpy(dtype=float))
            self.frame[c] = self.frame[c].astype(float)
            self.frame.loc[positions, c] = values[stats.rankdata(latent, method="ordinal") - 1]
        return self._record("correlation_drift", where, columns=cols, correlation=correlation)

    def missing_drift(
        self,
        columns: Sequence[str],
        rate: float,
        rows: Sequence[int] | None = None,
        blocks: Sequence[Any] | None = None,
        time: Sequence[Any] | None = None,
    ) -> dict[str, Any]:
        """Set a random ``rate`` of the selected values of each column to missing (completely at random)."""
        if not 0.0 < rate <= 1.0:
            raise GeneratorConfigError(f"rate must be in (0, 1], got {rate}")
        for c in columns:
            if c not in self.frame.columns:
                raise GeneratorConfigError(f"column {c!r} not in the table")
        positions, where = self._select(rows, blocks, time)
        for c in columns:
            hit = positions[self._rng.random(positions.size) < rate]
            if pd.api.types.is_integer_dtype(self.frame[c]) or pd.api.types.is_bool_dtype(self.frame[c]):
                self.frame[c] = self.frame[c].astype(float)
            self.frame.loc[hit, c] = np.nan
        return self._record("missing_drift", where, columns=list(columns), rate=rate)

    def new_category(
        self,
        column: str,
        category: str,
        fraction: float,
        rows: Sequence[int] | None = None,
        blocks: Sequence[Any] | None = None,
        time: Sequence[Any] | None = None,
    ) -> dict[str, Any]:
        """Replace a random ``fraction`` of the selected values of a column by a never-seen category."""
        if column not in self.frame.columns:
            raise GeneratorConfigError(f"column {column!r} not in the table")
        if (self.frame[column].astype(str) == category).any():
            raise GeneratorConfigError(f"category {category!r} already occurs in column {column!r}")
        if not 0.0 < fraction <= 1.0:
            raise GeneratorConfigError(f"fraction must be in (0, 1], got {fraction}")
        positions, where = self._select(rows, blocks, time)
        hit = positions[self._rng.random(positions.size) < fraction]
        self.frame[column] = self.frame[column].astype(object)
        self.frame.loc[hit, column] = category
        return self._record("new_category", where, column=column, category=category, fraction=fraction)

    def apply(self, method: str, **kwargs: Any) -> dict[str, Any]:
        """Run one injection by name (used by the CLI's JSON specs).

        Raises
        ------
        UnknownOptionError
            If ``method`` is not one of :data:`INJECTIONS`.
        GeneratorConfigError
            If the arguments do not fit the method.
        """
        check_option("injection", method, INJECTIONS)
        try:
            return getattr(self, method)(**kwargs)
        except TypeError as exc:
            raise GeneratorConfigError(f"bad arguments for {method}: {exc}") from exc


#: Names accepted by :meth:`DriftInjector.apply`.
INJECTIONS = (
    "feature_drift",
    "label_flip",
    "label_shift",
    "conditional_drift",
    "correlation_drift",
    "missing_drift",
    "new_category",
)
