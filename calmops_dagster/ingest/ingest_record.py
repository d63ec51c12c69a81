"""The ingest record: which file versions make up which block, decided once by the scan, read by everyone.

The sensor, the schedule, ``calmops run`` and ``calmops relaunch`` all go through :func:`ingest_data_dir`,
and the ``data_block`` asset loads exactly the versions recorded here, never "every file in the folder". Two
DuckDB tables (in the metrics database, so a scan in the sensor and one in ``calmops run`` see the same
record):

- ``data_files`` (pipeline, file, size, mtime_ns, content_hash, status, note, schema, seen_at): the index, one
  row per file name looked at, with the size and mtime it had when read, so the next scan does not open it
  again. ``status``: ``accepted``, ``duplicate`` (the same bytes were accepted under another name: ignored;
  ``note`` says which) or ``quarantined``. ``schema`` is the accepted file's features and their kinds.
- ``block_files`` (pipeline, block, file, content_hash, rows, status, seq, recorded_at): one row per block
  and accepted file version, ``current`` or ``replaced`` (the file changed since: its new version's rows
  count instead). ``seq`` numbers the scans that changed the record, so the sensor's cursor is one number.

A block's *version* is the hash of the content hashes of its current file versions
(:func:`block_version`). A block is processed at a version when a successful run of its partition loaded that
version (``data_block`` tags its run with it); a file that changes makes a new version of every block it
held, which every entry point then finds pending, and the block's rows are reloaded from its current
versions (the old version's rows are replaced, never added).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from calmops_dagster.ingest.block_data import BlockRows, incoming_dir, load_pieces
from calmops_dagster.ingest.file_scan import ScanResult, empty_cursor, scan_data_dir
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import now_utc

PIECES_DIR = "pieces"


def pieces_dir(pipeline_dir: Path) -> Path:
    """Where a block pipeline's accepted file versions are kept per block (``incoming/pieces/<block>/``)."""
    return incoming_dir(pipeline_dir) / PIECES_DIR


def block_version(content_hashes) -> str:
    """The version of a block made of these file versions (16 hex digits; order does not matter).

    >>> block_version(["b" * 64, "a" * 64]) == block_version(["a" * 64, "b" * 64])
    True
    """
    return hashlib.sha256("+".join(sorted(content_hashes)).encode()).hexdigest()[:16]


def load_index(metrics: MetricsStore, pipeline: str) -> tuple[dict[str, dict], dict[str, str], dict | None]:
    """The scan's inputs from the record: the index of known files, the owner (file name) of every content
    hash accepted so far, and the schema of the first accepted file (``None`` before the first)."""
    try:
        with metrics.reading() as con:
            files = con.execute("SELECT file, size, mtime_ns, content_hash, status, schema FROM data_files "
                                "WHERE pipeline = ? ORDER BY seen_at", [pipeline]).df()
            versions = con.execute("SELECT content_hash, any_value(file) AS file FROM block_files "
                                   "WHERE pipeline = ? GROUP BY content_hash", [pipeline]).df()
    except duckdb.CatalogException:  # a database from before the ingest record: nothing known yet
        return {}, {}, None
    index = {row.file: {"size": int(row.size), "mtime_ns": int(row.mtime_ns), "sha256": row.content_hash,
                        "status": row.status, "schema": row.schema} for row in files.itertuples()}
    owners = dict(zip(versions["content_hash"], versions["file"], strict=True))
    accepted = files[(files["status"] == "accepted") & files["schema"].notna()]
    schema = json.loads(accepted["schema"].iloc[0]) if len(accepted) else None
    return index, owners, schema


def record_scan(con, spec: PipelineSpec, scan: ScanResult) -> None:
    """Write what ``scan`` found, on ``con`` (a transaction), under a new ``seq``.

    Each ready file version becomes ``current`` rows of its blocks; of a block pipeline's file, the rows of
    its earlier versions become ``replaced`` (stream partitions are immutable: a new version is a new key).
    """
    stamp = now_utc()
    versions = pd.DataFrame([
        {"block": block, "file": inspection.path.name if spec.type != "stream" else _source_name(scan, inspection),
         "content_hash": inspection.sha256, "rows": rows}
        for inspection in scan.ready for block, rows in inspection.block_rows.items()
    ], columns=["block", "file", "content_hash", "rows"])
    index = pd.DataFrame(scan.index, columns=["file", "size", "mtime_ns", "content_hash", "status", "note",
                                               "schema"]).drop_duplicates("file", keep="last")
    if len(versions):
        seq = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM block_files WHERE pipeline = ?",
                          [spec.name]).fetchall()[0][0]
        con.register("new_versions", versions)
        if spec.type != "stream":
            con.execute("UPDATE block_files SET status = 'replaced', seq = ? WHERE pipeline = ? AND "
                        "status = 'current' AND file IN (SELECT file FROM new_versions) AND NOT EXISTS ("
                        "SELECT 1 FROM new_versions n WHERE n.file = block_files.file AND "
                        "n.content_hash = block_files.content_hash)", [seq, spec.name])
        con.execute("DELETE FROM block_files WHERE pipeline = ? AND EXISTS (SELECT 1 FROM new_versions n "
                    "WHERE n.file = block_files.file AND n.content_hash = block_files.content_hash)",
                    [spec.name])
        con.execute("INSERT INTO block_files BY NAME SELECT ? AS pipeline, block, file, content_hash, rows, "
                    "'current' AS status, ? AS seq, ? AS recorded_at FROM new_versions",
                    [spec.name, seq, stamp])
    if len(index):
        con.register("new_index", index)
        con.execute("DELETE FROM data_files WHERE pipeline = ? AND file IN (SELECT file FROM new_index)",
                    [spec.name])
        con.execute("INSERT INTO data_files BY NAME SELECT ? AS pipeline, *, ? AS seen_at FROM new_index",
                    [spec.name, stamp])


def _source_name(scan: ScanResult, inspection) -> str:
    """The data_dir file a stream version came from (its inspection names the stored copy)."""
    return next((row["file"] for row in scan.index if row["content_hash"] == inspection.sha256),
                inspection.path.name)


@dataclass
class Ingest:
    """What one ingest pass did and what the record holds after it: the scan (ready, bad, waiting,
    duplicates), the blocks whose file versions changed after the cursor's ``seq`` (in the order they were
    recorded), the newest ``seq``, and every block's current version."""

    scan: ScanResult
    changed: list[str]
    seq: int
    versions: dict[str, str]


def ingest_data_dir(spec: PipelineSpec, metrics: MetricsStore, pipeline_dir: Path, cursor: dict | None = None,
                    expected_kinds: dict[str, str] | None = None, now: float | None = None) -> Ingest:
    """Scan ``data_dir`` against the record and record what is new (the one entry of every entry point).

    ``expected_kinds`` is the champion's training schema; without one, the first accepted file's schema is
    what every later file must have. ``cursor`` carries the files not yet stable between sensor ticks and
    the ``seq`` the caller has acted on. One read connection before the scan, one write transaction after
    it (none when nothing is new): the database is never held while files are read.
    """
    cursor = cursor or empty_cursor()
    index, owners, first_schema = load_index(metrics, spec.name)
    scan = scan_data_dir(spec, cursor, now=now, expected_kinds=expected_kinds or first_schema,
                         incoming=incoming_dir(pipeline_dir), index=index, owners=owners,
                         pieces=pieces_dir(pipeline_dir))
    if scan.index or scan.ready:
        with metrics.transaction() as con:
            record_scan(con, spec, scan)
            changed, seq, versions = _record_state(con, spec.name, cursor.get("seq", 0))
    else:
        with metrics.reading() as con:
            changed, seq, versions = _record_state(con, spec.name, cursor.get("seq", 0))
    return Ingest(scan=scan, changed=changed, seq=seq, versions=versions)


def _record_state(con, pipeline: str, after_seq: int) -> tuple[list[str], int, dict[str, str]]:
    changed = con.execute("SELECT block, max(seq) AS seq FROM block_files WHERE pipeline = ? AND seq > ? "
                          "GROUP BY block ORDER BY min(seq), min(rowid)", [pipeline, after_seq]).df()
    current = con.execute("SELECT block, list(content_hash) AS hashes FROM block_files "
                          "WHERE pipeline = ? AND status = 'current' GROUP BY block", [pipeline]).df()
    seq = max([after_seq, *[int(s) for s in changed["seq"]]])
    return list(changed["block"]), seq, {row.block: block_version(row.hashes) for row in current.itertuples()}


def current_versions(metrics: MetricsStore, pipeline: str) -> dict[str, str]:
    """Every block with a current file version, and its version (:func:`block_version`)."""
    rows = metrics.query("SELECT block, list(content_hash) AS hashes FROM block_files "
                         "WHERE pipeline = ? AND status = 'current' GROUP BY block", [pipeline])
    return {row.block: block_version(row.hashes) for row in rows.itertuples()}


def block_records(metrics: MetricsStore, pipeline: str, block: str) -> list[tuple[str, str, int]]:
    """The current file versions of ``block``: ``[(file, content_hash, rows), ...]`` by file name."""
    rows = metrics.query("SELECT file, content_hash, rows FROM block_files WHERE pipeline = ? AND block = ? "
                         "AND status = 'current' ORDER BY file, content_hash", [pipeline, block])
    return [(row.file, row.content_hash, int(row.rows)) for row in rows.itertuples()]


def load_recorded_block(spec: PipelineSpec, metrics: MetricsStore, pipeline_dir: Path,
                        block: str) -> tuple[BlockRows, str]:
    """The rows of ``block`` from exactly its current recorded file versions, and the block's version."""
    records = block_records(metrics, spec.name, block)
    return load_pieces(pieces_dir(pipeline_dir), block, records), block_version([r[1] for r in records])
