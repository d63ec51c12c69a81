"""The ingest record: which file versions make up which block, decided once by the scan, read by everyone.

The sensor, the schedule, ``calmops run`` and ``calmops relaunch`` all go through :func:`ingest_data_dir`;
``data_block`` loads exactly the versions recorded here (metric tables ``data_files``, the index, and
``block_files``, which versions hold which block), never "every file in the folder". A block's *version*
(:func:`block_version`) hashes its current file versions, so a changed file makes its blocks pending again.
The contract: docs/ingest.md; the tables' columns: docs/metric-tables.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

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
    """The scan's inputs from the record: the index of known files (each file's newest row), the owner
    (file name) of every content hash accepted so far, and the schema of the first accepted file (``None``
    before the first)."""
    files = metrics.query("SELECT file, size, mtime_ns, content_hash, status, schema, seen_at FROM data_files "
                          "WHERE pipeline = ? QUALIFY row_number() OVER (PARTITION BY file ORDER BY seen_at DESC) "
                          "= 1 ORDER BY seen_at", [pipeline], pipeline=pipeline)
    versions = metrics.query("SELECT content_hash, any_value(file) AS file FROM block_files WHERE pipeline = ? "
                             "GROUP BY content_hash", [pipeline], pipeline=pipeline)
    index = {row.file: {"size": int(row.size), "mtime_ns": int(row.mtime_ns), "sha256": row.content_hash,
                        "status": row.status, "schema": row.schema} for row in files.itertuples()}
    owners = dict(zip(versions["content_hash"], versions["file"], strict=True))
    accepted = files[(files["status"] == "accepted") & files["schema"].notna()]
    schema = json.loads(accepted["schema"].iloc[0]) if len(accepted) else None
    return index, owners, schema


def newest_seq(metrics: MetricsStore, pipeline: str) -> int:
    """The ``seq`` of the pipeline's last recorded scan that found something (0 before the first)."""
    return int(metrics.query("SELECT coalesce(max(seq), 0) AS seq FROM block_files WHERE pipeline = ?",
                             [pipeline], pipeline=pipeline)["seq"].iloc[0])


def record_scan(metrics: MetricsStore, spec: PipelineSpec, scan: ScanResult, seq: int) -> None:
    """Append what ``scan`` found to the record under ``seq``: one ``block_files`` row per block of each ready
    file version, one ``data_files`` row per file read. (A file's newest version is its current one: the
    rows of its earlier versions count as replaced, see :func:`current_rows`.)"""
    stamp = now_utc()
    versions = [
        {"pipeline": spec.name, "block": block,
         "file": inspection.path.name if spec.type != "stream" else _source_name(scan, inspection),
         "content_hash": inspection.sha256, "rows": rows, "status": "current", "seq": seq, "recorded_at": stamp}
        for inspection in scan.ready for block, rows in inspection.block_rows.items()
    ]
    index = pd.DataFrame(scan.index, columns=["file", "size", "mtime_ns", "content_hash", "status", "note",
                                               "schema"]).drop_duplicates("file", keep="last")
    metrics.append_rows("block_files", versions)
    metrics.append_rows("data_files", index.assign(pipeline=spec.name, seen_at=stamp))


def current_rows(metrics: MetricsStore, spec: PipelineSpec, block: str | None = None) -> pd.DataFrame:
    """The current file versions (block, file, content_hash, rows): of a block pipeline's file only its newest
    version counts (the rows of the earlier ones are replaced); stream partitions are immutable, all count."""
    where, params = ("AND block = ?", [block]) if block is not None else ("", [])
    if spec.type == "stream":
        return metrics.query("SELECT DISTINCT block, file, content_hash, rows FROM block_files "
                             f"WHERE pipeline = ? {where} ORDER BY block, file", [spec.name, *params],
                             pipeline=spec.name)
    return metrics.query(
        "WITH rec AS (SELECT * FROM block_files WHERE pipeline = ?), "
        "latest AS (SELECT file, arg_max(content_hash, seq) AS sha FROM rec GROUP BY file) "
        "SELECT DISTINCT r.block, r.file, r.content_hash, r.rows FROM rec r JOIN latest l "
        f"ON r.file = l.file AND r.content_hash = l.sha WHERE true {where.replace('block', 'r.block')} "
        "ORDER BY r.block, r.file, r.content_hash", [spec.name, *params], pipeline=spec.name)


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
    the ``seq`` the caller has acted on.
    """
    cursor = cursor or empty_cursor()
    index, owners, first_schema = load_index(metrics, spec.name)
    scan = scan_data_dir(spec, cursor, now=now, expected_kinds=expected_kinds or first_schema,
                         incoming=incoming_dir(pipeline_dir), index=index, owners=owners,
                         pieces=pieces_dir(pipeline_dir))
    if scan.index or scan.ready:
        record_scan(metrics, spec, scan, newest_seq(metrics, spec.name) + 1)
    after = int(cursor.get("seq", 0))
    touched = metrics.query(  # blocks with a new version, and (block pipelines) those of replaced versions
        "SELECT block, max(seq) AS seq FROM block_files WHERE pipeline = ? AND "
        + ("seq > ?" if spec.type == "stream" else
           "file IN (SELECT file FROM block_files WHERE pipeline = ? AND seq > ?)")
        + " GROUP BY block", [spec.name, after] if spec.type == "stream" else [spec.name, spec.name, after],
        pipeline=spec.name)
    newest = newest_seq(metrics, spec.name)
    arrived = list(scan.blocks())
    changed = [b for b in arrived if b in set(touched["block"])] + sorted(set(touched["block"]) - set(arrived))
    return Ingest(scan=scan, changed=changed, seq=max(after, int(newest)), versions=current_versions(metrics, spec))


def current_versions(metrics: MetricsStore, spec: PipelineSpec) -> dict[str, str]:
    """Every block with a current file version, and its version (:func:`block_version`)."""
    rows = current_rows(metrics, spec)
    return {block: block_version(group["content_hash"]) for block, group in rows.groupby("block", sort=False)}


def block_records(metrics: MetricsStore, spec: PipelineSpec, block: str) -> list[tuple[str, str, int]]:
    """The current file versions of ``block``: ``[(file, content_hash, rows), ...]`` by file name."""
    rows = current_rows(metrics, spec, block)
    return [(row.file, row.content_hash, int(row.rows)) for row in rows.itertuples()]


def load_recorded_block(spec: PipelineSpec, metrics: MetricsStore, pipeline_dir: Path,
                        block: str) -> tuple[BlockRows, str]:
    """The rows of ``block`` from exactly its current recorded file versions, and the block's version."""
    records = block_records(metrics, spec, block)
    return load_pieces(pieces_dir(pipeline_dir), block, records), block_version([r[1] for r in records])
