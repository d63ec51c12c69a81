"""Every metric as immutable Parquet segments, read through DuckDB views: many writers, no lock.

Each write is a new segment, so runs of many pipelines and processes write without waiting for each other
and a reader sees a write whole or not at all. The tables and their columns, the segment layout, the hidden
columns and why not one DuckDB file: docs/metric-tables.md.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import io
import json
import math
import os
import random
import re
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import duckdb

from calmops_dagster.errors import CalmOpsError, StoreUnavailableError
from calmops_dagster.store.breaker_state import BreakerState
from calmops_dagster.store.storage import (
    Location,
    StoragePath,
    as_location,
    reader_filesystem,
    remove_tree,
    storage_root,
    update_atomically,
    write_atomic,
)

if TYPE_CHECKING:  # pandas is imported where frames are built: `calmops list` reads rows without it
    import pandas as pd

SCHEMA = {
    "blocks": """
        pipeline VARCHAR, block VARCHAR, rows BIGINT, source_file VARCHAR, content_hash VARCHAR,
        null_cells BIGINT, loaded_at TIMESTAMPTZ""",
    "drift_results": """
        pipeline VARCHAR, block VARCHAR, feature VARCHAR, test VARCHAR, statistic DOUBLE, p_value DOUBLE,
        effect_size DOUBLE, threshold DOUBLE, drifted BOOLEAN, note VARCHAR, computed_at TIMESTAMPTZ""",
    "drift_summary": """
        pipeline VARCHAR, block VARCHAR, reference_version VARCHAR, drift_detected BOOLEAN,
        drift_share DOUBLE, n_drifted BIGINT, n_tested BIGINT, drifted_features VARCHAR,
        performance_drop BOOLEAN, retrain BOOLEAN, reason VARCHAR, performance_metric VARCHAR,
        performance_value DOUBLE, performance_ci_low DOUBLE, performance_ci_high DOUBLE,
        error_change_row BIGINT, computed_at TIMESTAMPTZ, late BOOLEAN""",
    "performance": """
        pipeline VARCHAR, block VARCHAR, model_version VARCHAR, role VARCHAR, evaluated_on VARCHAR,
        metric VARCHAR, value DOUBLE, computed_at TIMESTAMPTZ, ci_low DOUBLE, ci_high DOUBLE""",
    "promotions": """
        pipeline VARCHAR, block VARCHAR, champion_before VARCHAR, challenger VARCHAR, decision VARCHAR,
        reason VARCHAR, metric VARCHAR, champion_score DOUBLE, challenger_score DOUBLE,
        champion_after VARCHAR, test VARCHAR, p_value DOUBLE, ci_low DOUBLE, ci_high DOUBLE,
        decided_at TIMESTAMPTZ, late BOOLEAN, trained_by VARCHAR""",
    "labels": """
        pipeline VARCHAR, block VARCHAR, label_files VARCHAR, rows BIGINT, labelled BIGINT, missing BIGINT,
        duplicate_ids BIGINT, conflicting_ids BIGINT, unknown_ids BIGINT, bad_files BIGINT, complete BOOLEAN,
        computed_at TIMESTAMPTZ""",
    "block_context": """
        pipeline VARCHAR, block VARCHAR, champion_version VARCHAR, settings VARCHAR, late BOOLEAN,
        promotion_hold VARCHAR, rollback_hold VARCHAR, challenger VARCHAR, challenger_reason VARCHAR,
        champion_after VARCHAR, decided BOOLEAN, run_id VARCHAR, recorded_at TIMESTAMPTZ,
        content_hash VARCHAR""",
    "reevaluation_summary": """
        pipeline VARCHAR, block VARCHAR, reevaluation_id VARCHAR, run_id VARCHAR, against VARCHAR,
        changes VARCHAR, original_reference_version VARCHAR, original_drift_detected BOOLEAN,
        original_retrain BOOLEAN, reference_version VARCHAR, drift_detected BOOLEAN, drift_share DOUBLE,
        n_drifted BIGINT, n_tested BIGINT, drifted_features VARCHAR, performance_drop BOOLEAN,
        retrain BOOLEAN, reason VARCHAR, performance_metric VARCHAR, performance_value DOUBLE,
        performance_ci_low DOUBLE, performance_ci_high DOUBLE, computed_at TIMESTAMPTZ""",
    "reevaluation_results": """
        pipeline VARCHAR, block VARCHAR, reevaluation_id VARCHAR, run_id VARCHAR, feature VARCHAR,
        test VARCHAR, statistic DOUBLE, p_value DOUBLE, effect_size DOUBLE, threshold DOUBLE,
        drifted BOOLEAN, note VARCHAR, computed_at TIMESTAMPTZ""",
    "quarantine": """
        pipeline VARCHAR, file VARCHAR, reason VARCHAR, content_hash VARCHAR, moved_to VARCHAR,
        quarantined_at TIMESTAMPTZ""",
    "breaker_state": """
        pipeline VARCHAR, status VARCHAR, consecutive_failures BIGINT, opened_at TIMESTAMPTZ,
        reopen_at TIMESTAMPTZ, last_reason VARCHAR, updated_at TIMESTAMPTZ""",
    "breaker_events": """
        pipeline VARCHAR, block VARCHAR, run_id VARCHAR, event VARCHAR, step VARCHAR, reason VARCHAR,
        consecutive_failures BIGINT, status VARCHAR, event_at TIMESTAMPTZ""",
    "data_files": """
        pipeline VARCHAR, file VARCHAR, size BIGINT, mtime_ns BIGINT, content_hash VARCHAR, status VARCHAR,
        note VARCHAR, schema VARCHAR, seen_at TIMESTAMPTZ""",
    "block_files": """
        pipeline VARCHAR, block VARCHAR, file VARCHAR, content_hash VARCHAR, rows BIGINT, status VARCHAR,
        seq BIGINT, recorded_at TIMESTAMPTZ""",
    "processed_blocks": """
        pipeline VARCHAR, block VARCHAR, block_version VARCHAR, run_id VARCHAR, processed_at TIMESTAMPTZ""",
    "alerts": """
        pipeline VARCHAR, block VARCHAR, event VARCHAR, summary VARCHAR, report_url VARCHAR, webhook VARCHAR,
        status VARCHAR, attempts BIGINT, http_status BIGINT, error VARCHAR, event_at TIMESTAMPTZ,
        sent_at TIMESTAMPTZ""",
}

#: Per-block tables whose rows carry the ``run_id`` of the Dagster run that wrote them (every
#: materialization is on record; the rows a rerun replaced stay in ``<table>_history``).
VERSIONED = ("blocks", "drift_results", "drift_summary", "performance", "promotions")
for _table in VERSIONED:
    SCHEMA[_table] += ", run_id VARCHAR"

#: What one write replaces: the newest write of each key wins. ``performance`` is scored on two kinds of
#: data by two assets (the block, the challenger's evaluation split), each replacing only its own rows.
KEYS = {
    "blocks": ("pipeline", "block"),
    "labels": ("pipeline", "block"),
    "drift_results": ("pipeline", "block"),
    "drift_summary": ("pipeline", "block"),
    "performance": ("pipeline", "block", "evaluated_on"),
    "promotions": ("pipeline", "block"),
    "reevaluation_summary": ("pipeline", "block", "reevaluation_id"),
    "reevaluation_results": ("pipeline", "block", "reevaluation_id"),
    "breaker_state": ("pipeline",),
}
#: A table in neither :data:`KEYS` nor :data:`APPEND_ONLY` is keyed by (pipeline, block).
DEFAULT_KEY = ("pipeline", "block")
#: Event logs: every row ever written is part of the table.
APPEND_ONLY = ("quarantine", "breaker_events", "data_files", "block_files", "alerts")

#: Folder (under the metrics folder) of each pipeline's circuit-breaker head, ``<pipeline>/head.json``.
BREAKER_HEADS = "_breaker"
#: How many of the run ids it counted last a breaker head remembers: a run reported by two writers at
#: once is counted once, although neither sees the other's ``breaker_events`` row yet.
BREAKER_RECENT_RUNS = 1000

#: Suffix of the views of superseded rows: ``blocks_history`` holds every row a later write of its block replaced.
HISTORY = "_history"
HIDDEN = "_seq VARCHAR, _row BIGINT, _tombstone BOOLEAN"
SCHEMA_FILE = "_schema.parquet"
#: The folder of each table holding the rows migrated from the single-file design, every pipeline's together.
MIGRATED = "_migrated"
CATALOG_VERSION_VIEW = "_catalog_version"
#: Errors a reader meets when a compaction removes segments it had just listed; the query is retried.
_VANISHED_MARKERS = ("no such file", "no files found", "cannot open file", "could not open file",
                     "specified key does not exist")  # the last: S3, a segment whose HEAD was answered before
#: Errors met opening the catalog file while another process rebuilds it.
_LOCK_MARKERS = ("lock", "conflict", "could not set", "different configuration")
#: (catalog, data folder) pairs this process has already checked (schema files and catalog current).
_READY: set[tuple[str, str]] = set()
#: Metric folders in object storage where this process has seen every table's schema file.
_SCHEMA_FILES_SEEN: set[StoragePath] = set()
_ENGINE: dict[int, duckdb.DuckDBPyConnection] = {}
#: Per engine (process), the fsspec filesystem registered on it for each protocol.
_REGISTERED: dict[int, dict[str, object]] = {}
_ENGINE_LOCK = threading.Lock()
#: A store failure raised in the filesystem DuckDB read through, as DuckDB reports it (a traceback's text).
_STORE_FAILED = re.compile(rf"\b{StoreUnavailableError.__name__}: ([^\n]+)")


def _close_engine() -> None:
    for con in _ENGINE.values():
        con.close()
    _ENGINE.clear()


atexit.register(_close_engine)


@contextmanager
def _memory(where: Location | None = None):
    """A fresh connection (cursor) to this process's in-memory DuckDB: opening a database costs tenths of a
    second, a cursor milliseconds. Tables and views made on it are TEMP, so they stay private to the cursor.
    A forked child opens its own database rather than sharing its parent's. When ``where`` is in object
    storage, its fsspec filesystem is registered first, so DuckDB reads its paths, and a query that failed
    because the store did raises the store's :class:`~calmops_dagster.errors.StoreUnavailableError` again
    (DuckDB hands on a Python error from its filesystem as text)."""
    pid = os.getpid()
    with _ENGINE_LOCK:
        if pid not in _ENGINE:
            _ENGINE[pid], _REGISTERED[pid] = duckdb.connect(), {}
        reader = reader_filesystem(where) if isinstance(where, StoragePath) else None
        if reader is not None and _REGISTERED[pid].get(where.protocol) is not reader:
            if where.protocol in _REGISTERED[pid]:  # the client settings changed: another filesystem
                _ENGINE[pid].unregister_filesystem(where.protocol)
            _ENGINE[pid].register_filesystem(reader)
            _REGISTERED[pid][where.protocol] = reader
        cursor = _ENGINE[pid].cursor()
    try:
        yield cursor
    except duckdb.Error as exc:
        failed = _STORE_FAILED.search(str(exc))
        if failed is None:
            raise
        raise StoreUnavailableError(failed.group(1).strip()) from None
    finally:
        cursor.close()


def views() -> list[str]:
    """Every view of the catalog: the tables, and ``<table>_history`` of each table keyed by block."""
    return [*SCHEMA, *(f"{table}{HISTORY}" for table in SCHEMA if table not in APPEND_ONLY)]


def key_of(table: str) -> tuple[str, ...]:
    """The columns one write of ``table`` replaces the rows of (the newest write of each key wins)."""
    return KEYS.get(table, DEFAULT_KEY)


def columns(table: str) -> list[str]:
    """The column names of ``table``, in order."""
    return [part.split()[0] for part in SCHEMA[table].split(",")]


def _is_error(exc: Exception, markers) -> bool:
    return any(marker in str(exc).lower() for marker in markers)


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def new_seq(after: str | None = None) -> str:
    """A write's sequence: later writes sort higher (nanosecond clock), ties broken by a random suffix.

    With ``after``, the sequence sorts above it even when this machine's clock is behind the one that wrote
    ``after`` (the circuit breaker's transitions are numbered so, in the order they were applied)."""
    ns = time.time_ns() if after is None else max(time.time_ns(), int(after[:20]) + 1)
    return f"{ns:020d}-{uuid.uuid4().hex[:12]}"


def _part(value) -> str:
    """A path component for a key value (block names are free text)."""
    return "_" if value is None or (isinstance(value, float) and math.isnan(value)) else quote(str(value), safe="")


class MetricsStore:
    """Writes immutable Parquet segments; reads them through DuckDB views (see the module docstring).

    ``path`` is the catalog file (``CALMOPS_HOME/metrics.duckdb``); the segments live in ``data_dir``
    (default: the folder ``metrics`` under the storage root, which is the catalog's folder unless
    ``$CALMOPS_STORAGE_URL`` names another).
    """

    def __init__(self, path: str | os.PathLike, data_dir: str | os.PathLike | StoragePath | None = None,
                 max_wait_seconds: float = 120.0):
        self.path = Path(path)
        if data_dir is None:
            data_dir = storage_root(self.path.parent) / "metrics"
        self.data_dir = data_dir if isinstance(data_dir, StoragePath) else Path(data_dir)
        self.max_wait_seconds = max_wait_seconds
        if isinstance(self.data_dir, StoragePath):  # segments are written once; _write_parquet says otherwise
            reader_filesystem(self.data_dir).add_write_once_prefix(self.data_dir.path)

    def _memory(self):
        return _memory(self.data_dir)

    # --- layout and catalog --------------------------------------------------------------------------------

    def _segments(self, table: str, pipeline: str | None) -> str:
        """What the views of ``table`` read: every segment (a glob), or with ``pipeline`` that pipeline's
        segments only, listed: its own folder's, those migrated from the single-file design (every pipeline's
        rows in one) and the schema file (typed columns for a pipeline with no rows yet)."""
        root = self.data_dir.resolve() / table
        if pipeline is None:
            return _sql_text(str(root / "**" / "*.parquet"))
        files = [root / SCHEMA_FILE, *self._pipeline_segments(table, pipeline)]
        return "[" + ", ".join(_sql_text(str(path)) for path in files) + "]"

    def _pipeline_segments(self, table: str, pipeline: str) -> list:
        """The segments that may hold ``pipeline``'s rows of ``table``: its own folder's, and those migrated
        from the single-file design."""
        root = self.data_dir.resolve() / table
        return [path for folder in (_part(pipeline), MIGRATED) for path in (root / folder).rglob("*.parquet")]

    def _view_sql(self, view: str, pipeline: str | None = None) -> str:
        """The SELECT that makes the table (or ``<table>_history``) ``view`` out of the table's segments (of
        ``pipeline`` only, when given)."""
        table = view.removesuffix(HISTORY) if view.endswith(HISTORY) else view
        files = self._segments(table, pipeline)
        only = "" if pipeline is None else f" WHERE pipeline = {_sql_text(pipeline)}"  # migrated rows: all pipelines'
        rows = f"SELECT DISTINCT ON (_seq, _row) * FROM read_parquet({files}, union_by_name = true){only}"
        cols = ", ".join(columns(table))
        if table in APPEND_ONLY:
            return f"SELECT {cols} FROM ({rows})"
        key = ", ".join(key_of(table))
        if view == table:
            return (f"SELECT {cols} FROM (SELECT *, max(_seq) OVER (PARTITION BY {key}) AS _newest FROM ({rows})) "
                    f"WHERE _seq = _newest AND NOT _tombstone")
        # superseded rows: each write's rows, replaced at the time of the next write of the same key
        same = " AND ".join(f"r.{k} IS NOT DISTINCT FROM w.{k}" for k in key_of(table))
        return (f"WITH r AS ({rows}), w AS (SELECT {key}, _seq, lead(_seq) OVER (PARTITION BY {key} ORDER BY _seq) "
                f"AS _next FROM (SELECT DISTINCT {key}, _seq FROM r)) "
                f"SELECT {', '.join(f'r.{c}' for c in columns(table))}, "
                f"to_timestamp(CAST(left(w._next, 20) AS BIGINT) / 1e9) AS replaced_at "
                f"FROM r JOIN w ON {same} AND r._seq = w._seq WHERE w._next IS NOT NULL AND NOT r._tombstone")

    def _catalog_version(self) -> str:
        text = "\n".join([str(self.data_dir.resolve()), *(self._view_sql(v) for v in views())])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def create_views(self, con, temp: bool = False, tables=None, pipeline: str | None = None) -> None:
        """Create the views of ``tables`` (default: all, and the catalog version) in the connection ``con``,
        over ``pipeline``'s segments only when given."""
        kind = "TEMP VIEW" if temp else "VIEW"
        for table in tables or views():
            con.execute(f"CREATE OR REPLACE {kind} {table} AS {self._view_sql(table, pipeline)}")
        if not tables:  # hashing every view's SQL costs a query: only where all views are made
            con.execute(f"CREATE OR REPLACE {kind} {CATALOG_VERSION_VIEW} AS "
                        f"SELECT {_sql_text(self._catalog_version())} AS version")

    def _ensure_schema_files(self) -> None:
        """Write each table's empty ``_schema.parquet`` (every column, typed) when missing or outdated.

        The files present are found by one listing and their columns read by one query: in object storage,
        a look per table was a request per table in every process that opened the store."""
        found = {path.parent.name: path for path in self.data_dir.glob(f"*/{SCHEMA_FILE}")}
        present: dict[str, list[str]] = {}
        if found:
            listed = ", ".join(_sql_text(str(path)) for path in found.values())
            with self._memory() as con:
                # the columns, not the root element (a group: no type), which data_files' ``schema`` column
                # would be mistaken for when told apart by name
                for file, name in con.execute(f"SELECT file_name, name FROM parquet_schema([{listed}]) "
                                              "WHERE type IS NOT NULL").fetchall():
                    present.setdefault(file, []).append(name)
        for table in SCHEMA:
            path = found.get(table)
            if path is None or present.get(str(path)) != [*columns(table), "_seq", "_row", "_tombstone"]:
                self._write_parquet(table, None, self.data_dir / table / SCHEMA_FILE)

    def _schema_files_present(self) -> bool:
        """Whether every table has its schema file. In object storage the answer is asked once per process and
        location (a listing of every table's folder, 16 requests): schema files are never deleted."""
        if not isinstance(self.data_dir, StoragePath):
            return all((self.data_dir / table / SCHEMA_FILE).exists() for table in SCHEMA)
        if self.data_dir in _SCHEMA_FILES_SEEN:
            return True
        present = {p.parent.name for p in self.data_dir.glob(f"*/{SCHEMA_FILE}")} >= set(SCHEMA)
        if present:
            _SCHEMA_FILES_SEEN.add(self.data_dir)
        return present

    def _ensure_ready(self) -> None:
        """Schema files in place and the catalog current (old single-file tables migrated first).

        Checked once per process and store location."""
        marker = (str(self.path.resolve()), str(self.data_dir.resolve()))
        if marker in _READY:
            return
        self._ensure_schema_files()
        if self._read_catalog_version() != self._catalog_version():
            with self._file_lock("catalog"):
                if self._read_catalog_version() != self._catalog_version():
                    self._rebuild_catalog()
        _READY.add(marker)

    def _read_catalog_version(self) -> str | None:
        if not self.path.exists():
            return None
        with self._open_catalog(read_only=True) as con:
            try:
                return con.execute(f"SELECT version FROM {CATALOG_VERSION_VIEW}").fetchone()[0]
            except duckdb.Error:  # no catalog view yet: a database of the single-file design
                return None

    def _rebuild_catalog(self) -> None:
        """Migrate tables of the single-file design into segments, then (re)create the views."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._open_catalog(read_only=False) as con:
            tables = [row[0] for row in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'").fetchall()]
            for table in tables:
                if table in SCHEMA:
                    frame = con.execute(f"SELECT * FROM {table}").df()
                    if len(frame):
                        self._write_segment(table, frame, (MIGRATED,), seq="0" * 20 + "-migrated")
                con.execute(f"DROP TABLE {table}")
            self.create_views(con)

    @contextmanager
    def _open_catalog(self, read_only: bool):
        """A connection to the catalog file, retried while another process rebuilds it."""
        deadline = time.monotonic() + self.max_wait_seconds
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                if isinstance(self.data_dir, StoragePath):  # the views read the segments through fsspec
                    con.register_filesystem(reader_filesystem(self.data_dir))
                break
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                if not _is_error(exc, _LOCK_MARKERS) or time.monotonic() > deadline:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def _file_lock(self, name: str):
        """An exclusive lock among the processes of this machine (the catalog rebuild: the catalog file is
        local too); kept beside the catalog when the segments are in object storage."""
        folder = self.path.parent / ".locks" if isinstance(self.data_dir, StoragePath) else self.data_dir / "_locks"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- writing -------------------------------------------------------------------------------------------

    def _write_parquet(self, table: str, frame: pd.DataFrame | None, path: Location) -> None:
        """``frame`` (``None``: no rows) typed as ``table`` (plus the hidden columns) to ``path``, atomically:
        written under a temporary name beside it and renamed, or (object storage) written to a local
        temporary file and put as one object."""
        remote = isinstance(path, StoragePath)
        if remote:
            tmp = Path(tempfile.gettempdir()) / f"calmops-segment-{uuid.uuid4().hex}.parquet"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with self._memory() as con:
                con.execute(f"CREATE TEMP TABLE segment ({SCHEMA[table]}, {HIDDEN})")
                if frame is not None and len(frame):
                    con.register("incoming", frame)
                    con.execute("INSERT INTO segment BY NAME SELECT * FROM incoming")
                con.execute(f"COPY segment TO {_sql_text(str(tmp))} (FORMAT parquet)")
            if remote:
                write_atomic(path, tmp.read_bytes())
                reader_filesystem(path).forget(path.path)  # a schema file rewritten by this process
            else:
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def _segment_path(self, table: str, where: tuple, seq: str) -> Location:
        folder = self.data_dir / table
        for part in where:
            folder = folder / _part(part)
        return folder / f"{seq}.parquet"

    def _write_segment(self, table: str, frame: pd.DataFrame, where: tuple, seq: str | None = None) -> str:
        """One immutable segment of ``table`` under ``<table>/<where...>/``; returns its sequence."""
        seq = seq or new_seq()
        frame = frame.reset_index(drop=True)
        frame = frame.assign(_seq=seq, _row=range(len(frame)))
        if "_tombstone" not in frame:
            frame = frame.assign(_tombstone=False)
        self._write_parquet(table, frame, self._segment_path(table, where, seq))
        return seq

    def replace_block_rows(
        self, table: str, pipeline: str, block: str, rows: pd.DataFrame | list[dict], scope: dict | None = None,
        run_id: str | None = None,
    ) -> int:
        """Replace ``table``'s rows of (pipeline, block) by ``rows``; return the count.

        One new segment: from now on the view shows these rows and no earlier ones of the same key. ``scope``
        gives the table's further key columns (``performance``: ``evaluated_on``), and is written into the
        new rows. Replacing by no rows writes a tombstone, so the block shows no rows. ``run_id`` (the Dagster
        run writing them) goes into a ``run_id`` column when the table has one. The rows replaced stay
        readable in ``<table>_history``, with ``replaced_at``.
        """
        import pandas as pd

        scope = scope or {}
        extra = key_of(table)[2:]
        if set(scope) != set(extra):
            raise ValueError(f"{table}: scope must give exactly {list(extra)}, got {sorted(scope)}")
        self._ensure_ready()
        frame = pd.DataFrame(rows)
        count = len(frame)
        if count:
            frame = frame.assign(pipeline=pipeline, block=block, **scope)
            if run_id is not None and "run_id" in columns(table):
                frame = frame.assign(run_id=run_id)
        else:
            frame = pd.DataFrame([{"pipeline": pipeline, "block": block, **scope, "_tombstone": True}])
        self._write_segment(table, frame, (pipeline, block, *scope.values()))
        return count

    def append_rows(self, table: str, rows: pd.DataFrame | list[dict]) -> int:
        """Append rows to an event table (``quarantine``, ``breaker_events``): one segment per pipeline."""
        import pandas as pd

        if table not in APPEND_ONLY:
            raise ValueError(f"{table} is keyed by block: use replace_block_rows")
        frame = pd.DataFrame(rows)
        if not len(frame):
            return 0
        self._ensure_ready()
        if "pipeline" not in frame:
            frame = frame.assign(pipeline=None)
        for pipeline, part in frame.groupby("pipeline", dropna=False, sort=False):
            self._write_segment(table, part, (pipeline, "_events"))
        return len(frame)

    # --- reading -------------------------------------------------------------------------------------------

    @contextmanager
    def connect(self, sql: str | None = None, pipeline: str | None = None):
        """An in-memory DuckDB connection with the tables as views over the segments (no file is opened).

        With ``sql``, only the tables it names get a view (binding a view lists its segments). With
        ``pipeline``, the views hold that pipeline's rows only and read only its segments: a query about one
        pipeline then costs what its own history costs, however many other pipelines the store holds."""
        if not self._schema_files_present():
            self._ensure_schema_files()
        named = [t for t in views() if sql and re.search(rf"\b{t}\b", sql, re.IGNORECASE)]
        with self._memory() as con:
            self.create_views(con, temp=True, tables=named or None, pipeline=pipeline)
            yield con

    def _read(self, sql: str, pipeline: str | None, read):
        """``read(con)`` on a connection (:meth:`connect`) with the views ``sql`` names; tried again when a
        compaction removed a segment between listing and reading it."""
        for attempt in range(5):
            try:
                with self.connect(sql, pipeline) as con:
                    return read(con)
            except duckdb.Error as exc:
                if not _is_error(exc, _VANISHED_MARKERS) or attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def query(self, sql: str, params: list | None = None, pipeline: str | None = None) -> pd.DataFrame:
        """Run a query over the tables (``pipeline``'s rows only, when given: see :meth:`connect`) and return
        a DataFrame; never waits for, nor fails on, a writer."""
        return self._read(sql, pipeline, lambda con: con.execute(sql, params or []).df())

    def queries(self, statements: list[tuple[str, list]], pipeline: str | None = None) -> list[pd.DataFrame]:
        """Several ``(sql, params)`` queries like :meth:`query`, over one connection: the views they name are
        made, and their segments listed, once."""
        return self._read("\n".join(sql for sql, _ in statements), pipeline,
                          lambda con: [con.execute(sql, params).df() for sql, params in statements])

    def rows(self, sql: str, params: list | None = None, pipeline: str | None = None) -> list[dict]:
        """Like :meth:`query`, but rows as dicts and no pandas: for quick reads such as ``calmops list``."""
        return self._read(sql, pipeline, lambda con: _dicts(con.execute(sql, params or [])))

    def read_only_query(self, sql: str) -> pd.DataFrame:
        """Run one ``SELECT`` (``calmops sql``): anything else (several statements, ``COPY``, ``CREATE``...)
        is refused with a :class:`~calmops_dagster.errors.CalmOpsError` before it runs."""
        with self._memory() as con:
            try:
                statements = con.extract_statements(sql)
            except duckdb.Error as exc:
                raise CalmOpsError(f"not a valid query: {exc}") from exc
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            kinds = ", ".join(s.type.name for s in statements) or "nothing"
            raise CalmOpsError(f"calmops sql runs exactly one SELECT (read-only); got {kinds}")
        try:
            return self.query(sql)
        except duckdb.Error as exc:
            raise CalmOpsError(f"query failed: {exc}") from exc

    # --- circuit breaker -----------------------------------------------------------------------------------

    def _breaker_head(self, pipeline: str) -> Location:
        return self.data_dir / BREAKER_HEADS / _part(pipeline) / "head.json"

    def breaker_state(self, pipeline: str):
        """The stored :class:`~calmops_dagster.store.breaker_state.BreakerState` of ``pipeline`` (closed if none):
        its head's, or the ``breaker_state`` row of a breaker last changed before heads existed."""
        try:
            return _state_from_row(_from_json(json.loads(self._breaker_head(pipeline).read_bytes())["state"]))
        except FileNotFoundError:
            if not self._pipeline_segments("breaker_state", pipeline):  # never changed: closed, and no query
                return BreakerState()
            found = self.rows("SELECT * FROM breaker_state WHERE pipeline = ?", [pipeline], pipeline=pipeline)
            return _state_from_row(found[0] if found else None)

    def update_breaker(self, pipeline: str, transition, *, run_id: str | None = None, block: str | None = None,
                       step: str | None = None):
        """Apply ``transition(state) -> (state, event)`` and record it; never loses a concurrent transition.

        The pipeline's head (module docstring) is changed by :func:`update_atomically`, so each transition is
        applied to the state the previous one left, whichever machine wrote it; ``transition`` must only
        compute, as it may be called again when another writer got there first. Each transition gets a
        sequence above the previous one's, and its ``breaker_state`` and ``breaker_events`` rows are written
        under it once the head holds it: the newest ``breaker_state`` row is the head's state, whatever order
        the writers finish in. Rows a writer did not get to write (it died after changing the head) are
        written by the next transition, under their own sequence, so never twice.

        A ``run_id`` already recorded is not counted again (the run-failure sensor and ``calmops run`` may
        both report the same run, at the same moment): it is looked up in ``breaker_events`` and in the
        head's last :data:`BREAKER_RECENT_RUNS` run ids. Returns ``(state, event)``; ``event`` is ``None``
        for such a repeat.
        """
        self._ensure_ready()
        if run_id and self.rows("SELECT 1 FROM breaker_events WHERE pipeline = ? AND run_id = ?",
                                [pipeline, run_id], pipeline=pipeline):
            return self.breaker_state(pipeline), None
        outcome = {}

        def change(old: bytes | None) -> bytes:
            head = json.loads(old) if old else None
            current = _state_from_row(_from_json(head["state"])) if head else self.breaker_state(pipeline)
            if head and run_id and run_id in head["recent_runs"]:
                outcome.update(state=current, event=None, previous=None, head=None)
                return old  # unchanged: a repeat of a run counted since the head was read
            state, event = transition(current)
            now = datetime.now(UTC)
            recent = head["recent_runs"] if head else []
            new = _to_json({
                "seq": new_seq(after=head and head["seq"]),
                "state": {"status": state.status, "consecutive_failures": state.consecutive_failures,
                          "opened_at": state.opened_at, "reopen_at": state.reopen_at,
                          "last_reason": state.last_reason, "updated_at": now},
                "event": {"block": block, "run_id": run_id, "event": event, "step": step,
                          "reason": state.last_reason, "consecutive_failures": state.consecutive_failures,
                          "status": state.status, "event_at": now},
                "recent_runs": [*recent, run_id][-BREAKER_RECENT_RUNS:] if run_id else recent,
            })
            outcome.update(state=state, event=event, previous=head, head=new)
            return json.dumps(new).encode()

        update_atomically(self._breaker_head(pipeline), change)  # outcome: of the change that was written
        previous = outcome["previous"]
        if previous and not self._segment_path("breaker_events", (pipeline, "_events"), previous["seq"]).exists():
            self._write_breaker_rows(pipeline, previous)
        if outcome["head"]:
            self._write_breaker_rows(pipeline, outcome["head"])
        return outcome["state"], outcome["event"]

    def _write_breaker_rows(self, pipeline: str, head: dict) -> None:
        """The ``breaker_state`` and ``breaker_events`` rows of the transition ``head`` holds (events last:
        their segment's presence says both were written), under the transition's sequence."""
        import pandas as pd

        for table, row, where in (("breaker_state", head["state"], (pipeline,)),
                                  ("breaker_events", head["event"], (pipeline, "_events"))):
            self._write_segment(table, pd.DataFrame([{"pipeline": pipeline, **_from_json(row)}]), where,
                                seq=head["seq"])

    # --- compaction, archive and removal -------------------------------------------------------------------

    def compact(self, pipeline: str | None = None) -> dict[str, tuple[int, int]]:
        """Merge each (table, pipeline)'s segments into one; every row (superseded ones too) is kept.

        Readers keep working meanwhile: the merged segment is renamed into place before the merged ones are
        removed, and rows are de-duplicated on ``(_seq, _row)`` while both exist. Returns
        ``{table: (segments before, segments after)}`` summed over the pipelines compacted.
        """
        self._ensure_ready()
        result = {}
        for table in SCHEMA:
            before = after = 0
            root = self.data_dir / table
            folders = [root / _part(pipeline)] if pipeline else sorted(p for p in root.glob("*") if p.is_dir())
            for folder in folders:
                files = sorted(folder.rglob("*.parquet")) if folder.is_dir() else []
                before += len(files)
                if len(files) < 2:
                    after += len(files)
                    continue
                with self._memory() as con:
                    listed = ", ".join(_sql_text(str(f)) for f in files)
                    frame = con.execute(f"SELECT DISTINCT ON (_seq, _row) * FROM read_parquet([{listed}], "
                                        f"union_by_name = true)").df()
                self._write_parquet(table, frame, folder / f"{new_seq()}-compacted.parquet")
                for file in files:
                    file.unlink(missing_ok=True)
                for sub in [] if isinstance(folder, StoragePath) else sorted(
                        (p for p in folder.rglob("*") if p.is_dir()), reverse=True):
                    if not any(sub.iterdir()):  # object storage has no empty folders to remove
                        sub.rmdir()
                after += 1
            result[table] = (before, after)
        return result

    def export_pipeline_rows(self, pipeline: str, folder: str | os.PathLike | StoragePath) -> dict[str, int]:
        """Write every table's rows of ``pipeline`` to ``folder/<table>.parquet`` (local or in object storage);
        return the row counts."""
        folder = as_location(folder)
        counts = {}
        for table in SCHEMA:
            frame = self.query(f"SELECT * FROM {table} WHERE pipeline = ?", [pipeline], pipeline=pipeline)
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            write_atomic(folder / f"{table}.parquet", buffer.getvalue())
            counts[table] = len(frame)
        return counts

    def delete_pipeline_rows(self, pipeline: str) -> None:
        """Remove every segment of ``pipeline`` from every table."""
        self._ensure_ready()
        for table in SCHEMA:
            remove_tree(self.data_dir / table / _part(pipeline))
        remove_tree(self.data_dir / BREAKER_HEADS / _part(pipeline))
        self._drop_migrated_rows(pipeline)

    def _drop_migrated_rows(self, pipeline: str) -> None:
        """Rows migrated from the single-file design share one segment per table: write it again without them,
        under a new name (segments are never rewritten in place: readers keep what they learnt about one), then
        remove the old one. Until then a reader sees both, whose rows are the same ``(_seq, _row)`` once."""
        for table in SCHEMA:
            folder = self.data_dir / table / MIGRATED
            for file in sorted(folder.glob("*.parquet")) if folder.exists() else []:
                with self._memory() as con:
                    frame = con.execute("SELECT * FROM read_parquet(?) WHERE pipeline IS DISTINCT FROM ?",
                                        [str(file), pipeline]).df()
                self._write_parquet(table, frame, folder / f"{'0' * 20}-migrated-{uuid.uuid4().hex[:12]}.parquet")
                file.unlink()


def _dicts(cursor) -> list[dict]:
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def _to_json(head: dict) -> dict:
    """``head`` with its times as ISO text (the keys ending in ``_at``), for JSON."""
    return {k: _to_json(v) if isinstance(v, dict) else v.isoformat() if isinstance(v, datetime) else v
            for k, v in head.items()}


def _from_json(row: dict) -> dict:
    """A row of a head with its times (the keys ending in ``_at``) as aware datetimes again."""
    return {k: datetime.fromisoformat(v) if k.endswith("_at") and v else v for k, v in row.items()}


def _state_from_row(row: dict | None) -> BreakerState:
    if row is None:
        return BreakerState()

    def when(value):  # DuckDB returns TIMESTAMPTZ as an aware datetime in the session's zone
        return None if value is None else value.astimezone(UTC)

    return BreakerState(status=row["status"], consecutive_failures=int(row["consecutive_failures"]),
                        opened_at=when(row["opened_at"]), reopen_at=when(row["reopen_at"]),
                        last_reason=row["last_reason"])
