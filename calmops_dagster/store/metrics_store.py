"""Every metric as a Delta Lake table, read through DuckDB views: many writers, no lock, any reader.

Each table is a Delta table at ``<storage root>/metrics/<table>``, written by
:mod:`calmops_dagster.store.delta_tables`: replacing a block's rows (:data:`KEYS`) is one overwrite commit
whose predicate names the key (``calmops_replaces`` in its metadata), event tables (:data:`APPEND_ONLY`)
append. ``<table>_history`` reads the rows each replacing commit removed from the Delta log;
``<table>/_replaced.parquet`` holds those replaced before the table was a Delta table. A table is created by
its first write; every view is typed by :data:`SCHEMA`, so a table not yet written reads as no rows.
:meth:`MetricsStore.query` reads through views made once per process in an in-memory DuckDB, over the live
files each read lists from the Delta log (never a lock); ``metrics.duckdb`` holds views that find the live
files in the log themselves, for a plain DuckDB client.
The circuit breaker's truth is its conditional object ``metrics/_breaker/<pipeline>/head.json``. The
tables, their columns, the history, retention, upgrade and errors: docs/metric-tables.md.
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
from calmops_dagster.store import delta_tables
from calmops_dagster.store.breaker_state import BreakerState
from calmops_dagster.store.delta_tables import delta_errors
from calmops_dagster.store.storage import (
    Location,
    StoragePath,
    as_location,
    binding_filesystem,
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
        metric VARCHAR, value DOUBLE, computed_at TIMESTAMPTZ, ci_low DOUBLE, ci_high DOUBLE,
        calibration_rows BIGINT""",
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

#: Suffix of the views of replaced rows: ``blocks_history`` holds every row a later write of its block replaced.
HISTORY = "_history"
#: In a converted table's folder: the rows replaced before it was a Delta table, with ``replaced_at``. Delta
#: readers and vacuum ignore names starting with ``_``.
REPLACED_FILE = "_replaced.parquet"
#: In the metrics folder: the version of :data:`SCHEMA` every table was last made current for.
TABLES_FILE = "_tables.json"
#: The commit metadata entry naming the key (JSON) whose rows a replacing commit replaced.
REPLACES = "calmops_replaces"
#: Days the files and log entries of replaced rows are kept (``calmops compact`` vacuums older ones): the
#: ``<table>_history`` reruns and reports read. Set by this environment variable, else :data:`RETENTION_DAYS`.
RETENTION_ENV = "CALMOPS_METRICS_RETENTION_DAYS"
RETENTION_DAYS = 90
CATALOG_VERSION_VIEW = "_catalog_version"
#: Errors a reader meets when a vacuum removes a file it had just listed; the query is retried.
_VANISHED_MARKERS = ("no such file", "no files found", "cannot open file", "could not open file",
                     "specified key does not exist")
#: Errors met opening the catalog file while another process rebuilds it.
_LOCK_MARKERS = ("lock", "conflict", "could not set", "different configuration")
#: (catalog, data folder) pairs this process has already checked (tables and catalog current).
_READY: set[tuple[str, str]] = set()
#: Metric folders where this process has seen every table in place.
_TABLES_SEEN: set[str] = set()
_ENGINE: dict[int, duckdb.DuckDBPyConnection] = {}
#: Per engine (process), the reading views made in it, as ``(schema, view)`` (:meth:`MetricsStore.connect`).
_VIEWS_MADE: dict[int, set[tuple[str, str]]] = {}
_VIEWS_LOCK = threading.Lock()
#: Per engine (process), the fsspec filesystem registered on it for each protocol.
_REGISTERED: dict[int, dict[str, object]] = {}
_ENGINE_LOCK = threading.Lock()
#: A store failure raised in the filesystem DuckDB read through, as DuckDB reports it (a traceback's text).
_STORE_FAILED = re.compile(rf"\b{StoreUnavailableError.__name__}: ([^\n]+)")


def retention_days() -> float:
    """Days replaced rows are kept: ``$CALMOPS_METRICS_RETENTION_DAYS``, else :data:`RETENTION_DAYS`."""
    raw = os.environ.get(RETENTION_ENV, "").strip()
    if not raw:
        return RETENTION_DAYS
    try:
        days = float(raw)
    except ValueError:
        days = -1
    if not days > 0:
        raise CalmOpsError(f"{RETENTION_ENV}={raw!r}: not a number of days above 0")
    return days


def _close_engine() -> None:
    for con in _ENGINE.values():
        con.close()
    _ENGINE.clear()
    _VIEWS_MADE.clear()


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
    """The columns one write of ``table`` replaces the rows of."""
    return KEYS.get(table, DEFAULT_KEY)


def columns(table: str) -> list[str]:
    """The column names of ``table``, in order."""
    return [part.split()[0] for part in SCHEMA[table].split(",")]


def _types(table: str) -> dict[str, str]:
    return {part.split()[0]: " ".join(part.split()[1:]) for part in SCHEMA[table].split(",")}


def _files_variable(table: str) -> str:
    """The DuckDB variable in which a reading connection lists ``table``'s live files for its view."""
    return f"calmops_files_{table}"


def _is_error(exc: Exception, markers) -> bool:
    return any(marker in str(exc).lower() for marker in markers)


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def new_seq(after: str | None = None) -> str:
    """A breaker transition's sequence: later ones sort higher (nanosecond clock), ties broken by a random
    suffix; with ``after``, above it even when this machine's clock is behind the one that wrote ``after``."""
    ns = time.time_ns() if after is None else max(time.time_ns(), int(after[:20]) + 1)
    return f"{ns:020d}-{uuid.uuid4().hex[:12]}"


def _part(value) -> str:
    """A path component for a key value (pipeline names in paths)."""
    return "_" if value is None or (isinstance(value, float) and math.isnan(value)) else quote(str(value), safe="")


def _predicate(key: dict) -> str:
    """The Delta (DataFusion SQL) predicate matching the rows of ``key``."""
    return " AND ".join(f'"{column}" IS NULL' if value is None else f'"{column}" = {_sql_text(str(value))}'
                        for column, value in key.items())


class MetricsStore:
    """Writes Delta Lake tables; reads them through DuckDB views (see the module docstring).

    ``path`` is the catalog file (``CALMOPS_HOME/metrics.duckdb``); the tables live in ``data_dir``
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
        if isinstance(self.data_dir, StoragePath):  # Delta data files are written once, never rewritten
            reader_filesystem(self.data_dir).add_write_once_prefix(self.data_dir.path)

    def _memory(self):
        return _memory(self.data_dir)

    def table_location(self, table: str) -> Location:
        """Where the Delta table ``table`` lives: ``<data_dir>/<table>``."""
        return self.data_dir.resolve() / table

    # --- tables and catalog --------------------------------------------------------------------------------

    def _arrow(self, table: str, frame: pd.DataFrame | None):
        """``frame`` (``None``: no rows) as a pyarrow table typed as ``table`` (times in UTC)."""
        with self._memory() as con:
            con.execute("SET TimeZone = 'UTC'")
            con.execute(f"CREATE TEMP TABLE incoming_rows ({SCHEMA[table]})")
            if frame is not None and len(frame):
                con.register("incoming", frame)
                con.execute("INSERT INTO incoming_rows BY NAME SELECT * FROM incoming")
            return con.sql("SELECT * FROM incoming_rows").to_arrow_table()

    def _open(self, table: str, latest: bool = True, create: bool = False):
        """This process's Delta table of ``table``, up to date unless ``latest=False``; ``None`` while no one
        has written it, unless ``create`` (a writer's: a table is created by its first write)."""
        location = self.table_location(table)
        with delta_errors(table, location):
            return delta_tables.open_table(location, configuration=_table_configuration(), latest=latest,
                                           create_schema=delta_tables.delta_schema(_types(table)) if create else None)

    def migrate(self) -> dict[str, tuple[int, int]]:
        """Convert a store of Parquet segments (the format before Delta Lake) now, as its first open would
        (:mod:`~calmops_dagster.store.segment_migration`), and make the catalog's views current (an old
        home's catalog holds the segments' views); ``{table: (rows, replaced rows)}`` converted."""
        _TABLES_SEEN.discard(str(self.data_dir.resolve()))
        converted = self._ensure_tables()
        self._ensure_ready()
        return converted

    def _ensure_tables(self) -> dict[str, tuple[int, int]]:
        """Every ``_replaced.parquet`` there is current (columns as :data:`SCHEMA`); a store of Parquet
        segments (the format before Delta) is converted first. Tables themselves are created by their first
        write (:meth:`_commit`): the views answer for a table not yet written with no rows. Once per process
        and folder; ``metrics/_tables.json`` records the columns it was done for, so a process that finds it
        current reads one small file instead of listing the tables. Returns what was converted."""
        marker = str(self.data_dir.resolve())
        if marker in _TABLES_SEEN:
            return {}
        done = self.data_dir / TABLES_FILE
        try:
            if json.loads(done.read_bytes()).get("schema") == _schema_version():
                _TABLES_SEEN.add(marker)
                return {}
        except (FileNotFoundError, ValueError, AttributeError):
            pass
        from calmops_dagster.store import segment_migration

        found = self._replaced_files()
        present: dict[str, list[str]] = {}
        if found:
            listed = ", ".join(_sql_text(str(path)) for path in found.values())
            with self._memory() as con:
                for file, name in con.execute(f"SELECT file_name, name FROM parquet_schema([{listed}]) "
                                              "WHERE type IS NOT NULL").fetchall():
                    present.setdefault(file, []).append(name)
        for table, path in found.items():
            if table in SCHEMA and present.get(str(path)) != [*columns(table), "replaced_at"]:
                with self._memory() as con:
                    kept = con.execute(f"SELECT * FROM read_parquet({_sql_text(str(path))})").df()
                self.write_replaced(table, kept)
        converted = segment_migration.migrate(self) if segment_migration.has_segments(self.data_dir) else {}
        write_atomic(done, json.dumps({"schema": _schema_version()}).encode())
        _TABLES_SEEN.add(marker)
        return converted

    def _replaced_files(self) -> dict[str, Location]:
        """``{table: its _replaced.parquet}`` for the tables that have one (one listing)."""
        return {path.parent.name: path for path in self.data_dir.glob(f"*/{REPLACED_FILE}")}

    def write_replaced(self, table: str, frame: pd.DataFrame | None) -> None:
        """Write ``<table>/_replaced.parquet``: ``frame``'s rows (the table's columns and ``replaced_at``;
        ``None``: none). Written by DuckDB, so opening a store needs neither pandas nor pyarrow."""
        path = self.table_location(table) / REPLACED_FILE
        tmp = Path(tempfile.gettempdir()) / f"calmops-replaced-{uuid.uuid4().hex}.parquet"
        try:
            with self._memory() as con:
                con.execute(f"CREATE TEMP TABLE replaced_rows ({SCHEMA[table]}, replaced_at TIMESTAMPTZ)")
                if frame is not None and len(frame):
                    con.register("incoming", frame)
                    con.execute("INSERT INTO replaced_rows BY NAME SELECT * FROM incoming")
                con.execute(f"COPY replaced_rows TO {_sql_text(str(tmp))} (FORMAT parquet)")
            write_atomic(path, tmp.read_bytes())
        finally:
            tmp.unlink(missing_ok=True)
        if isinstance(path, StoragePath):
            reader_filesystem(path).forget(path.path)

    def _read_sql(self, table: str, pipeline: str | None) -> str:
        """The SELECT of ``table``'s current rows (``pipeline``'s only, when given), typed, out of the files the
        reading connection lists in its variable :func:`_files_variable` (none: no rows; a listed file that is
        gone fails the read, as the reader retries it, never reads as no rows)."""
        where = "" if pipeline is None else f" WHERE pipeline = {_sql_text(pipeline)}"
        listed = f"getvariable('{_files_variable(table)}')"
        files = f"read_parquet({listed}, union_by_name = true, allow_empty = (len({listed}) = 0))"
        return f"SELECT {_casts(table)} FROM ({_typed(files, _types(table))}){where}"

    def _log_sql(self, view: str) -> str:
        """The SELECT that makes ``view`` (a table or ``<table>_history``) out of the table's Delta log and
        files alone, for the catalog: the live files are those whose latest action (by version, in the JSON
        commits and the checkpoints) is an ``add``; a table's replaced rows are the key's rows in the files
        each replacing commit removed, as long as vacuum keeps them. Every file it reads is found when the
        view is read, typed by :data:`SCHEMA` whatever is there: a table no one has written yet (no folder)
        has no rows, and once some home writes it, every catalog reading the same store sees its rows."""
        table = view.removesuffix(HISTORY)
        root = str(self.table_location(table))
        log = f"{root}/_delta_log"
        files = _typed(f"read_parquet({_sql_text(root + '/*.parquet')}, filename = true, union_by_name = true, "
                       "allow_empty = true)", {**_types(table), "filename": "VARCHAR"})
        commits = _typed(f"read_json({_sql_text(log + '/*.json')}, filename = true, format = 'newline_delimited', "
                         "columns = {add: 'STRUCT(path VARCHAR)', remove: 'STRUCT(path VARCHAR, "
                         "\"deletionTimestamp\" BIGINT)', commitInfo: 'STRUCT(\"timestamp\" BIGINT, "
                         f"{REPLACES} VARCHAR)'}}, allow_empty = true)", _LOG_TYPES)
        checkpoints = _typed(f"read_parquet({_sql_text(log + '/*.checkpoint*.parquet')}, filename = true, "
                             "union_by_name = true, allow_empty = true)", _LOG_TYPES)
        version = "CAST(regexp_extract(filename, '(\\d+)\\.(json|checkpoint)[^/]*$', 1) AS BIGINT)"
        if view == table:
            live = (f"SELECT path FROM (SELECT {version} AS version, add.path AS added, remove.path AS removed "
                    f"FROM ({commits}) UNION ALL SELECT {version}, add.path, remove.path FROM ({checkpoints})), "
                    "LATERAL (SELECT coalesce(added, removed) AS path) "
                    "WHERE path IS NOT NULL GROUP BY path HAVING arg_max(added IS NOT NULL, version)")
            return (f"SELECT {_casts(table)} FROM ({files}) WHERE filename IN "
                    f"(SELECT {_sql_text(root + '/')} || path FROM ({live}))")
        before = _typed(f"read_parquet({_sql_text(root + '/' + REPLACED_FILE)}, allow_empty = true)",
                        {**_types(table), "replaced_at": "TIMESTAMPTZ"})  # replaced before it was a Delta table
        keep_ms = int(retention_days() * 86_400_000) - 3_600_000  # an hour short of what vacuum keeps
        same = " AND ".join(f"r.{c} IS NOT DISTINCT FROM json_extract_string(c.k, '$.{c}')" for c in key_of(table))
        return (f"WITH log AS (SELECT {version} AS version, commitInfo, remove FROM ({commits})), "
                f"c AS (SELECT version, commitInfo.timestamp AS ts, commitInfo.{REPLACES} AS k FROM log "
                f"WHERE commitInfo.{REPLACES} IS NOT NULL), "
                f"x AS (SELECT version, {_sql_text(root + '/')} || remove.path AS file FROM log WHERE remove.path "
                f"IS NOT NULL AND remove.deletionTimestamp >= epoch_ms(now()) - {keep_ms}) "
                f"SELECT {_casts(table, 'r.')}, to_timestamp(c.ts / 1000) AS replaced_at FROM ({files}) r "
                f"JOIN x ON r.filename = x.file JOIN c ON c.version = x.version WHERE {same} "
                f"UNION ALL SELECT {_casts(table)}, CAST(replaced_at AS TIMESTAMPTZ) AS replaced_at FROM ({before})")

    def _catalog_version(self) -> str:
        text = "\n".join([str(self.data_dir.resolve()), *(self._log_sql(v) for v in views())])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def create_views(self, con, tables=None, pipeline: str | None = None, schema: str | None = None) -> None:
        """Create the views of ``tables`` (default: all) in ``con``, with ``pipeline``'s rows only when given.

        With ``schema`` (this process's reads, :meth:`connect`), in that schema: a table's view reads the files
        the reading connection lists in a variable, so it is made once and read many times. Otherwise (the
        catalog) every view finds the live files in the log when it is read, and the catalog version is
        recorded."""
        prefix = f"{schema}." if schema else ""
        for view in tables or views():
            if schema and not view.endswith(HISTORY):
                sql = self._read_sql(view, pipeline)
            else:
                sql = self._log_sql(view)
                if pipeline is not None:
                    sql = f"SELECT * FROM ({sql}) WHERE pipeline = {_sql_text(pipeline)}"
            con.execute(f"CREATE OR REPLACE VIEW {prefix}{view} AS {sql}")
        if not schema:
            con.execute(f"CREATE OR REPLACE VIEW {CATALOG_VERSION_VIEW} AS "
                        f"SELECT {_sql_text(self._catalog_version())} AS version")

    def _list_files(self, con, tables: list[str], pipeline: str | None) -> None:
        """Set ``con``'s variable of each of ``tables`` to the table's live files as its Delta log lists them
        now (pruned by their statistics to ``pipeline``'s; none while no one has written the table)."""
        for table in tables:
            dt = self._open(table)
            with delta_errors(table, self.table_location(table)):
                facts = delta_tables.live_file_facts(dt, pipeline) if dt else []
            if isinstance(self.data_dir, StoragePath):  # DuckDB need not ask S3 what the log says
                reader = reader_filesystem(self.data_dir)
                for uri, size, modified in facts:
                    reader.remember(uri, size, modified)
            con.execute(f"SET VARIABLE {_files_variable(table)} = ?", [[uri for uri, _, _ in facts]])

    def _views_schema(self, pipeline: str | None) -> str:
        """The schema of this process's DuckDB holding the reading views of this store (and ``pipeline``)."""
        scope = json.dumps([str(self.data_dir.resolve()), pipeline])
        return "calmops_" + hashlib.sha256(scope.encode()).hexdigest()[:16]

    def _ensure_ready(self) -> None:
        """Tables in place and the catalog current (a single-file database's tables moved in first). Checked
        once per process and store location."""
        marker = (str(self.path.resolve()), str(self.data_dir.resolve()))
        if marker in _READY:
            return
        self._ensure_tables()
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
        """Move the tables of the single-file design (rows in ``metrics.duckdb``) into the Delta tables, then
        (re)create the views. Built in a new file renamed over the old one: readers keep theirs meanwhile."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with self._open_catalog(read_only=True) as con:
                tables = [row[0] for row in con.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'").fetchall()]
                moved = {t: con.execute(f"SELECT * FROM {t}").df() for t in tables if t in SCHEMA}
            for table, frame in moved.items():
                if len(frame):
                    self._commit(table, frame)
        building = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with duckdb.connect(str(building)) as con:
                if isinstance(self.data_dir, StoragePath):  # the views are typed by SCHEMA, not by what
                    con.register_filesystem(binding_filesystem(self.data_dir))  # is stored: bound unread
                self.create_views(con)
            os.replace(building, self.path)
        finally:
            building.unlink(missing_ok=True)

    @contextmanager
    def _open_catalog(self, read_only: bool):
        """A connection to the catalog file, retried while another process holds it for writing."""
        deadline = time.monotonic() + self.max_wait_seconds
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                if isinstance(self.data_dir, StoragePath):  # the views read through fsspec
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
        """An exclusive lock among the processes of this machine, for the catalog rebuild and the conversion
        of an old store (never for a metric write); kept beside the catalog."""
        folder = self.path.parent / ".locks"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- writing -------------------------------------------------------------------------------------------

    def _commit(self, table: str, frame: pd.DataFrame | None, key: dict | None = None,
                metadata: dict | None = None, app: tuple[str, int] | None = None) -> None:
        """One Delta commit of ``frame``'s rows to ``table``: replacing ``key``'s rows when given, else
        appending (``app``: see :func:`~calmops_dagster.store.delta_tables.commit`)."""
        data = self._arrow(table, frame)
        metadata = {**(metadata or {}), **({REPLACES: json.dumps(key)} if key else {})}
        location = self.table_location(table)
        appending = key is None and app is None
        dt = self._open(table, latest=False, create=not appending)
        with delta_errors(table, location):
            if dt is None:  # no one has written the table: this append creates it, unless another does first
                if delta_tables.create_appending(location, data, configuration=_table_configuration(),
                                                 metadata=metadata):
                    return
                dt = self._open(table, latest=False)
            delta_tables.commit(dt, data, predicate=key and _predicate(key), app=app, metadata=metadata)

    def replace_block_rows(
        self, table: str, pipeline: str, block: str, rows: pd.DataFrame | list[dict], scope: dict | None = None,
        run_id: str | None = None,
    ) -> int:
        """Replace ``table``'s rows of (pipeline, block) by ``rows`` in one commit; return the count.

        ``scope`` gives the table's further key columns (``performance``: ``evaluated_on``), and is written
        into the new rows. Replacing by no rows empties the block. ``run_id`` (the Dagster run writing them)
        goes into a ``run_id`` column when the table has one. The rows replaced stay readable in
        ``<table>_history``, with ``replaced_at``.
        """
        import pandas as pd

        scope = scope or {}
        extra = key_of(table)[2:]
        if set(scope) != set(extra):
            raise ValueError(f"{table}: scope must give exactly {list(extra)}, got {sorted(scope)}")
        self._ensure_ready()
        frame = pd.DataFrame(rows).reset_index(drop=True)
        count = len(frame)
        if count:
            frame = frame.assign(pipeline=pipeline, block=block, **scope)
            if run_id is not None and "run_id" in columns(table):
                frame = frame.assign(run_id=run_id)
        key = dict(zip(key_of(table), (pipeline, block, *(scope[c] for c in extra)), strict=True))
        self._commit(table, frame, key)
        return count

    def append_rows(self, table: str, rows: pd.DataFrame | list[dict]) -> int:
        """Append rows to an event table (``quarantine``, ``breaker_events``...): one commit."""
        import pandas as pd

        if table not in APPEND_ONLY:
            raise ValueError(f"{table} is keyed by block: use replace_block_rows")
        frame = pd.DataFrame(rows)
        if not len(frame):
            return 0
        self._ensure_ready()
        self._commit(table, frame)
        return len(frame)

    # --- reading -------------------------------------------------------------------------------------------

    @contextmanager
    def connect(self, sql: str | None = None, pipeline: str | None = None):
        """An in-memory DuckDB connection with the tables as views over their live files (no file is opened).

        With ``sql``, only the tables it names are listed. With ``pipeline``, the views hold that pipeline's
        rows only and read only the files whose statistics may hold them. The views are made once per process
        (and store and pipeline), in a schema of their own; each connection lists every table's live files
        from its Delta log when it opens, into a variable its views read, so it sees the tables as they are
        then, and tables other processes created since."""
        self._ensure_tables()
        named = [t for t in views() if sql and re.search(rf"\b{t}\b", sql, re.IGNORECASE)] or views()
        tables = [t for t in named if not t.endswith(HISTORY)]
        schema = self._views_schema(pipeline)
        with self._memory() as con:
            with _VIEWS_LOCK:  # made once per process, shared by its connections (bound to no file: cheap)
                made = _VIEWS_MADE.setdefault(os.getpid(), set())
                missing = [v for v in named if (schema, v) not in made]
                if missing:
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                    for table in tables:
                        con.execute(f"SET VARIABLE {_files_variable(table)} = []")
                    self.create_views(con, missing, pipeline, schema=schema)
                    made.update((schema, v) for v in missing)
            self._list_files(con, tables, pipeline)
            con.execute(f"SET schema = '{schema}'")
            yield con

    def _read(self, sql: str, pipeline: str | None, read):
        """``read(con)`` on a connection (:meth:`connect`) with the views ``sql`` names; tried again when a
        vacuum removed a file between listing and reading it."""
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
        made, and their files listed, once."""
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

    def _read_head(self, pipeline: str) -> dict | None:
        try:
            return json.loads(self._breaker_head(pipeline).read_bytes())
        except FileNotFoundError:
            return None

    def breaker_state(self, pipeline: str):
        """The stored :class:`~calmops_dagster.store.breaker_state.BreakerState` of ``pipeline``: its head's, or
        the ``breaker_state`` row of a breaker last changed before heads existed (closed if none; whether
        there is such a row the Delta log's file statistics say, so a breaker never changed costs no query)."""
        head = self._read_head(pipeline)
        if head:
            return _state_from_row(_from_json(head["state"]))
        self._ensure_tables()
        dt = self._open("breaker_state")
        with delta_errors("breaker_state", self.table_location("breaker_state")):
            if dt is None or not delta_tables.live_files(dt, pipeline):
                return BreakerState()
        found = self.rows("SELECT * FROM breaker_state WHERE pipeline = ?", [pipeline], pipeline=pipeline)
        return _state_from_row(found[0] if found else None)

    def update_breaker(self, pipeline: str, transition, *, run_id: str | None = None, block: str | None = None,
                       step: str | None = None):
        """Apply ``transition(state) -> (state, event)`` and record it; never loses a concurrent transition.

        The pipeline's head (module docstring) is changed by :func:`update_atomically`, so each transition is
        applied to the state the previous one left, whichever machine wrote it; ``transition`` must only
        compute, as it may be called again when another writer got there first. Its ``breaker_events`` row
        is appended, and ``breaker_state`` set to the head's state once the head holds it (again, should a
        later transition's commit have come first). A transition whose rows its writer did not get to write
        (it died after changing the head) has them written by the next one.

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
        if outcome["previous"]:
            self._write_breaker_rows(pipeline, outcome["previous"])
        if outcome["head"]:
            self._write_breaker_rows(pipeline, outcome["head"])
        return outcome["state"], outcome["event"]

    def _write_breaker_rows(self, pipeline: str, head: dict) -> None:
        """The ``breaker_events`` row of the transition ``head`` holds, then ``breaker_state``'s row of
        ``pipeline`` := its state, each once: as a Delta application transaction numbered by the transition's
        sequence, so a transition's rows written by two writers (its own, and the next one's after it died)
        are one row, and a state never replaces the state of a later transition."""
        import pandas as pd

        self._ensure_ready()
        app = (f"calmops-breaker-{pipeline}", int(head["seq"][:20]))
        for table, row, key in (("breaker_events", head["event"], None),
                                ("breaker_state", head["state"], {"pipeline": pipeline})):
            self._commit(table, pd.DataFrame([{"pipeline": pipeline, **_from_json(row)}]), key, app=app)

    # --- compaction, archive and removal -------------------------------------------------------------------

    def compact(self, pipeline: str | None = None, days: float | None = None) -> dict[str, tuple[int, int]]:
        """Optimize every table (small files merged into larger ones, one commit each, readers unaffected),
        then vacuum it: files no version needs and whose removal is older than ``days`` (default:
        :func:`retention_days`) are deleted, so ``<table>_history`` keeps the rows replaced within them;
        log entries older than the table's log retention (the same days) are removed too.
        ``pipeline`` is accepted for the command's sake: Delta optimizes a table as a whole. Returns
        ``{table: (live files before, live files after)}``."""
        self._ensure_ready()
        hours = (days if days is not None else retention_days()) * 24
        result = {}
        for table in SCHEMA:
            dt = self._open(table)
            if dt is None:  # never written
                continue
            with delta_errors(table, self.table_location(table)):
                before = len(delta_tables.live_files(dt))
                dt.optimize.compact()
                dt.vacuum(retention_hours=int(hours), enforce_retention_duration=False, dry_run=False)
                dt.cleanup_metadata()  # log entries past delta.logRetentionDuration (commits skip it)
                result[table] = (before, len(delta_tables.live_files(dt)))
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
        """Delete every row of ``pipeline`` from every table (one commit each) and its breaker head."""
        self._ensure_ready()
        replaced = self._replaced_files()
        for table in SCHEMA:
            dt = self._open(table)
            if dt is not None:
                with delta_errors(table, self.table_location(table)):
                    dt.delete(_predicate({"pipeline": pipeline}))
            if table in replaced:
                with self._memory() as con:
                    kept = con.execute("SELECT * FROM read_parquet(?) WHERE pipeline IS DISTINCT FROM ?",
                                       [str(replaced[table]), pipeline]).df()
                self.write_replaced(table, kept)
        remove_tree(self.data_dir / BREAKER_HEADS / _part(pipeline))


def _schema_version() -> str:
    return hashlib.sha256(json.dumps(SCHEMA, sort_keys=True).encode()).hexdigest()[:16]


def _table_configuration() -> dict[str, str]:
    """Properties of a new table: its log and removed files kept as long as the history needs them."""
    days = retention_days()
    return {"delta.logRetentionDuration": f"interval {math.ceil(days)} days",
            "delta.deletedFileRetentionDuration": f"interval {math.ceil(days)} days"}


#: The columns of a Delta log's commits and checkpoints the catalog's views read.
_LOG_TYPES = {"add": "STRUCT(path VARCHAR)", "remove": 'STRUCT(path VARCHAR, "deletionTimestamp" BIGINT)',
              "commitInfo": f'STRUCT("timestamp" BIGINT, {REPLACES} VARCHAR)', "filename": "VARCHAR"}


def _no_rows(types: dict[str, str]) -> str:
    """A SELECT of no rows with the columns ``types`` names (``{column: DuckDB type}``)."""
    return "SELECT " + ", ".join(f'CAST(NULL AS {t}) AS "{c}"' for c, t in types.items()) + " WHERE false"


def _typed(source: str, types: dict[str, str]) -> str:
    """``source`` (a table function reading files, maybe none) with at least the columns ``types`` names,
    of those types: a reader of no files, or of files written before a column existed, still binds."""
    return f"{_no_rows(types)} UNION ALL BY NAME SELECT * FROM {source}"


def _casts(table: str, prefix: str = "") -> str:
    return ", ".join(f'CAST({prefix}"{c}" AS {t}) AS "{c}"' for c, t in _types(table).items())


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
