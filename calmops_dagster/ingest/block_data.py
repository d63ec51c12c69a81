"""Reading data files and cutting them into blocks.

A data file (CSV or Parquet) in a pipeline's ``data_dir`` holds rows with a ``block_col``; every distinct
block value is one Dagster partition. This module turns files into validated frames and block values into
partition keys. It raises :mod:`calmops_dagster.errors` exceptions that name the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from calmops_dagster.errors import CorruptFileError, EmptyFileError, SchemaError
from calmops_dagster.spec import SUPPORTED_SUFFIXES, PipelineSpec, is_numeric_kind
from calmops_dagster.store.atomic import write_text_atomic

QUARANTINE_DIR = "quarantine"
#: Block keys become partition keys and file names: letters, digits and ``_ . : + -`` only.
SAFE_BLOCK_KEY = re.compile(r"^[A-Za-z0-9_.:+-]{1,100}$")


def candidate_files(spec: PipelineSpec) -> list[Path]:
    """Data files of the pipeline: matching ``file_pattern``, a supported suffix, not hidden or temporary.

    Files in ``data_dir/quarantine/`` are never candidates.
    """
    if not spec.data_dir.is_dir():
        return []
    return sorted(
        path
        for path in spec.data_dir.glob(spec.file_pattern)
        if path.is_file()
        and path.suffix.lower() in SUPPORTED_SUFFIXES
        and not path.name.startswith((".", "~"))
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def frame_sha256(frame: pd.DataFrame) -> str:
    """Content hash of a frame, independent of its file of origin (column order and values)."""
    digest = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def read_data_file(path: Path) -> pd.DataFrame:
    """Parse a CSV or Parquet file; unparseable bytes and empty files raise typed errors."""
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path)
        else:
            frame = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise EmptyFileError(path, "the file is empty") from None
    except Exception as exc:  # noqa: BLE001 -- pandas and pyarrow raise many types for damaged bytes
        raise CorruptFileError(path, f"cannot be parsed as {path.suffix[1:].upper()}: {exc}") from None
    if frame.empty:
        raise EmptyFileError(path, "the file holds no rows")
    return frame


def validate_frame(
    frame: pd.DataFrame,
    spec: PipelineSpec,
    path: Path | str,
    expected_kinds: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Check a parsed file against the spec; return it unchanged or raise :class:`SchemaError`.

    Checks: the block column exists and has no missing values; the target exists (unless prediction-only,
    or with delayed ``labels``, where the id column must exist instead) and has no missing values; the
    spec's features exist; with ``expected_kinds`` (the champion's training schema), numeric features are
    still numeric.
    """
    delayed = spec.labels is not None
    target = None if spec.prediction_only or (delayed and spec.target not in frame.columns) else spec.target
    needed = [c for c in (spec.block_col, target, spec.labels.id_col if delayed else None) if c]
    features = spec.feature_columns(frame.columns)
    missing = [c for c in [*needed, *features] if c not in frame.columns]
    if missing:
        raise SchemaError(path, f"missing column(s) {missing}; found {list(frame.columns)}")
    for column in needed:
        n_missing = int(frame[column].isna().sum())
        if n_missing:
            raise SchemaError(path, f"column '{column}' has {n_missing} missing value(s)")
    if not features:
        raise SchemaError(path, "no feature columns besides the target and the block column")
    for column, kind in (expected_kinds or {}).items():
        if column in frame.columns and kind == "numeric" and not is_numeric_kind(frame[column]):
            bad = frame[column][pd.to_numeric(frame[column], errors="coerce").isna() & frame[column].notna()]
            example = f" e.g. {bad.iloc[0]!r}" if len(bad) else ""
            raise SchemaError(path, f"column '{column}' should be numeric but holds text{example}")
    return frame


def block_keys(values: pd.Series) -> pd.Series:
    """Partition keys of block values: integral numbers without '.0', dates as ISO strings, text stripped."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.strftime("%Y-%m-%dT%H:%M:%S").str.removesuffix("T00:00:00")
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values.dropna(), 1) == 0):
        return values.astype("int64").astype(str)
    return values.astype(str).str.strip()


def sort_block_keys(keys) -> list[str]:
    """Block order: numeric when every key is a number, otherwise lexicographic (ISO dates sort right)."""
    keys = list(dict.fromkeys(keys))
    try:
        return sorted(keys, key=float)
    except ValueError:
        return sorted(keys)


@dataclass(frozen=True)
class FileInspection:
    """What a readable, valid data file holds."""

    path: Path
    sha256: str
    rows: int
    blocks: list[str]


def inspect_file(path: Path, spec: PipelineSpec, expected_kinds: dict[str, str] | None = None) -> FileInspection:
    """Read and validate one file, listing its block keys in block order. Raises a DataFileError."""
    frame = validate_frame(read_data_file(path), spec, path, expected_kinds)
    blocks = sort_block_keys(block_keys(frame[spec.block_col])) if spec.block_col else []
    unsafe = [b for b in blocks if not SAFE_BLOCK_KEY.match(b)]
    if unsafe:
        raise SchemaError(path, f"block value(s) {unsafe[:3]} in '{spec.block_col}' hold characters other "
                          "than letters, digits and _ . : + -")
    return FileInspection(path=path, sha256=file_sha256(path), rows=len(frame), blocks=blocks)


@dataclass
class BlockRows:
    """The rows of one block gathered from every file that holds it."""

    frame: pd.DataFrame
    source_files: list[str]
    skipped: dict[str, str]  # file -> reason, for files that could not be read


def load_block(spec: PipelineSpec, block: str, expected_kinds: dict[str, str] | None = None) -> BlockRows:
    """Collect the rows of ``block`` from the pipeline's data files.

    Unreadable or invalid files are skipped and reported in ``skipped`` (the sensor quarantines them); they
    never stop the other files. Raises :class:`EmptyFileError` when no readable file holds the block.
    """
    parts, sources, skipped = [], [], {}
    for path in candidate_files(spec):
        try:
            frame = validate_frame(read_data_file(path), spec, path, expected_kinds)
        except (CorruptFileError, EmptyFileError, SchemaError) as exc:
            skipped[path.name] = exc.reason
            continue
        rows = frame[block_keys(frame[spec.block_col]) == block]
        if len(rows):
            parts.append(rows)
            sources.append(path.name)
    if not parts:
        raise EmptyFileError(spec.data_dir, f"no readable file holds rows of block '{block}'")
    frame = pd.concat(parts, ignore_index=True)
    return BlockRows(frame=frame, source_files=sources, skipped=skipped)


# --- Stream pipelines: one partition per accepted file version ------------------------------------------------
#
# A stream file is copied, on acceptance, into the pipeline's immutable store
# ``CALMOPS_HOME/pipelines/<name>/incoming/<key><suffix>`` with a record ``<key>.json`` (source file, sha256,
# size, accepted_at). The key is ``<file stem, sanitized>-<first 12 hex of the content sha256>``, so it names
# the file and its version: a later change of the file is a new key, and the old key still reads the old
# bytes. ``data_block`` reads the stored copy and refuses it when its hash no longer matches the record.

INCOMING_DIR = "incoming"
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.+-]+")


def stream_key(file_name: str, sha256: str) -> str:
    """Partition key of a stream file version.

    >>> stream_key("sales 2024-01-05.csv", "ab12" * 16)
    'sales_2024-01-05-ab12ab12ab12'
    """
    stem = _UNSAFE_KEY_CHARS.sub("_", Path(file_name).stem).strip("_.") or "file"
    key = f"{stem[:80]}-{sha256[:12]}"
    assert SAFE_BLOCK_KEY.match(key), key
    return key


def incoming_dir(pipeline_dir: Path) -> Path:
    """The immutable store of a stream pipeline's accepted files (``pipelines/<name>/incoming``)."""
    return Path(pipeline_dir) / INCOMING_DIR


def _record_of(store: Path, key: str) -> dict | None:
    path = store / f"{key}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def accept_stream_file(path: Path, spec: PipelineSpec, store: Path,
                       expected_kinds: dict[str, str] | None = None) -> tuple[FileInspection, bool]:
    """Copy ``path`` into ``store``, hash and validate *the copy*, and file it under its stream key.

    Returns ``(inspection, is_new)``; ``inspection.blocks`` is ``[key]`` and ``inspection.path`` the stored
    copy. ``is_new`` is False when the same content was accepted before (under this key: the same version
    seen again; under another key: a duplicate by content, for the caller to ignore). Hashing the copy, not
    the source, means the key always describes the bytes that will be processed, even if the source changes
    while it is copied. Raises a :class:`DataFileError` (the copy is removed) when the file is unusable.
    """
    store.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=store, prefix=".accepting.", suffix=path.suffix.lower())
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        shutil.copyfile(path, tmp)
        sha = file_sha256(tmp)
        key = stream_key(path.name, sha)
        known = [p for p in store.glob(f"*-{sha[:12]}.json") if (_record_of(store, p.stem) or {}).get("sha256") == sha]
        if known:
            record = _record_of(store, known[0].stem)
            stored = store / f"{known[0].stem}{Path(record['stored_file']).suffix}"
            return FileInspection(path=stored, sha256=sha, rows=record["rows"], blocks=[known[0].stem]), False
        frame = validate_frame(read_data_file(tmp), spec, path, expected_kinds)
        target = store / f"{key}{path.suffix.lower()}"
        os.replace(tmp, target)
        record = {"key": key, "source_file": str(path), "stored_file": target.name, "sha256": sha,
                  "size": target.stat().st_size, "rows": len(frame),
                  "accepted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_text_atomic(store / f"{key}.json", json.dumps(record, indent=1))
        return FileInspection(path=target, sha256=sha, rows=len(frame), blocks=[key]), True
    finally:
        tmp.unlink(missing_ok=True)


def load_stream_block(spec: PipelineSpec, key: str, store: Path,
                      expected_kinds: dict[str, str] | None = None) -> BlockRows:
    """The rows of one stream partition: exactly the file version stored under ``key``."""
    if not SAFE_BLOCK_KEY.match(key):
        raise SchemaError(store, f"'{key}' is not a stream partition key")
    record = _record_of(store, key)
    if record is None:
        raise EmptyFileError(store / f"{key}.json", f"no accepted stream file is recorded under key '{key}'")
    stored = store / record["stored_file"]
    if not stored.is_file() or file_sha256(stored) != record["sha256"]:
        raise CorruptFileError(stored, f"the stored copy of '{key}' is missing or no longer matches its sha256")
    frame = validate_frame(read_data_file(stored), spec, record["source_file"], expected_kinds)
    return BlockRows(frame=frame, source_files=[Path(record["source_file"]).name], skipped={})
