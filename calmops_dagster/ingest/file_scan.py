"""What is new in a pipeline's ``data_dir``: the logic behind the file sensor and ``calmops run``.

A scan compares the folder with a cursor (JSON-serializable)::

    {"files":  {name: {"size": ..., "mtime_ns": ..., "sha256": ..., "status": "ok|duplicate|bad"}},
     "seen":   {name: [size, mtime_ns]},      # files looked at but not yet stable
     "hashes": {sha256: name}}                # contents already accepted

A file is read only when it is *stable*: its modification time is at least ``settle_seconds`` old and its
size and mtime equal what the previous scan saw (when one saw it). A file whose size or mtime changed since
it was processed is a new version and is read again. The same content is accepted once, whatever its file
name. A file that cannot be read or fails the schema is reported with the reason (the caller quarantines
it); it never stops the other files.

Stream pipelines (``type: stream``) pass ``incoming``: each accepted file version is copied into that
immutable store and becomes one partition keyed ``<stem>-<sha12>`` (:func:`block_data.accept_stream_file`);
files are looked at in arrival order (mtime, then name), so partitions are registered in that order.
Entries of files that disappeared (moved to quarantine, deleted) are pruned from ``files`` and ``seen``;
``hashes`` is kept, so their content is still never processed twice.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from calmops_dagster.errors import DataFileError
from calmops_dagster.ingest.block_data import (
    QUARANTINE_DIR,
    FileInspection,
    accept_stream_file,
    candidate_files,
    file_sha256,
    inspect_file,
)
from calmops_dagster.spec import PipelineSpec


def empty_cursor() -> dict:
    return {"files": {}, "seen": {}, "hashes": {}}


def load_cursor(text: str | None) -> dict:
    """Parse a cursor string; a missing or unreadable cursor starts empty."""
    if not text:
        return empty_cursor()
    try:
        cursor = json.loads(text)
    except json.JSONDecodeError:
        return empty_cursor()
    return {**empty_cursor(), **cursor}


@dataclass
class BadFile:
    path: Path
    reason: str
    sha256: str | None


@dataclass
class ScanResult:
    ready: list[FileInspection] = field(default_factory=list)
    bad: list[BadFile] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    cursor: dict = field(default_factory=empty_cursor)

    def blocks(self) -> dict[str, list[str]]:
        """Each block key found in the ready files, with the sha256 of the files holding it."""
        found: dict[str, list[str]] = {}
        for inspection in self.ready:
            for block in inspection.blocks:
                found.setdefault(block, []).append(inspection.sha256)
        return found


def scan_data_dir(
    spec: PipelineSpec,
    cursor: dict | None = None,
    now: float | None = None,
    expected_kinds: dict[str, str] | None = None,
    incoming: Path | None = None,
) -> ScanResult:
    """Find the new, stable, readable file versions of ``spec.data_dir`` since ``cursor``.

    ``incoming`` (required for stream pipelines) is the store accepted stream files are copied into.
    """
    if spec.type == "stream" and incoming is None:
        raise ValueError(f"pipeline '{spec.name}' is a stream pipeline: scan_data_dir needs its incoming store")
    now = time.time() if now is None else now
    cursor = json.loads(json.dumps(cursor or empty_cursor()))  # never mutate the caller's cursor
    result = ScanResult(cursor=cursor)
    files, seen, hashes = cursor["files"], cursor["seen"], cursor["hashes"]
    stats = {}
    for path in candidate_files(spec):
        try:
            stats[path] = path.stat()
        except FileNotFoundError:  # removed between listing and stat
            continue
    present = {path.name for path in stats}
    for table in (files, seen):
        for name in [n for n in table if n not in present]:
            del table[name]
    for path, stat in sorted(stats.items(), key=lambda item: (item[1].st_mtime_ns, item[0].name)):
        signature = [stat.st_size, stat.st_mtime_ns]
        known = files.get(path.name)
        if known and [known["size"], known["mtime_ns"]] == signature:
            continue
        previous = seen.get(path.name)
        seen[path.name] = signature
        settled = now - stat.st_mtime >= spec.sensor.settle_seconds
        if not settled or (previous is not None and previous != signature):
            result.waiting.append(path.name)
            continue
        del seen[path.name]
        try:
            sha = file_sha256(path)
        except OSError:  # vanished or unreadable since it was listed: look again next time
            result.waiting.append(path.name)
            continue
        entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
        if sha in hashes:  # same bytes already accepted, under this name or another
            files[path.name] = {**entry, "status": "duplicate"}
            result.duplicates.append(path.name)
            continue
        try:
            if spec.type == "stream":
                inspection, is_new = accept_stream_file(path, spec, incoming, expected_kinds)
                entry["sha256"] = inspection.sha256  # the hash of the bytes actually stored
                if not is_new and stream_version_elsewhere(inspection, path):
                    files[path.name] = {**entry, "status": "duplicate"}
                    hashes.setdefault(inspection.sha256, path.name)
                    result.duplicates.append(path.name)
                    continue
            else:
                inspection = inspect_file(path, spec, expected_kinds)
        except DataFileError as exc:
            files[path.name] = {**entry, "status": "bad"}
            result.bad.append(BadFile(path, exc.reason, sha))
            continue
        except OSError:  # vanished or unreadable between stat and read: look again next time
            result.waiting.append(path.name)
            continue
        files[path.name] = {**entry, "status": "ok"}
        hashes[sha] = hashes[inspection.sha256] = path.name
        result.ready.append(inspection)
    return result


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
