"""Delayed labels: label files (an id column and the target) joined to the rows of blocks that came without.

A pipeline with ``labels: {dir: ..., id_col: ...}`` may receive blocks without the target. Their labels land
later as CSV/Parquet files in ``labels.dir``. :func:`label_file_versions` tells the labels sensor which files
changed, for a ``stat`` per unchanged file; :func:`read_label_files` reads every such file (a file without
the two columns is reported, not read); :func:`attach_labels` gives a block its target when every row of it
has exactly one label, and counts what does not fit (rows without a label, ids labelled more than once,
ids labelled twice with different values); :func:`unmatched_ids` counts labels for rows never seen. Nothing
is dropped silently: every count goes to the block's metadata and the ``labels`` table.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from calmops_dagster.ingest.block_data import folder_stats, read_data_file
from calmops_dagster.spec import SUPPORTED_SUFFIXES
from calmops_dagster.store.model_store import file_sha256
from calmops_dagster.store.storage import Location, as_location, read_parquet

SOURCE = "__label_file__"
#: The ``labels`` row (block key) counting labels for rows never seen.
UNMATCHED = "__unmatched__"


@dataclass
class LabelFiles:
    """Every label read from the folder (``id``, target, and the file it came from) and the files refused."""

    frame: pd.DataFrame
    files: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelCount:
    """How a block's rows met its labels."""

    rows: int
    labelled: int
    missing: int
    duplicate_ids: int
    conflicting_ids: int

    @property
    def complete(self) -> bool:
        return self.rows > 0 and self.missing == 0

    def as_row(self) -> dict:
        return {**asdict(self), "complete": self.complete}


def _label_files(labels_dir: Path) -> list[tuple[str, os.stat_result]]:
    """``(name, stat)`` of the label files (CSV/Parquet) of ``labels_dir``, by name."""
    return folder_stats(Path(labels_dir), lambda name: os.path.splitext(name)[1].lower() in SUPPORTED_SUFFIXES)


def _label_paths(labels_dir: Path) -> list[Path]:
    return [Path(labels_dir) / name for name, _ in _label_files(labels_dir)]


@dataclass(frozen=True)
class LabelFileVersion:
    """A settled label file as the labels sensor last saw it: its ``stat`` signature and its content hash."""

    size: int
    mtime_ns: int
    sha256: str


@dataclass
class LabelFileVersions:
    """The settled label files (name -> version), the names of files modified less than ``settle_seconds``
    ago (maybe still being written), and the names hashed to learn their version (new, or whose size or
    mtime changed): the work a tick did."""

    files: dict[str, LabelFileVersion]
    waiting: list[str]
    hashed: list[str]

    @property
    def hashes(self) -> dict[str, str]:
        """``{file name: sha256}``: what decides whether the labels changed."""
        return {name: version.sha256 for name, version in self.files.items()}


def label_file_versions(labels_dir: Path, settle_seconds: float = 0.0,
                        known: dict[str, LabelFileVersion] | None = None, now: float | None = None
                        ) -> LabelFileVersions:
    """The versions of the settled label files in ``labels_dir``: one ``stat`` per file, and a hash only for
    a file ``known`` (the last tick's versions) does not hold with the same size and ``mtime_ns``."""
    known, now = known or {}, time.time() if now is None else now
    files, waiting, hashed = {}, [], []
    for name, stat in _label_files(labels_dir):
        if now - stat.st_mtime < settle_seconds:
            waiting.append(name)
            continue
        previous = known.get(name)
        if previous is not None and (previous.size, previous.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            files[name] = previous
            continue
        try:  # stat first: a write after it changes the signature, so it is hashed again
            sha = file_sha256(Path(labels_dir) / name)
        except FileNotFoundError:
            continue
        files[name] = LabelFileVersion(stat.st_size, stat.st_mtime_ns, sha)
        hashed.append(name)
    return LabelFileVersions(files, waiting, hashed)


def labels_cursor(files: dict[str, LabelFileVersion]) -> str:
    """The labels sensor's cursor: ``{"files": {name: [size, mtime_ns, sha256]}}``."""
    entries = {name: [v.size, v.mtime_ns, v.sha256] for name, v in files.items()}
    return json.dumps({"files": entries}, sort_keys=True, separators=(",", ":"))


def read_labels_cursor(text: str | None) -> tuple[dict[str, str], dict[str, LabelFileVersion]]:
    """The label files' hashes a cursor holds, and their versions. A cursor of the earlier form (``{name:
    sha256}``) gives its hashes and no versions, so each file is hashed once and, unchanged, requests
    nothing; an unreadable cursor gives neither (every file is matched again; run keys repeat, so no block
    is requested twice)."""
    try:
        stored = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}, {}
    if not isinstance(stored, dict):
        return {}, {}
    if isinstance(stored.get("files"), dict):
        try:
            versions = {name: LabelFileVersion(int(size), int(mtime_ns), str(sha))
                        for name, (size, mtime_ns, sha) in stored["files"].items()}
        except (TypeError, ValueError):
            return {}, {}
        return {name: v.sha256 for name, v in versions.items()}, versions
    return {name: sha for name, sha in stored.items() if isinstance(sha, str)}, {}


def read_label_files(labels_dir: Path, id_col: str, target: str, only=None) -> LabelFiles:
    """Every label file in ``labels_dir`` (sorted by name; only the names in ``only`` when given), the id
    and target columns and the file name."""
    parts, files, bad = [], [], {}
    for path in _label_paths(labels_dir):
        if only is not None and path.name not in only:
            continue
        try:
            frame = read_data_file(path)
        except Exception as exc:  # noqa: BLE001 -- any unreadable file is reported with its reason
            bad[path.name] = str(exc)
            continue
        missing = [c for c in (id_col, target) if c not in frame.columns]
        if missing:
            bad[path.name] = f"{path}: label file lacks column(s) {missing}"
            continue
        parts.append(frame[[id_col, target]].assign(**{SOURCE: path.name}))
        files.append(path.name)
    empty = pd.DataFrame(columns=[id_col, target, SOURCE])
    return LabelFiles(pd.concat(parts, ignore_index=True) if parts else empty, files, bad)


def attach_labels(block: pd.DataFrame, labels: pd.DataFrame, id_col: str, target: str
                  ) -> tuple[pd.DataFrame | None, LabelCount]:
    """``block`` with its ``target`` column when every row has one unambiguous label, else ``None``; and
    the counts. An id labelled twice with the same value is counted (``duplicate_ids``) and used; with
    different values it is counted (``conflicting_ids``) and left unlabelled."""
    ids = block[id_col]
    mine = labels[labels[id_col].isin(ids)]
    per_id = mine.groupby(id_col)[target].agg(["nunique", "size", "first"])
    duplicates = int((per_id["size"] > 1).sum())
    conflicting = per_id.index[per_id["nunique"] > 1]
    usable = per_id.drop(index=conflicting)["first"]
    values = ids.map(usable)
    labelled = int(values.notna().sum())
    count = LabelCount(len(block), labelled, len(block) - labelled, duplicates, len(conflicting))
    if not count.complete:
        return None, count
    return block.assign(**{target: values.to_numpy()}), count


def unmatched_ids(labels: pd.DataFrame, id_col: str, known_ids) -> int:
    """Distinct ids of ``labels`` that belong to no row seen so far."""
    return int((~pd.Series(labels[id_col].unique()).isin(set(known_ids))).sum())


@dataclass
class LabelArrival:
    """What the label files say about the kept blocks: the blocks whose labels are now complete (to be
    processed again, in block order), every unlabelled block's counts, and labels for rows never seen."""

    complete: list[str]
    counts: dict[str, LabelCount]
    unmatched: int


def label_arrival(blocks_dir: Location, labels: pd.DataFrame, id_col: str, target: str, order) -> LabelArrival:
    """Match ``labels`` to the rows kept in ``blocks_dir`` (``<block>.parquet``); ``order`` sorts block keys.

    A block kept with its target is labelled already: its ids count as seen, it is not processed again."""
    blocks_dir = as_location(blocks_dir)
    kept = sorted(blocks_dir.glob("*.parquet")) if blocks_dir.exists() else []
    counts, complete, seen = {}, [], set()
    for path in kept:
        rows = read_parquet(path)
        if id_col not in rows.columns:
            continue
        seen.update(rows[id_col].tolist())
        if target in rows.columns:
            continue
        attached, count = attach_labels(rows, labels, id_col, target)
        counts[path.stem] = count
        if attached is not None:
            complete.append(path.stem)
    return LabelArrival(list(order(complete)), counts, unmatched_ids(labels, id_col, seen))
