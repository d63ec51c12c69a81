"""A step result that carries rows (:class:`LoadedBlock`, :class:`Predictions`) as one Parquet file: the rows
as the file's table, every other field as JSON in the file's key-value metadata.

So a block's rows and the result Dagster hands the next step are one file (``blocks/<block>.parquet``,
``predictions/<block>.parquet``), which any Parquet reader opens as a plain table, and from which the same
dataclass is rebuilt. A result without rows (a block with no champion to predict with) has no file.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from calmops_dagster.ingest.labels import LabelCount
from calmops_dagster.reports.pipeline_overview import Overview
from calmops_dagster.steps.results import LoadedBlock, Predictions

#: The key of the file's key-value metadata that holds the result's other fields.
METADATA_KEY = b"calmops_dagster.result"
#: The results stored so, by class name, and the field holding each nested dataclass.
RESULT_TYPES = {cls.__name__: cls for cls in (LoadedBlock, Predictions)}
NESTED = {"labels": LabelCount, "overview": Overview}
BUFFER_NAMED = re.compile(r"^Could not open Parquet input source '<Buffer>': ")


class UnreadableResultFile(ValueError):
    """The bytes are not a result file this release can read (not Parquet, cut short, fields mangled)."""


class NotAResultFile(UnreadableResultFile):
    """The Parquet file holds rows but no step result's fields (written by an earlier release)."""


def result_bytes(result: LoadedBlock | Predictions) -> bytes | None:
    """The Parquet file of ``result`` (``None``: it has no rows to store)."""
    if result.frame is None:
        return None
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "frame"}
    fields = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in fields.items()}
    record = json.dumps({"type": type(result).__name__, "fields": fields}, default=plain_scalar)
    table = pa.Table.from_pandas(result.frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: record.encode()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def plain_scalar(value):
    """A NumPy scalar as the Python value JSON takes (any other object: not JSON, a ``TypeError``)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def result_from_bytes(data: bytes) -> LoadedBlock | Predictions:
    """The result :func:`result_bytes` stored. Raises :class:`NotAResultFile` for a Parquet file without the
    result's fields, :class:`UnreadableResultFile` (saying why, in one line) for any other bytes."""
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:  # pyarrow's reason, without the in-memory buffer it names
        reason = BUFFER_NAMED.sub("", " ".join(str(exc).split()))
        raise UnreadableResultFile(f"not a readable Parquet file ({reason})") from None
    record = (table.schema.metadata or {}).get(METADATA_KEY)
    if record is None:
        raise NotAResultFile("no step result in the file's metadata")
    try:
        record = json.loads(record)
        fields = {k: NESTED[k](**v) if k in NESTED and v is not None else v for k, v in record["fields"].items()}
        return RESULT_TYPES[record["type"]](frame=table.to_pandas(), **fields)
    except (ValueError, KeyError, TypeError) as exc:
        raise UnreadableResultFile(f"its step result metadata is damaged ({type(exc).__name__}: {exc})") from None
