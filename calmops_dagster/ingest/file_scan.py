"""What is new in a pipeline's ``data_dir``: the logic behind the file sensor, the schedule and ``calmops run``.

A scan compares the folder with the *ingest index* (what earlier scans accepted, passed in as plain dicts by
:mod:`calmops_dagster.ingest.ingest_record`) and a small cursor (``seen``: files not yet stable; ``seq``), so
a known file costs one ``stat``; a new one is read once stable, and one that cannot be used is reported with
the reason, never stopping the others. Stability, half-written files, duplicates and quarantine:
docs/ingest.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from calmops_dagster.errors import DataFileError, IncompleteFileError
from calmops_dagster.ingest.block_data import (
    QUARANTINE_DIR,
    FileInspection,
    accept_stream_file,
    candidate_stats,
    incomplete_reason,
    inspect_frame,
    keep_block_pieces,
    sort_block_keys,
)
from calmops_dagster.spec import PipelineSpec, column_kinds


def empty_cursor() -> dict:
    return {"seen": {}, "seq": 0}


def load_cursor(text: str | None) -> dict:
    """Parse a cursor string; a missing or unreadable cursor starts empty (older cursors' keys are dropped)."""
    if not text:
        return empty_cursor()
    try:
        cursor = json.loads(text)
    except json.JSONDecodeError:
        return empty_cursor()
    return {"seen": dict(cursor.get("seen") or {}), "seq": int(cursor.get("seq") or 0)}


@dataclass
class BadFile:
    path: Path
    reason: str
    sha256: str | None


@dataclass
class ScanResult:
    ready: list[FileInspection] = field(default_factory=list)
    bad: list[BadFile] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # "name (why)"
    duplicates: list[str] = field(default_factory=list)  # "name (same content as other)"
    #: data_files rows for the index: every file this scan read (accepted, duplicate, quarantined)
    index: list[dict] = field(default_factory=list)
    cursor: dict = field(default_factory=empty_cursor)
    #: :func:`fingerprint` of the files this scan listed: each is recorded, known, or waiting in ``seen``
    listing: str = ""

    def blocks(self) -> dict[str, list[str]]:
        """Each block key found in the ready files, with the sha256 of the files holding it."""
        found: dict[str, list[str]] = {}
        for inspection in self.ready:
            for block in inspection.blocks:
                found.setdefault(block, []).append(inspection.sha256)
        return found


#: The longest a sensor tick waits for a file about to settle (:func:`settle_wait`), in seconds.
MAX_SETTLE_WAIT = 10.0


def settle_wait(spec: PipelineSpec, now: float | None = None) -> float:
    """Seconds until every data file modified in the last ``settle_seconds`` has been left alone that long,
    or 0 when none was, or when waiting would take longer than the next tick (``interval_seconds``) or
    :data:`MAX_SETTLE_WAIT`.

    A tick that sees a file younger than ``settle_seconds`` leaves it for the next tick, a whole interval
    later; a tick that first waits this long reads it at once, if no one wrote to it meanwhile (the scan
    still checks its age). Bounded so that a file still being written, or a long settle time, never holds a
    tick up for long.
    """
    now = time.time() if now is None else now
    remaining = 0.0
    for _, info in candidate_stats(spec):
        remaining = max(remaining, spec.sensor.settle_seconds - (now - info.st_mtime))
    return remaining if 0 < remaining <= min(spec.sensor.interval_seconds, MAX_SETTLE_WAIT) else 0.0


def listing_fingerprint(spec: PipelineSpec) -> str:
    """16 hex digits naming the data files and the size and mtime of each: one ``stat`` per file, nothing
    read. Equal fingerprints mean no file was added, removed or rewritten since (the file sensor's idle
    tick)."""
    return fingerprint(candidate_stats(spec))


def fingerprint(stats: list[tuple[str, os.stat_result]]) -> str:
    """:func:`listing_fingerprint` of :func:`candidate_stats` (a scan's own listing)."""
    entries = [f"{name}\0{info.st_size}\0{info.st_mtime_ns}" for name, info in stats]
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


@dataclass
class Unsettled:
    """Files modified less than ``settle_seconds`` ago that the record does not know in this version: how
    long until the youngest has settled, and each one's ``[size, mtime_ns]`` now (a cursor's ``seen``)."""

    seconds: float
    seen: dict[str, list[int]]


def unsettled_files(spec: PipelineSpec, index: dict[str, dict], now: float | None = None) -> Unsettled:
    """The young, not yet recorded files of ``data_dir`` (what a headless run waits out before its scan).

    A file the record holds with the same size and mtime is not counted: it is not read again anyway.
    """
    now = time.time() if now is None else now
    remaining, seen = 0.0, {}
    for name, stat in candidate_stats(spec):
        path = spec.data_dir / name
        known = index.get(path.name)
        if known and [known["size"], known["mtime_ns"]] == [stat.st_size, stat.st_mtime_ns]:
            continue
        left = spec.sensor.settle_seconds - (now - stat.st_mtime)
        if left > 0:
            remaining = max(remaining, left)
            seen[path.name] = [stat.st_size, stat.st_mtime_ns]
    return Unsettled(seconds=remaining, seen=seen)


def scan_data_dir(
    spec: PipelineSpec,
    cursor: dict | None = None,
    now: float | None = None,
    expected_kinds: dict[str, str] | None = None,
    incoming: Path | None = None,
    index: dict[str, dict] | None = None,
    owners: dict[str, str] | None = None,
    pieces: Path | None = None,
) -> ScanResult:
    """Find the new, stable, readable file versions of ``spec.data_dir`` that ``index`` does not know.

    ``expected_kinds`` is the schema files must have (feature -> kind); without it the first file accepted
    by this scan sets it. ``pieces`` (block pipelines) is where accepted versions are cut into per-block
    pieces; ``incoming`` (stream pipelines) the store accepted stream files are copied into.
    """
    if spec.type == "stream" and incoming is None:
        raise ValueError(f"pipeline '{spec.name}' is a stream pipeline: scan_data_dir needs its incoming store")
    if spec.type != "stream" and pieces is None:
        raise ValueError(f"pipeline '{spec.name}': scan_data_dir needs the folder of its block pieces")
    now = time.time() if now is None else now
    cursor = load_cursor(json.dumps(cursor)) if cursor else empty_cursor()  # never mutate the caller's
    result = ScanResult(cursor=cursor)
    seen, index, owners = cursor["seen"], index or {}, dict(owners or {})
    expected = dict(expected_kinds) if expected_kinds else None
    listed = candidate_stats(spec)
    result.listing = fingerprint(listed)
    stats = {spec.data_dir / name: info for name, info in listed}
    present = {path.name for path in stats}
    for name in [n for n in seen if n not in present]:
        del seen[name]
    for path, stat in sorted(stats.items(), key=lambda item: (item[1].st_mtime_ns, item[0].name)):
        signature = [stat.st_size, stat.st_mtime_ns]
        known = index.get(path.name)
        if known and [known["size"], known["mtime_ns"]] == signature:
            continue
        previous = seen.get(path.name)
        seen[path.name] = signature
        age = now - stat.st_mtime
        if previous is not None and previous != signature:
            result.waiting.append(f"{path.name} (changed since the last look: still being written?)")
            continue
        if age < spec.sensor.settle_seconds:
            result.waiting.append(f"{path.name} (modified {max(age, 0):.1f} s ago, under sensor.settle_seconds "
                                  f"= {spec.sensor.settle_seconds:g})")
            continue
        young = age < spec.sensor.incomplete_wait_seconds
        try:
            data = path.read_bytes()  # hashed and parsed from these very bytes: the version is exact
        except OSError:  # vanished or unreadable since it was listed: look again next time
            result.waiting.append(f"{path.name} (unreadable for now)")
            continue
        cut_short = incomplete_reason(data, path.suffix) if young else None
        if cut_short is not None:
            result.waiting.append(f"{path.name} ({cut_short}: still being written?)")
            continue
        sha = hashlib.sha256(data).hexdigest()
        del seen[path.name]
        entry = {"file": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "content_hash": sha,
                 "note": None, "schema": None}
        owner = owners.get(sha)
        if owner is not None and owner != path.name:  # the same bytes were accepted under another name
            result.index.append({**entry, "status": "duplicate", "note": f"same content as {owner}"})
            result.duplicates.append(f"{path.name} (same content as {owner})")
            continue
        if owner == path.name and known and known.get("sha256") == sha:  # touched, not changed
            result.index.append({**entry, "status": "accepted", "schema": known.get("schema")})
            continue
        try:
            if spec.type == "stream":
                inspection, is_new = accept_stream_file(path, spec, incoming, expected)
                entry["content_hash"] = inspection.sha256  # the hash of the bytes actually stored
                if not is_new and stream_version_elsewhere(inspection, path):
                    result.index.append({**entry, "status": "duplicate", "note": "same content as an "
                                         f"accepted file (partition {inspection.blocks[0]})"})
                    result.duplicates.append(f"{path.name} (same content as partition {inspection.blocks[0]})")
                    continue
            else:
                inspection = accept_block_file(path, data, spec, sha, pieces, expected)
        except IncompleteFileError as exc:
            if young:
                result.waiting.append(f"{path.name} ({exc.reason}: still being written?)")
                seen[path.name] = signature
                continue
            result.index.append({**entry, "status": "quarantined", "note": exc.reason})
            result.bad.append(BadFile(path, exc.reason, sha))
            continue
        except DataFileError as exc:
            result.index.append({**entry, "status": "quarantined", "note": exc.reason})
            result.bad.append(BadFile(path, exc.reason, sha))
            continue
        except OSError:  # vanished or unreadable between stat and read: look again next time
            result.waiting.append(f"{path.name} (unreadable for now)")
            seen[path.name] = signature
            continue
        schema = inspection.schema or (known or {}).get("schema") or None
        result.index.append({**entry, "status": "accepted",
                             "schema": json.dumps(schema, sort_keys=True) if isinstance(schema, dict) else schema})
        owners[sha] = owners[inspection.sha256] = path.name
        if expected is None and inspection.schema:
            expected = inspection.schema  # the first accepted file sets the features the next ones must have
        result.ready.append(inspection)
    return result


def accept_block_file(path: Path, data: bytes, spec: PipelineSpec, sha: str, pieces: Path,
                      expected_kinds: dict[str, str] | None) -> FileInspection:
    """Validate a block pipeline's file (its bytes ``data``, hashed ``sha``) and keep its rows as per-block
    pieces under ``pieces``."""
    frame, keys = inspect_frame(path, spec, expected_kinds, data)
    counts = keep_block_pieces(frame, keys, sha, pieces, data, path.suffix)
    blocks = sort_block_keys(counts)
    return FileInspection(path=path, sha256=sha, rows=len(frame), blocks=blocks,
                          block_rows={b: counts[b] for b in blocks},
                          schema=column_kinds(frame, spec.feature_columns(frame.columns)))


def stream_version_elsewhere(inspection: FileInspection, path: Path) -> bool:
    """Whether an already-accepted stream version came from a file other than ``path`` (a duplicate by
    content) rather than from ``path`` itself (the same version, seen again without a cursor)."""
    from calmops_dagster.ingest.block_data import stream_key

    return inspection.blocks != [stream_key(path.name, inspection.sha256)]


def quarantine_file(path: Path) -> Path | None:
    """Move a bad file to ``data_dir/quarantine/``; ``None`` when the folder is read-only."""
    target_dir = path.parent / QUARANTINE_DIR
    try:
        target_dir.mkdir(exist_ok=True)
        target = target_dir / path.name
        if target.exists():
            target = target_dir / f"{path.stem}.{time.strftime('%Y%m%dT%H%M%S')}{path.suffix}"
        shutil.move(str(path), target)
        return target
    except OSError:
        return None
