"""Which columns are compared, of which kind, and the cleaned values each test reads.

Kinds: object, string, category and bool columns are categorical; numeric columns are numeric unless
they hold at most ``max_categorical_unique`` distinct values (then their values are categories), and the
config can force either kind. A column numeric on one side and not on the other is a type mismatch. A column that cannot be tested yields a :class:`Skipped` with the reason.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from calmops_dagster.drift.config import DriftConfig
from calmops_dagster.drift.errors import DriftInputError, MissingFeatureError
from calmops_dagster.drift.univariate import Merged

OTHER = "__other__"
#: Above this ``max_categorical_unique`` the distinct values of a numeric column are found in one pass.
JUMP_LIMIT = 64


@dataclass(frozen=True)
class NumericColumn:
    """A numeric feature: both sides sorted, NaN dropped, merged once for every test."""

    name: str
    merged: Merged


@dataclass(frozen=True)
class CategoricalColumn:
    """A categorical feature: counts per category on both sides, aligned on ``categories``."""

    name: str
    categories: list
    ref_counts: np.ndarray
    cur_counts: np.ndarray
    note: str = ""


@dataclass(frozen=True)
class Skipped:
    """A feature that was not tested, and why."""

    name: str
    kind: str
    n_ref: int
    n_cur: int
    note: str


@dataclass(frozen=True)
class ReferenceColumn:
    """What the tests read from one reference column, whatever the current side holds.

    A numeric column (unless ``categorical_columns`` names it) keeps its sorted non-NaN values; any other
    column its value counts (Python objects, in order of first appearance, missing values left out) and
    ``infer_dtype`` of its values. ``dtype`` is the column's dtype as text, for the notes.
    """

    dtype: str
    numeric: bool
    n_present: int
    sorted_values: np.ndarray | None = None
    value_counts: pd.Series | None = None
    value_types: str = ""

    @classmethod
    def of(cls, name: str, s: pd.Series, config: DriftConfig) -> "ReferenceColumn":
        """The reference side of feature ``name`` (``config.categorical_columns`` decides its kind)."""
        numeric = _is_numeric(s)
        if numeric and name not in config.categorical_columns:
            v = _sorted_values(s)
            # a numpy float column's only missing value is NaN (an int column has none): counted while sorting
            n_present = v.size if isinstance(s.dtype, np.dtype) else int(s.notna().sum())
            v.flags.writeable = False  # shared by every block compared with it
            return cls(str(s.dtype), True, n_present, sorted_values=v)
        counts = _value_counts(s)
        return cls(str(s.dtype), numeric, int(counts.sum()), value_counts=counts,
                   value_types=_value_types(s, counts.index))


def check_frame(label: str, df) -> None:
    """Raise :class:`DriftInputError` unless ``df`` is a DataFrame with rows and unique column names."""
    if not isinstance(df, pd.DataFrame):
        raise DriftInputError(f"{label} must be a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise DriftInputError(f"{label} has no rows")
    if not df.columns.is_unique:
        dup = sorted(map(str, df.columns[df.columns.duplicated()]))
        raise DriftInputError(f"{label} has duplicated columns: {dup}")


def select_features(reference_columns: pd.Index, reference_present, current: pd.DataFrame,
                    features: list[str] | None) -> tuple[list[str], list[Skipped]]:
    """The features to compare, in order, plus columns present on one side only (when not requested).

    ``reference_columns`` are the (checked, :func:`check_frame`) reference's columns and
    ``reference_present(column)`` its number of non-missing values.

    Raises
    ------
    DriftInputError
        If ``current`` is not a DataFrame or has no rows, or the two share no column.
    MissingFeatureError
        If a requested feature is absent on either side.
    """
    check_frame("current", current)
    if features is not None:
        miss_ref = [f for f in features if f not in reference_columns]
        miss_cur = [f for f in features if f not in current.columns]
        if miss_ref or miss_cur:
            raise MissingFeatureError(miss_ref, miss_cur)
        return list(features), []
    common = [c for c in reference_columns if c in current.columns]
    if not common:
        raise DriftInputError("reference and current have no column in common")
    one_sided = [
        Skipped(str(c), "unknown", reference_present(c), 0, "not tested: column missing in current")
        for c in reference_columns if c not in current.columns
    ] + [
        Skipped(str(c), "unknown", 0, int(current[c].notna().sum()), "not tested: column missing in reference")
        for c in current.columns if c not in reference_columns
    ]
    return common, one_sided


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


def _sorted_values(s: pd.Series) -> np.ndarray:
    """The column's values as sorted floats without NaN: one copy, sorted in place (NaN sorts last)."""
    if isinstance(s.dtype, np.dtype):  # numpy-backed: NaN is its only missing value
        v = s.to_numpy(dtype=float, copy=True)
    else:  # nullable extension dtypes: pd.NA becomes NaN (without copy=True a Float64 column is its own view)
        v = s.to_numpy(dtype=float, na_value=np.nan, copy=True)
    v.sort()  # in place: v never shares memory with the caller's frame
    if v.size and np.isnan(v[-1]):
        return v[: np.searchsorted(v, np.nan, "left")]
    return v


def _distinct_upto(sorted_values: np.ndarray, limit: int) -> np.ndarray | None:
    """The distinct values of a sorted array if there are at most ``limit`` of them, else None.

    Jumps from one run of equal values to the next by binary search, so a continuous column is rejected
    after ``limit + 1`` searches instead of a pass over every value; above ``JUMP_LIMIT`` a single pass is
    cheaper than that many Python-level searches.
    """
    if limit > JUMP_LIMIT:
        v = sorted_values
        distinct = v[np.append(True, v[1:] != v[:-1])] if v.size else v
        return distinct if distinct.size <= limit else None
    found, i = [], 0
    while i < sorted_values.size:
        if len(found) == limit:
            return None
        found.append(sorted_values[i])
        i = int(np.searchsorted(sorted_values, sorted_values[i], "right"))
    return np.array(found, dtype=float)


def _counts_sorted(sorted_values: np.ndarray, categories: np.ndarray) -> np.ndarray:
    return np.diff(np.append(np.searchsorted(sorted_values, categories, "left"), sorted_values.size))


def _lump(cats: list, ref_counts: np.ndarray, cur_counts: np.ndarray, limit: int) -> tuple[list, np.ndarray, np.ndarray, str]:
    """Keep the ``limit - 1`` most frequent categories (both sides pooled); pool the rest as ``__other__``."""
    if len(cats) <= limit:
        return cats, ref_counts, cur_counts, ""
    order = np.argsort(-(ref_counts + cur_counts), kind="stable")
    keep, rest = order[: limit - 1], order[limit - 1:]
    new_cats = [cats[i] for i in keep] + [OTHER]
    note = f"{len(rest)} rare categories pooled as {OTHER}"
    return (new_cats, np.append(ref_counts[keep], ref_counts[rest].sum()),
            np.append(cur_counts[keep], cur_counts[rest].sum()), note)


def _value_types(side: pd.Series, distinct: np.ndarray) -> str:
    """``infer_dtype`` of one side. An object column whose distinct values are all strings holds only
    strings (a value equal to a string is one), so its rows need no second scan."""
    if side.dtype == object and pd.api.types.infer_dtype(distinct, skipna=True) == "string":
        return "string"
    return pd.api.types.infer_dtype(side, skipna=True)


def _value_counts(side: pd.Series) -> pd.Series:
    """Counts of one side's values as Python objects, in order of first appearance, missing values left out.

    pandas 2 infers a dtype for the index of an object column's counts (and warns that it will stop);
    turning it back to objects keeps the values as they were in the column (``7``, not ``np.int64(7)``).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The behavior of value_counts with object-dtype", FutureWarning)
        counts = side.astype(object, copy=False).value_counts(sort=False)
    counts.index = counts.index.astype(object)
    return counts


def _category_counts(ref_vc: pd.Series, cur: pd.Series) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """The categories in order of first appearance (reference first) and their counts on each side,
    missing values left out, from the reference's :func:`_value_counts` and one hash pass over ``cur``
    (no pooled copy of the values)."""
    cur_vc = _value_counts(cur)
    new = cur_vc.index[~cur_vc.index.isin(ref_vc.index)]
    categories = ref_vc.index.append(new).astype(object)  # append infers a dtype again
    ref_counts = np.concatenate([ref_vc.to_numpy(dtype=np.int64), np.zeros(len(new), dtype=np.int64)])
    return categories, ref_counts, cur_vc.reindex(categories, fill_value=0).to_numpy(dtype=np.int64)


def _categorical(name: str, ref: ReferenceColumn, cur: pd.Series, config: DriftConfig) -> CategoricalColumn | Skipped:
    uniques, ref_counts, cur_counts = _category_counts(ref.value_counts, cur)
    k = len(uniques)
    n_ref, n_cur = int(ref_counts.sum()), int(cur_counts.sum())
    problem = _too_few(n_ref, n_cur, config)
    if problem:
        return Skipped(name, "categorical", n_ref, n_cur, problem)
    if k < 2:
        return Skipped(name, "categorical", n_ref, n_cur, f"not tested: constant, the single value {uniques[0]!r} on both sides")
    notes = []
    inferred = {ref.value_types, _value_types(cur, uniques[cur_counts > 0])}
    if any(t.startswith("mixed") for t in inferred) or len(inferred) > 1:
        notes.append(f"mixed value types {sorted(inferred)}, compared as categories")
    cats, rc, cc, lump_note = _lump(list(uniques), ref_counts, cur_counts, config.max_categories)
    if lump_note:
        notes.append(lump_note)
    return CategoricalColumn(name, cats, rc, cc, "; ".join(notes))


def _too_few(n_ref: int, n_cur: int, config: DriftConfig) -> str:
    for label, n in (("reference", n_ref), ("current", n_cur)):
        if n == 0:
            return f"not tested: all values missing in {label}"
        if n < config.min_samples:
            return f"not tested: only {n} non-null values in {label} (min_samples={config.min_samples})"
    return ""


def prepare(name: str, ref: ReferenceColumn, cur: pd.Series, config: DriftConfig) -> NumericColumn | CategoricalColumn | Skipped:
    """Resolve the kind of one feature and extract the values its tests need (``ref`` from
    :meth:`ReferenceColumn.of` with the same ``config``)."""
    ref_num, cur_num = ref.numeric, _is_numeric(cur)
    if name in config.numeric_columns and not (ref_num and cur_num):
        return Skipped(name, "numeric", ref.n_present, int(cur.notna().sum()),
                       f"not tested: declared numeric but dtypes are {ref.dtype} (reference), {cur.dtype} (current)")
    if name in config.categorical_columns or not (ref_num or cur_num):
        return _categorical(name, ref, cur, config)
    if ref_num != cur_num:
        return Skipped(name, "unknown", ref.n_present, int(cur.notna().sum()),
                       f"not tested: type mismatch, {ref.dtype} in reference and {cur.dtype} in current")
    r, c = ref.sorted_values, _sorted_values(cur)
    problem = _too_few(r.size, c.size, config)
    if problem:
        return Skipped(name, "numeric", r.size, c.size, problem)
    if name not in config.numeric_columns:
        du = _distinct_upto(r, config.max_categorical_unique)
        dc = None if du is None else _distinct_upto(c, config.max_categorical_unique)
        if dc is not None:
            cats = np.union1d(du, dc)
            if cats.size <= config.max_categorical_unique:
                if cats.size < 2:
                    return Skipped(name, "categorical", r.size, c.size,
                                   f"not tested: constant, the single value {cats[0]!r} on both sides")
                return CategoricalColumn(name, cats.tolist(), _counts_sorted(r, cats), _counts_sorted(c, cats),
                                         f"numeric with {cats.size} distinct values, compared as categories")
    return NumericColumn(name, Merged.from_sorted(r, c))
