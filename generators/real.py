"""Realistic synthesis: learn a real table and draw new rows that look like it.

:class:`RealGenerator` offers FCS with ``cart``, ``rf`` or ``lgbm`` (each column sampled from its fitted
conditional, so variances are kept), ``sdv`` and ``resample`` (the baseline); every method keeps the
target's class balance and the missing-value rates. How each method draws: docs/generators.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from calmops_dagster.generators.errors import GeneratorConfigError, check_option

METHODS = ("cart", "rf", "lgbm", "sdv", "resample")
SDV_MODELS = ("gaussian_copula", "ctgan", "tvae")
#: Folds for the cross-fitted residuals of the ``lgbm`` method.
RESIDUAL_FOLDS = 2


@dataclass(frozen=True)
class ColumnInfo:
    """How one column is encoded: numeric (float) or categorical (integer codes of ``categories``)."""

    name: str
    categorical: bool
    integer: bool
    dtype: Any
    categories: tuple[Any, ...] = ()


def describe_columns(frame: pd.DataFrame, max_categories: int = 50) -> list[ColumnInfo]:
    """Classify each column as numeric or categorical.

    Booleans, strings, pandas categoricals, and integer columns with few distinct values (at most 10 and at
    most 5% of the rows) are categorical; other numeric columns are numeric.

    Raises
    ------
    GeneratorConfigError
        For datetime columns, or text columns with more than ``max_categories`` distinct values.
    """
    infos = []
    for name in frame.columns:
        s = frame[name]
        values = s.dropna()
        if pd.api.types.is_datetime64_any_dtype(s):
            raise GeneratorConfigError(f"column {name!r} is a datetime; convert it to a number first")
        is_int = pd.api.types.is_integer_dtype(s) or (
            pd.api.types.is_float_dtype(s) and len(values) > 0 and bool(np.all(values == np.round(values)))
        )
        numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        few = values.nunique() <= min(10, max(2, int(0.05 * len(values))))
        if numeric and not (is_int and few):
            infos.append(ColumnInfo(name, False, is_int, s.dtype))
            continue
        cats = tuple(sorted(values.unique().tolist(), key=str))
        if len(cats) > max_categories:
            raise GeneratorConfigError(
                f"column {name!r} has {len(cats)} distinct values (max {max_categories} for a categorical)"
            )
        infos.append(ColumnInfo(name, True, is_int, s.dtype, cats))
    return infos


def encode(frame: pd.DataFrame, infos: list[ColumnInfo]) -> np.ndarray:
    """Encode a table as a float matrix: numbers as they are, categories as codes, missing as NaN."""
    out = np.empty((len(frame), len(infos)))
    for j, info in enumerate(infos):
        s = frame[info.name]
        if info.categorical:
            lookup = {c: i for i, c in enumerate(info.categories)}
            out[:, j] = [lookup.get(v, np.nan) if not pd.isna(v) else np.nan for v in s.tolist()]
        else:
            out[:, j] = s.to_numpy(dtype=float)
    return out


def decode(matrix: np.ndarray, infos: list[ColumnInfo]) -> pd.DataFrame:
    """Invert :func:`encode`, restoring each column's original dtype where no value is missing."""
    cols = {}
    for j, info in enumerate(infos):
        x = matrix[:, j]
        missing = np.isnan(x)
        if info.categorical:
            codes = np.clip(np.round(np.nan_to_num(x)), 0, len(info.categories) - 1).astype(int)
            values = pd.Series(np.asarray(info.categories, dtype=object)[codes], dtype=object)
            values[missing] = np.nan
            s = values
        else:
            s = pd.Series(np.round(x) if info.integer else x)
        if not missing.any():
            try:
                s = s.astype(info.dtype)
            except (TypeError, ValueError):
                pass
        cols[info.name] = s
    return pd.DataFrame(cols)


def allot(n: int, proportions: np.ndarray) -> np.ndarray:
    """Split ``n`` into integer counts proportional to ``proportions`` (largest remainder).

    Examples
    --------
    >>> allot(10, np.array([0.55, 0.45])).tolist()
    [6, 4]
    """
    raw = n * proportions / proportions.sum()
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]] += 1
    return counts


class _LeafSampler:
    """Draw, for new rows, a random training value from the leaf each row falls into."""

    def __init__(self, train_leaves: np.ndarray, y: np.ndarray) -> None:
        order = np.argsort(train_leaves, kind="stable")
        self.values = y[order]
        self.leaf_ids, self.starts, self.counts = np.unique(
            train_leaves[order], return_index=True, return_counts=True
        )

    def sample(self, leaves: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pos = np.searchsorted(self.leaf_ids, leaves)
        offset = np.floor(rng.random(leaves.size) * self.counts[pos]).astype(int)
        return self.values[self.starts[pos] + offset]


class _Conditional:
    """One column's fitted conditional distribution given the other columns, for the Gibbs sampler."""

    def __init__(self, method: str, categorical: bool, seed: int, min_samples_leaf: int, n_estimators: int):
        self.method = method
        self.categorical = categorical
        self.seed = seed
        self.min_samples_leaf = min_samples_leaf
        self.n_estimators = n_estimators

    def fit(self, X: np.ndarray, y: np.ndarray) -> _Conditional:
        if self.method == "cart":
            from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

            cls = DecisionTreeClassifier if self.categorical else DecisionTreeRegressor
            self.model = cls(min_samples_leaf=self.min_samples_leaf, random_state=self.seed).fit(X, y)
            self.samplers = [_LeafSampler(self.model.apply(X), y)]
        elif self.method == "rf":
            from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

            cls = RandomForestClassifier if self.categorical else RandomForestRegressor
            self.model = cls(
                n_estimators=self.n_estimators,
                min_samples_leaf=self.min_samples_leaf,
                max_features=0.5,
                random_state=self.seed,
                n_jobs=1,
            ).fit(X, y)
            leaves = self.model.apply(X)
            self.samplers = [_LeafSampler(leaves[:, t], y) for t in range(leaves.shape[1])]
        else:
            import lightgbm as lgb

            params = {
                "n_estimators": self.n_estimators * 5,
                "num_leaves": 15,
                "learning_rate": 0.1,
                "min_child_samples": max(self.min_samples_leaf, 5),
                "random_state": self.seed,
                "n_jobs": 1,
                "verbose": -1,
            }
            if self.categorical:
                self.model = lgb.LGBMClassifier(**params).fit(X, y.astype(int))
            else:
                self.model = lgb.LGBMRegressor(**params).fit(X, y)
                # Residuals drawn to add noise around the prediction. In-sample residuals are too small
                # (the model fits its own noise; variances shrank 10-30% down the visit order), while
                # residuals cross-fitted on held-out folds double count the prediction's own noise
                # (variances grew 5-19% at 2,000 rows). So: cross-fitted residuals, rescaled so that
                # prediction variance + residual variance = the column's variance.
                fold_of_row = np.random.default_rng(self.seed).integers(RESIDUAL_FOLDS, size=len(y))
                self.residuals = np.empty(len(y))
                for k in range(RESIDUAL_FOLDS):
                    fold = fold_of_row == k
                    other = lgb.LGBMRegressor(**params).fit(X[~fold], y[~fold])
                    self.residuals[fold] = y[fold] - other.predict(X[fold])
                explained = np.var(self.model.predict(X))
                scale = np.sqrt(max(np.var(y) - explained, 0.0) / max(np.var(self.residuals), 1e-12))
                self.residuals *= min(scale, 1.0)
        return self

    def sample(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.method == "cart":
            return self.samplers[0].sample(self.model.apply(X), rng)
        if self.method == "rf":
            leaves = self.model.apply(X)
            tree = rng.integers(len(self.samplers), size=len(X))
            out = np.empty(len(X))
            for t in np.unique(tree):
                rows = np.flatnonzero(tree == t)
                out[rows] = self.samplers[t].sample(leaves[rows, t], rng)
            return out
        if self.categorical:
            proba = self.model.predict_proba(X)
            cum = np.cumsum(proba, axis=1)
            pick = (rng.random(len(X))[:, None] > cum).sum(axis=1)
            return self.model.classes_[np.minimum(pick, len(self.model.classes_) - 1)].astype(float)
        return self.model.predict(X) + rng.choice(self.residuals, size=len(X))


class RealGenerator:
    """Learn a real table and synthesize new rows with the same look.

    Parameters
    ----------
    method : {"cart", "rf", "lgbm", "sdv", "resample"}
        Synthesis method; see the module docstring.
    target : str, optional
        Label column whose class balance is kept exactly (must have no missing values).
    seed : int
        Seed of every random choice, so ``fit`` + ``sample`` is reproducible.
    min_samples_leaf : int
        Smallest leaf of the FCS trees; larger leaves give smoother, more private draws.
    n_estimators : int
        Trees per random forest (``rf``); ``lgbm`` uses five times as many boosting rounds.
    sdv_model : {"gaussian_copula", "ctgan", "tvae"}
        SDV synthesizer for ``method="sdv"``.
    sdv_epochs : int
        Training epochs for CTGAN and TVAE.

    Attributes
    ----------
    columns_ : list of ColumnInfo
        Encoding of each column, learnt by :meth:`fit`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> real = pd.DataFrame({"x": rng.normal(size=200), "y": rng.integers(0, 2, 200)})
    >>> synth = RealGenerator("cart", target="y", seed=0).fit(real).sample(100)
    >>> synth.shape, int(synth["y"].sum()) == round(100 * real["y"].mean())
    ((100, 2), True)
    """

    def __init__(
        self,
        method: str = "cart",
        target: str | None = None,
        seed: int = 0,
        min_samples_leaf: int = 5,
        n_estimators: int = 10,
        sdv_model: str = "gaussian_copula",
        sdv_epochs: int = 300,
    ) -> None:
        self.method = method
        self.target = target
        self.seed = seed
        self.min_samples_leaf = min_samples_leaf
        self.n_estimators = n_estimators
        self.sdv_model = sdv_model
        self.sdv_epochs = sdv_epochs

    # -- fitting ---------------------------------------------------------------------------------------
    def fit(self, frame: pd.DataFrame) -> RealGenerator:
        """Learn ``frame``; returns ``self``."""
        check_option("method", self.method, METHODS)
        check_option("sdv_model", self.sdv_model, SDV_MODELS)
        if len(frame) < 2 * self.min_samples_leaf:
            raise GeneratorConfigError(f"need at least {2 * self.min_samples_leaf} rows, got {len(frame)}")
        if self.target is not None:
            if self.target not in frame.columns:
                raise GeneratorConfigError(f"target {self.target!r} not in the table's columns")
            if frame[self.target].isna().any():
                raise GeneratorConfigError(
                    f"target {self.target!r} has missing values; drop those rows first"
                )
        self.real_ = frame.reset_index(drop=True).copy()
        self.columns_ = describe_columns(self.real_)
        self.encoded_ = encode(self.real_, self.columns_)
        names = [c.name for c in self.columns_]
        self.target_index_ = names.index(self.target) if self.target is not None else None
        if self.target_index_ is not None:
            self.classes_, self.class_of_row_ = np.unique(
                self.encoded_[:, self.target_index_], return_inverse=True
            )
        else:
            self.classes_, self.class_of_row_ = np.zeros(1), np.zeros(len(frame), dtype=int)
        if self.method in ("cart", "rf", "lgbm"):
            self._fit_fcs()
        elif self.method == "sdv":
            self._fit_sdv()
        return self

    def _fit_fcs(self) -> None:
        X = self.encoded_
        first = [self.target_index_] if self.target_index_ is not None else []
        self.visit_order_ = first + [j for j in range(X.shape[1]) if j != self.target_index_]
        self.conditionals_: dict[int, _Conditional] = {}
        for k, j in enumerate(self.visit_order_):
            if j == self.target_index_ or k == 0:
                continue  # drawn from the class allotment / from its marginal
            observed = ~np.isnan(X[:, j])
            if np.unique(X[observed, j]).size < 2:
                continue  # constant column: its marginal draw is already exact
            before = self.visit_order_[:k]
            self.conditionals_[j] = _Conditional(
                self.method,
                self.columns_[j].categorical,
                self.seed + j,
                self.min_samples_leaf,
                self.n_estimators,
            ).fit(X[np.ix_(observed, before)], X[observed, j])

    def _sdv_metadata(self) -> Any:
        from sdv.metadata import Metadata

        columns = {c.name: {"sdtype": "categorical" if c.categorical else "numerical"} for c in self.columns_}
        return Metadata.load_from_dict({"tables": {"table": {"columns": columns}}, "relationships": []})

    def _fit_sdv(self) -> None:
        import sdv.single_table as st

        metadata = self._sdv_metadata()
        if self.sdv_model == "gaussian_copula":
            synth = st.GaussianCopulaSynthesizer(metadata)
        elif self.sdv_model == "ctgan":
            synth = st.CTGANSynthesizer(metadata, epochs=self.sdv_epochs, enable_gpu=False)
        else:
            synth = st.TVAESynthesizer(metadata, epochs=self.sdv_epochs, enable_gpu=False)
        self._sdv_seed_everything()
        synth.fit({"table": self.real_})
        self.sdv_ = synth

    def _sdv_seed_everything(self) -> None:
        # SDV draws from numpy's and torch's global generators; seed both for reproducible rows.
        import torch

        np.random.seed(self.seed)
        torch.manual_seed(self.seed)

    # -- sampling --------------------------------------------------------------------------------------
    def sample(self, n: int) -> pd.DataFrame:
        """Draw ``n`` synthetic rows (same columns and dtypes as the real table where no value is missing)."""
        if not hasattr(self, "columns_"):
            raise GeneratorConfigError("RealGenerator is not fitted; call fit(frame) first")
        if n <= 0:
            raise GeneratorConfigError(f"n must be positive, got {n}")
        proportions = np.bincount(self.class_of_row_, minlength=len(self.classes_)).astype(float)
        counts = allot(n, proportions)
        if self.method == "sdv":
            return self._sample_sdv(counts)
        rng = np.random.default_rng(self.seed + 1)
        row_class = rng.permutation(np.repeat(np.arange(len(self.classes_)), counts))
        if self.method == "resample":
            rows = self._rows_of_class(row_class, rng)
            return decode(self.encoded_[rows], self.columns_)
        return decode(self._sample_fcs(row_class, rng), self.columns_)

    def _rows_of_class(self, row_class: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each requested class label, the index of a random real row of that class."""
        rows = np.empty(row_class.size, dtype=int)
        for k in range(len(self.classes_)):
            want = np.flatnonzero(row_class == k)
            rows[want] = rng.choice(np.flatnonzero(self.class_of_row_ == k), size=want.size)
        return rows

    def _sample_fcs(self, row_class: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        X = self.encoded_
        n = row_class.size
        synth = np.full((n, X.shape[1]), np.nan)
        for k, j in enumerate(self.visit_order_):
            if j == self.target_index_:
                synth[:, j] = self.classes_[row_class]
            elif j in self.conditionals_:
                synth[:, j] = self.conditionals_[j].sample(synth[:, self.visit_order_[:k]], rng)
            else:
                pool = X[~np.isnan(X[:, j]), j]
                synth[:, j] = rng.choice(pool, size=n) if pool.size else np.nan
        pattern = np.isnan(X[self._rows_of_class(row_class, rng)])
        synth[pattern] = np.nan
        return synth

    def _sample_sdv(self, counts: np.ndarray) -> pd.DataFrame:
        self._sdv_seed_everything()
        if self.target is None:
            out = self.sdv_.sample(int(counts.sum()))
            out = out["table"] if isinstance(out, dict) else out
        else:
            from sdv.sampling import Condition

            labels = [
                decode(np.array([[c]]), [self.columns_[self.target_index_]]).iloc[0, 0] for c in self.classes_
            ]
            conditions = [
                Condition({self.target: label}, num_rows=int(k)) for label, k in zip(labels, counts) if k
            ]
            out = self.sdv_.sample_from_conditions(conditions)
            out = out["table"] if isinstance(out, dict) else out
            out = out.sample(frac=1.0, random_state=self.seed).reset_index(drop=True)
        return out[[c.name for c in self.columns_]]
