"""What a prediction request may hold, checked exactly as its OpenAPI schema says (pure functions).

A champion's input is described by :class:`InputSchema`: its feature columns in order and, per column, a
JSON type (``number``, ``string``, ``boolean``; ``any`` when the model does not say) and the categories it
was trained on. The same object gives the request body's JSON schema (:meth:`InputSchema.body_schema`, put in
``/openapi.json``) and checks a request (:func:`parse_body`, :func:`parse_rows`, :func:`check_columns`), so a
request the schema allows is answered and one it forbids gets a 4xx naming what is wrong:

- 400: empty body, not JSON (``NaN``/``Infinity`` are not JSON either), nested deeper than ``max_depth``;
- 422: neither records nor ``{"columns", "data"}``, no rows or too many, missing or extra columns, a value of
  the wrong type, a number outside the range models compute in (``|x| <= 3.4e38``, float32, which tree
  models convert to), naming the column and the row.

A category the champion never saw is no error: the model encodes it as all zeros, and the answer carries a
``warnings`` entry naming the column and the value (:func:`unseen_categories`).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: Largest magnitude of a number feature: float32's, the precision tree models compute in.
NUMBER_LIMIT = float(np.finfo(np.float32).max)
DEFAULT_MAX_DEPTH = 32
#: At most this many unseen values are named per column in ``warnings``.
MAX_WARNED_VALUES = 20



class InputError(Exception):
    """A request the server refuses; ``status`` is the HTTP status, the message says what is wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in ``body`` (brackets inside strings do not count), without parsing
    it: a deeply nested body is refused before the parser recurses into it. Vectorized: escaped backslashes
    and quotes are dropped, then every byte after an odd number of quotes is inside a string."""
    codes = np.frombuffer(body.replace(b"\\\\", b"").replace(b'\\"', b""), dtype=np.uint8)
    outside = ~np.logical_xor.accumulate(codes == ord('"')) if codes.size else codes.astype(bool)
    opens = ((codes == ord("[")) | (codes == ord("{"))) & outside
    closes = ((codes == ord("]")) | (codes == ord("}"))) & outside
    steps = opens.astype(np.int8)[opens | closes] - closes.astype(np.int8)[opens | closes]
    return int(np.cumsum(steps, dtype=np.int64).max()) if steps.size else 0


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")


def check_content_type(content_type: str | None) -> None:
    """:class:`InputError` 415 unless the body is declared JSON (``application/json`` or ``application/*+json``,
    any parameters) or not declared at all."""
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise InputError(415, f"Content-Type '{content_type}' is not JSON: send the body as application/json "
                              "(curl: --json, or -H 'Content-Type: application/json')")


def parse_body(body: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """The JSON value of a request body; :class:`InputError` 400 when it is empty, not JSON or too deep."""
    if not body.strip():
        raise InputError(400, 'empty body: send JSON records or {"columns": [...], "data": [...]}')
    depth = json_depth(body)
    if depth > max_depth:
        raise InputError(400, f"JSON nested {depth} levels deep; the limit is {max_depth}")
    try:
        return json.loads(body, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(400, f"body is not valid JSON: {exc}") from None


@dataclass
class InputSchema:
    """A champion's input: feature columns in order, their JSON types and the categories it was trained on."""

    features: list[str]
    types: dict[str, str]
    categories: dict[str, frozenset] = field(default_factory=dict)

    @classmethod
    def from_champion(cls, features: list[str], kinds: dict[str, str], reference: pd.DataFrame) -> InputSchema:
        """Types from the manifest's ``feature_kinds`` and the training data's dtypes; categories from the
        training data (none known when the reference is empty)."""
        types, categories = {}, {}
        for column in features:
            known = reference[column] if column in reference.columns and len(reference) else None
            kind = kinds.get(column)
            if kind is None and known is not None:
                kind = "numeric" if pd.api.types.is_numeric_dtype(known) and not pd.api.types.is_bool_dtype(
                    known) else "categorical"
            if kind == "numeric":
                types[column] = "number"
            elif kind == "categorical":
                types[column] = "boolean" if known is not None and pd.api.types.is_bool_dtype(known) else "string"
                if known is not None:
                    categories[column] = frozenset(v for v in known.dropna().unique().tolist())
            else:
                types[column] = "any"
        return cls(list(features), types, categories)

    def value_schema(self, column: str) -> dict:
        kind = self.types[column]
        if kind == "number":
            return {"type": ["number", "null"], "minimum": -NUMBER_LIMIT, "maximum": NUMBER_LIMIT}
        if kind == "any":
            return {"type": ["number", "string", "boolean", "null"], "minimum": -NUMBER_LIMIT,
                    "maximum": NUMBER_LIMIT}
        return {"type": [kind, "null"]}

    def body_schema(self, max_rows: int) -> dict:
        """The JSON schema of a request body: records, or columns and data in the champion's column order."""
        record = {"type": "object", "properties": {c: self.value_schema(c) for c in self.features},
                  "required": list(self.features), "additionalProperties": False}
        row = {"type": "array", "prefixItems": [self.value_schema(c) for c in self.features], "items": False,
               "minItems": len(self.features), "maxItems": len(self.features)}
        return {"oneOf": [
            {"type": "array", "items": record, "minItems": 1, "maxItems": max_rows,
             "title": "records", "description": "one object per row: {column: value}"},
            {"type": "object", "title": "columns and data",
             "properties": {"columns": {"const": list(self.features)},
                            "data": {"type": "array", "items": row, "minItems": 1, "maxItems": max_rows}},
             "required": ["columns", "data"], "additionalProperties": False,
             "description": "the column names once, then one list of values per row (columns in any order "
                            "are accepted too; the schema names the champion's)"},
        ]}


def parse_rows(payload: Any, max_rows: int) -> pd.DataFrame:
    """Records or ``{"columns", "data"}`` into a DataFrame of Python objects; :class:`InputError` says what is
    wrong."""
    if isinstance(payload, dict) and set(payload) == {"columns", "data"}:
        columns, data = payload["columns"], payload["data"]
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise InputError(422, "'columns' must be a list of column names")
        if len(set(columns)) != len(columns):
            raise InputError(422, "'columns' holds a name twice")
        if not isinstance(data, list):
            raise InputError(422, "'data' must be a list of rows (lists of values)")
        _check_row_count(len(data), max_rows)
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(columns):
                raise InputError(422, f"row {i} of 'data' must be a list of {len(columns)} values")
        return pd.DataFrame(data, columns=columns, dtype=object)
    if isinstance(payload, list):
        _check_row_count(len(payload), max_rows)
        first = payload[0]
        if not isinstance(first, dict):
            raise InputError(422, "records must be JSON objects {column: value}")
        keys = first.keys()
        for i, record in enumerate(payload):
            if not isinstance(record, dict):
                raise InputError(422, f"record {i} is not a JSON object")
            if record.keys() != keys:
                missing, extra = sorted(set(keys) - set(record)), sorted(set(record) - set(keys))
                raise InputError(422, f"record {i} has other columns than record 0 "
                                      f"(missing {missing}, extra {extra})")
        columns = list(keys)
        return pd.DataFrame([[record[c] for c in columns] for record in payload], columns=columns, dtype=object)
    raise InputError(422, 'expected a JSON list of records [{"col": value, ...}] or '
                          '{"columns": [...], "data": [[...], ...]}')


def _check_row_count(n: int, max_rows: int) -> None:
    if n == 0:
        raise InputError(422, "no rows to predict")
    if n > max_rows:
        raise InputError(422, f"{n} rows is more than the limit of {max_rows} per request")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_ALLOWED_TYPES = {"number": {int, float, type(None)}, "string": {str, type(None)}, "boolean": {bool, type(None)},
                  "any": {int, float, str, bool, type(None)}}


def _column_problem(column: str, kind: str, values: list) -> str | None:
    """What is wrong with one column's values, or ``None``; the first bad row is named. The common case (every
    value of an allowed type, numbers finite and in range) is decided on whole columns; only a column with a
    problem is walked row by row to name it."""
    if set(map(type, values)) <= _ALLOWED_TYPES[kind]:
        if kind not in ("number", "any"):
            return None
        try:
            numbers = np.array([v for v in values if type(v) in (int, float)], dtype=float)
        except OverflowError:
            numbers = None
        if numbers is not None and np.all(np.abs(numbers) <= NUMBER_LIMIT):
            return None
    for i, value in enumerate(values):
        if value is None:
            continue
        if kind in ("number", "any") and _is_number(value):
            if not (isinstance(value, int) or math.isfinite(value)) or abs(value) > NUMBER_LIMIT:
                return (f"column '{column}' holds a number outside the float range (|x| <= {NUMBER_LIMIT:.4g}); "
                        f"row {i} holds {_short(value)}")
            continue
        if kind == "number":
            return f"column '{column}' expects numbers; row {i} holds {_short(value)}"
        if kind == "string" and not isinstance(value, str):
            return (f"column '{column}' expects a category (text); row {i} holds "
                    f"{type(value).__name__} {_short(value)}")
        if kind == "boolean" and not isinstance(value, bool):
            return f"column '{column}' expects true/false; row {i} holds {type(value).__name__} {_short(value)}"
        if kind == "any" and not isinstance(value, str | bool):
            return f"column '{column}' expects a number, text or true/false; row {i} holds {_short(value)}"
    return None


def check_columns(frame: pd.DataFrame, schema: InputSchema, version: str) -> pd.DataFrame:
    """The feature columns of ``frame`` in the champion's order and with model-ready dtypes, after checking
    names, types and number ranges; :class:`InputError` 422 lists every column that is wrong."""
    missing = [c for c in schema.features if c not in frame.columns]
    extra = [c for c in frame.columns if c not in schema.features]
    if missing or extra:
        parts = ([f"missing column(s) {missing}"] if missing else []) + (
            [f"unexpected column(s) {extra}"] if extra else [])
        raise InputError(422, f"{'; '.join(parts)}; champion {version} expects {schema.features}")
    problems = [p for c in schema.features
                if (p := _column_problem(c, schema.types[c], frame[c].tolist())) is not None]
    if problems:
        raise InputError(422, "; ".join(problems))
    ready = {}
    for column in schema.features:
        if schema.types[column] == "number":
            ready[column] = np.array(frame[column].tolist(), dtype=float)  # null -> NaN
        elif schema.types[column] == "any":
            ready[column] = pd.Series(frame[column].tolist(), index=frame.index)  # pandas infers the dtype
        else:
            ready[column] = frame[column].astype(object)
    return pd.DataFrame(ready, index=frame.index)


def unseen_categories(frame: pd.DataFrame, schema: InputSchema) -> list[dict]:
    """One warning per (column, value) the champion was not trained on, with how many rows hold it."""
    warnings = []
    for column, known in schema.categories.items():
        if not known:
            continue
        unseen = Counter(v for v in frame[column].tolist() if v is not None and v not in known)
        for value, rows in list(unseen.items())[:MAX_WARNED_VALUES]:
            warnings.append({"column": column, "value": value, "rows": rows,
                             "message": f"category {value!r} of column '{column}' was not seen in training; "
                                        "the model encodes it as all zeros"})
    return warnings
