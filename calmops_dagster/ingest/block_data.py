"""Reading data files and cutting them into blocks.

A data file (CSV or Parquet) in a pipeline's ``data_dir`` holds rows with a ``block_col``; every distinct
block value is one Dagster partition. This module turns files into validated frames and block values into
partition keys, tells a half-written file from a bad one, and keeps each accepted file version's rows per
block as immutable pieces (what ``data_block`` loads). It raises :mod:`calmops_dagster.errors` exceptions
that name the file and what is wrong.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from calmops_dagster.errors import CorruptFileError, EmptyFileError, IncompleteFileError, SchemaError
from calmops_dagster.spec import SUPPORTED_SUFFIXES, PipelineSpec, column_kinds, is_numeric_kind
from calmops_dagster.store.atomic import write_bytes_atomic, write_text_atomic
from calmops_dagster.store.storage import Location, as_location

QUARANTINE_DIR = "quarantine"
#: Block keys (the values of ``block_col``) become partition keys, folder and file names: 1 to 100 letters,
#: digits, ``-``, ``_`` and ``.``, not starting with ``.`` (so never ``.``, ``..`` or a hidden name).
SAFE_BLOCK_KEY = re.compile(r"^(?!\.)[A-Za-z0-9_.-]{1,100}\Z")


def candidate_files(spec: PipelineSpec) -> list[Path]:
    """Data files of the pipeline: matching ``file_pattern``, a supported suffix, not hidden or temporary.

    Files in ``data_dir/quarantine/`` are never candidates.
    """
    return [spec.data_dir / name for name, _ in candidate_stats(spec)]


def candidate_stats(spec: PipelineSpec) -> list[tuple[str, os.stat_result]]:
    """The :func:`candidate_files` as ``(name in data_dir, stat)``, by name: one read of ``data_dir`` and one
    ``stat`` per file, no ``Path`` built (what a sensor tick pays per file). A ``file_pattern`` naming
    subfolders (``/``, ``**``) is globbed instead."""
    found = []
    if "/" in spec.file_pattern or "**" in spec.file_pattern:
        for path in spec.data_dir.glob(spec.file_pattern):
            try:
                info = path.stat()
            except FileNotFoundError:  # removed since it was listed
                continue
            if stat.S_ISREG(info.st_mode) and _is_candidate(path.name):
                found.append((str(path.relative_to(spec.data_dir)), info))
        return sorted(found, key=lambda item: item[0])
    return folder_stats(spec.data_dir,
                        lambda name: _is_candidate(name) and fnmatch.fnmatchcase(name, spec.file_pattern))


def folder_stats(folder: Path, accept: Callable[[str], bool]) -> list[tuple[str, os.stat_result]]:
    """``(name, stat)`` of the regular files directly in ``folder`` whose name ``accept`` takes, by name: one
    ``scandir`` and one ``stat`` per file (none for a name refused). A missing folder lists nothing."""
    found = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not (accept(entry.name) and entry.is_file()):
                    continue
                try:
                    found.append((entry.name, entry.stat()))
                except FileNotFoundError:  # removed since it was listed
                    continue
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(found, key=lambda item: item[0])


def _is_candidate(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in SUPPORTED_SUFFIXES and not name.startswith((".", "~"))


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


PARQUET_MAGIC = b"PAR1"


def not_a_table_reason(data: bytes, suffix: str) -> str | None:
    """Why ``data`` cannot be a data file of this ``suffix`` at all, or ``None``: CSV bytes that are not UTF-8
    text (or hold a NUL byte: binary data), a Parquet file that does not start with ``PAR1``. Bytes cut short
    in the middle of a UTF-8 character, or in the middle of the magic, are not called wrong here: they may be
    a file still being written (:func:`incomplete_reason`).

    >>> not_a_table_reason(b"x,y\\n1,\\xe9\\n", ".csv")
    'not CSV text: byte 0xe9 at offset 6 is not UTF-8'
    >>> not_a_table_reason(b"PARX...", ".parquet")
    "not a Parquet file: it starts with b'PARX', not b'PAR1'"
    """
    if suffix.lower() != ".csv":
        head = data[: len(PARQUET_MAGIC)]
        return None if PARQUET_MAGIC.startswith(head) else (
            f"not a Parquet file: it starts with {head!r}, not {PARQUET_MAGIC!r}")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.end < len(data) or exc.reason != "unexpected end of data":  # not merely a character cut short
            return f"not CSV text: byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8"
    nul = data.find(b"\x00")
    return None if nul < 0 else f"not CSV text: a NUL byte at offset {nul} (binary data)"


def incomplete_reason(data: bytes, suffix: str) -> str | None:
    """Why a file's bytes look half-written, or ``None``: a CSV (UTF-8 text up to its end) whose last line has
    no newline or fewer fields than its header, a Parquet file with its ``PAR1`` header (or the start of it)
    but not yet its footer. Bytes that are no table at all (:func:`not_a_table_reason`) are not waited for:
    they fail to parse and are quarantined at once."""
    if not data or not_a_table_reason(data, suffix) is not None:
        return None  # empty: the empty-file check decides once it is settled; not a table: nothing to wait for
    if suffix.lower() != ".csv":  # Parquet starts and ends with PAR1; without the end it is still being written
        return None if len(data) > len(PARQUET_MAGIC) and data.endswith(PARQUET_MAGIC) else (
            "the Parquet footer is missing")
    if not data.endswith(b"\n"):
        return "its last line has no newline"
    head, _, _ = data.partition(b"\n")
    last = data.rstrip(b"\r\n").rpartition(b"\n")[2]
    if last == head.rstrip(b"\r"):
        return None  # a header only: the empty-file check decides
    try:
        header, row = (next(csv.reader([line.decode("utf-8", "replace")])) for line in (head, last))
    except (csv.Error, StopIteration):
        return None
    if len(row) < len(header):
        return f"its last line has {len(row)} of {len(header)} fields"
    return None


def read_data_file(path: Path, data: bytes | None = None) -> pd.DataFrame:
    """Parse a CSV or Parquet file (or ``data``, its bytes already read); bytes that are no table
    (:func:`not_a_table_reason`), unparseable bytes and empty files raise typed errors."""
    data = path.read_bytes() if data is None else data
    wrong = not_a_table_reason(data, path.suffix) if data else None
    if wrong is not None:
        raise CorruptFileError(path, wrong)
    source = io.BytesIO(data)
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(source)
        else:
            frame = pd.read_parquet(source)
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
    spec's features exist; with ``expected_kinds`` (the champion's training schema, or the first accepted
    file's), every expected feature exists and numeric features are still numeric. A CSV whose only missing
    block or target value is on its last row was cut short while being written: :class:`IncompleteFileError`.
    """
    delayed = spec.labels is not None
    target = None if spec.prediction_only or (delayed and spec.target not in frame.columns) else spec.target
    needed = [c for c in (spec.block_col, target, spec.labels.id_col if delayed else None) if c]
    features = spec.feature_columns(frame.columns)
    expected = [c for c in (expected_kinds or {}) if c not in features and c not in needed]
    missing = [c for c in [*needed, *features, *expected] if c not in frame.columns]
    if missing:
        raise SchemaError(path, f"missing column(s) {missing}; found {list(frame.columns)}")
    for column in needed:
        n_missing = int(frame[column].isna().sum())
        if n_missing == 1 and frame[column].iloc[-1:].isna().all() and str(path).lower().endswith(".csv"):
            raise IncompleteFileError(path, f"column '{column}' is missing on the last row only (cut short)")
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
    """Partition keys of block values: integral numbers without '.0', dates as ISO strings (a time of day as
    ``THH-MM-SS``: ``:`` is no key character), text stripped."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.strftime("%Y-%m-%dT%H-%M-%S").str.removesuffix("T00-00-00")
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values.dropna(), 1) == 0):
        return values.astype("int64").astype(str)
    return values.astype(str).str.strip()


_NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\Z")
_DIGITS = re.compile(r"(\d+)")


def _natural(key: str) -> tuple:
    """A key's text and digit runs, the runs compared as numbers (``b9`` before ``b10``)."""
    parts = (part for part in _DIGITS.split(key) if part)
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in parts), key


def sort_block_keys(keys) -> list[str]:
    """Block order: by value when every key is a number (``-1``, ``2.5``, ``10``), otherwise natural order:
    runs of digits compare as numbers, so ``9`` comes before ``10`` and ``b9`` before ``b10`` whatever else
    the keys hold (ISO dates sort right either way).

    >>> sort_block_keys(["10", "9", "2.5"])
    ['2.5', '9', '10']
    >>> sort_block_keys(["10", "a", "9", "b10", "b9"])
    ['9', '10', 'a', 'b9', 'b10']
    """
    keys = [str(key) for key in dict.fromkeys(keys)]
    if all(_NUMBER.match(key) for key in keys):
        return sorted(keys, key=lambda key: (float(key), key))
    return sorted(keys, key=_natural)


@dataclass(frozen=True)
class FileInspection:
    """What a readable, valid data file holds: its block keys in block order and the rows of each."""

    path: Path
    sha256: str
    rows: int
    blocks: list[str]
    block_rows: dict[str, int] = field(default_factory=dict)
    schema: dict[str, str] = field(default_factory=dict)  # feature -> numeric/categorical


def inspect_frame(path: Path, spec: PipelineSpec, expected_kinds: dict[str, str] | None = None,
                  data: bytes | None = None) -> tuple[pd.DataFrame, pd.Series | None]:
    """Read (or parse ``data``, the file's bytes) and validate one file; return the frame and its rows' block
    keys. Raises a DataFileError (unsafe block values are a :class:`SchemaError`)."""
    frame = validate_frame(read_data_file(path, data), spec, path, expected_kinds)
    if not spec.block_col:
        return frame, None
    keys = block_keys(frame[spec.block_col])
    unsafe = [b for b in sort_block_keys(keys) if not SAFE_BLOCK_KEY.match(b)]
    if unsafe:
        raise SchemaError(path, f"block value(s) {unsafe[:3]} in '{spec.block_col}' are not block keys: 1 to 100 "
                          "letters, digits, '-', '_' and '.', not starting with '.'")
    return frame, keys


@dataclass
class BlockRows:
    """The rows of one block gathered from the file versions recorded for it."""

    frame: pd.DataFrame
    source_files: list[str]


def keep_block_pieces(frame: pd.DataFrame, keys: pd.Series, sha256: str, root: Location, data: bytes,
                      suffix: str) -> dict[str, int]:
    """Keep the rows of each block of an accepted file version as an immutable piece under
    ``root/<block>/<sha256>.*`` (written atomically, never rewritten); return the rows per block.

    A file holding one block is kept as its very bytes (``data``, no re-encoding); a file holding several
    is cut into one Parquet piece per block. The pieces are what ``data_block`` loads: exactly the accepted
    version, whatever happens to the file in ``data_dir`` afterwards (changed, deleted), and only the rows of
    the block asked for.
    """
    counts, root = {}, as_location(root)
    for block, rows in frame.groupby(keys.to_numpy(), sort=False):
        counts[str(block)] = len(rows)
        if _piece_path(root, str(block), sha256) is not None:
            continue
        if len(rows) == len(frame):
            write_bytes_atomic(root / str(block) / f"{sha256}{suffix.lower()}", data)
        else:
            buffer = io.BytesIO()
            rows.to_parquet(buffer, index=False)
            write_bytes_atomic(root / str(block) / f"{sha256}.parquet", buffer.getvalue())
    return counts


def _piece_path(root: Location, block: str, sha256: str) -> Location | None:
    return next((path for suffix in SUPPORTED_SUFFIXES
                 if (path := as_location(root) / block / f"{sha256}{suffix}").is_file()), None)


def load_pieces(root: Location, block: str, versions: list[tuple[str, str, int]]) -> BlockRows:
    """The rows of ``block`` from its recorded file versions ``[(file, sha256, rows), ...]``, in that order.

    Raises :class:`CorruptFileError` naming the piece when one is missing or holds another number of rows
    than recorded, and :class:`EmptyFileError` when no version is recorded for the block.
    """
    root = as_location(root)
    if not versions:
        raise EmptyFileError(root / block, f"no accepted file version holds rows of block '{block}'")
    parts = []
    for file, sha, rows in versions:
        path = _piece_path(root, block, sha)
        if path is None:
            raise CorruptFileError(root / block / sha, f"the kept rows of {file} (block '{block}') are gone")
        part = read_data_file(path, path.read_bytes())
        if len(part) != rows:
            raise CorruptFileError(path, f"holds {len(part)} rows of {file}, {rows} were recorded")
        parts.append(part)
    return BlockRows(frame=pd.concat(parts, ignore_index=True), source_files=[v[0] for v in versions])


# --- Stream pipelines: one partition per accepted file version ------------------------------------------------
#
# A stream file is copied, on acceptance, into the pipeline's immutable store
# ``CALMOPS_HOME/pipelines/<name>/incoming/<key><suffix>`` with a record ``<key>.json`` (source file, sha256,
# size, accepted_at). The key is ``<file stem, sanitized>-<first 12 hex of the content sha256>``, so it names
# the file and its version: a later change of the file is a new key, and the old key still reads the old
# bytes. ``data_block`` reads the stored copy and refuses it when its hash no longer matches the record.

INCOMING_DIR = "incoming"
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.+-]+")
#: A stream partition key: ``<file stem, sanitized>-<first 12 hex of the sha256>`` (:func:`stream_key`).
STREAM_KEY = re.compile(r"^(?!\.)[A-Za-z0-9_.+-]{1,80}-[0-9a-f]{12}\Z")


def stream_key(file_name: str, sha256: str) -> str:
    """Partition key of a stream file version.

    >>> stream_key("sales 2024-01-05.csv", "ab12" * 16)
    'sales_2024-01-05-ab12ab12ab12'
    """
    stem = _UNSAFE_KEY_CHARS.sub("_", Path(file_name).stem).strip("_.") or "file"
    key = f"{stem[:80]}-{sha256[:12]}"
    assert STREAM_KEY.match(key), key
    return key


def incoming_dir(pipeline_dir: Location) -> Location:
    """The immutable store of a stream pipeline's accepted files (``pipelines/<name>/incoming``)."""
    return as_location(pipeline_dir) / INCOMING_DIR


def _record_of(store: Location, key: str) -> dict | None:
    try:
        return json.loads((store / f"{key}.json").read_text())
    except (FileNotFoundError, IsADirectoryError):
        return None


def accept_stream_file(path: Path, spec: PipelineSpec, store: Location,
                       expected_kinds: dict[str, str] | None = None) -> tuple[FileInspection, bool]:
    """Read ``path`` once; hash, validate and keep *those bytes* in ``store`` under their stream key.

    Returns ``(inspection, is_new)``; ``inspection.blocks`` is ``[key]`` and ``inspection.path`` the stored
    copy. ``is_new`` is False when the same content was accepted before (under this key: the same version
    seen again; under another key: a duplicate by content, for the caller to ignore). The file is read once;
    those very bytes are hashed, checked and stored, so the key always describes the bytes that will be
    processed, even if the source changes meanwhile. Raises a :class:`DataFileError` (nothing is stored)
    when the file is unusable.
    """
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    key = stream_key(path.name, sha)
    known = [p for p in store.glob(f"*-{sha[:12]}.json") if (_record_of(store, p.stem) or {}).get("sha256") == sha]
    if known:
        record = _record_of(store, known[0].stem)
        stored = store / f"{known[0].stem}{Path(record['stored_file']).suffix}"
        return FileInspection(path=stored, sha256=sha, rows=record["rows"], blocks=[known[0].stem],
                              block_rows={known[0].stem: record["rows"]}), False
    frame = validate_frame(read_data_file(path, data), spec, path, expected_kinds)
    target = store / f"{key}{path.suffix.lower()}"
    write_bytes_atomic(target, data)
    record = {"key": key, "source_file": str(path), "stored_file": target.name, "sha256": sha,
              "size": len(data), "rows": len(frame), "accepted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_text_atomic(store / f"{key}.json", json.dumps(record, indent=1))
    return FileInspection(path=target, sha256=sha, rows=len(frame), blocks=[key], block_rows={key: len(frame)},
                          schema=column_kinds(frame, spec.feature_columns(frame.columns))), True


def load_stream_block(spec: PipelineSpec, key: str, store: Location,
                      expected_kinds: dict[str, str] | None = None) -> BlockRows:
    """The rows of one stream partition: exactly the file version stored under ``key``."""
    if not STREAM_KEY.match(key):
        raise SchemaError(store, f"'{key}' is not a stream partition key")
    record = _record_of(store, key)
    if record is None:
        raise EmptyFileError(store / f"{key}.json", f"no accepted stream file is recorded under key '{key}'")
    stored = store / record["stored_file"]
    try:
        data = stored.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        data = None
    if data is None or hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise CorruptFileError(stored, f"the stored copy of '{key}' is missing or no longer matches its sha256")
    frame = validate_frame(read_data_file(stored, data), spec, record["source_file"], expected_kinds)
    return BlockRows(frame=frame, source_files=[Path(record["source_file"]).name])
