"""Every metric in one DuckDB file (``CALMOPS_HOME/metrics.duckdb``).

Tables (all carry ``pipeline`` and ``block``; see the README for every column):

- ``blocks``: one row per processed block: rows, source files, content hash.
- ``drift_results``: one row per feature and test, plus the ``__dataset__`` decision row.
- ``drift_summary``: the block's drift decision and why a challenger was (not) asked for.
- ``performance``: one row per model version, metric and data it was scored on.
- ``promotions``: every champion decision with its figures and reason.
- ``labels``: delayed labels: per block, how its rows met the label files (labelled, missing, duplicate
  and conflicting ids), and a ``__unmatched__`` row counting labels for rows never seen.
- ``quarantine``: every data file set aside, with the reason.
- ``breaker_state``: one row per pipeline: the circuit breaker (status, consecutive failures, reopen time).
- ``breaker_events``: every breaker transition (failure, success, opened, reset...) with its run id.

DuckDB lets one process write a file at a time and Dagster runs each run in its own process, so every
write is one short transaction on a fresh connection, retried with exponential backoff while another
process holds the lock. Writes for a (pipeline, block) *replace* that block's rows, so re-materializing a
partition never duplicates them.
"""

from __future__ import annotations

import os
import random
import time
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from calmops_dagster.store.breaker_state import BreakerState

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
        decided_at TIMESTAMPTZ, late BOOLEAN""",
    "labels": """
        pipeline VARCHAR, block VARCHAR, label_files VARCHAR, rows BIGINT, labelled BIGINT, missing BIGINT,
        duplicate_ids BIGINT, conflicting_ids BIGINT, unknown_ids BIGINT, bad_files BIGINT, complete BOOLEAN,
        computed_at TIMESTAMPTZ""",
    "quarantine": """
        pipeline VARCHAR, file VARCHAR, reason VARCHAR, content_hash VARCHAR, moved_to VARCHAR,
        quarantined_at TIMESTAMPTZ""",
    "breaker_state": """
        pipeline VARCHAR, status VARCHAR, consecutive_failures BIGINT, opened_at TIMESTAMPTZ,
        reopen_at TIMESTAMPTZ, last_reason VARCHAR, updated_at TIMESTAMPTZ""",
    "breaker_events": """
        pipeline VARCHAR, block VARCHAR, run_id VARCHAR, event VARCHAR, step VARCHAR, reason VARCHAR,
        consecutive_failures BIGINT, status VARCHAR, event_at TIMESTAMPTZ""",
}

#: Errors that go away when another connection closes: a file lock held by another process, a write
#: conflict, or (within one process, e.g. two sensors evaluated in threads of one code server) a connection
#: to the file open with the other read-only setting.
_LOCK_MARKERS = ("lock", "conflict", "could not set", "different configuration")


def _is_lock_error(exc: Exception) -> bool:
    return any(marker in str(exc).lower() for marker in _LOCK_MARKERS)


class MetricsStore:
    """Short, retried DuckDB transactions on one database file."""

    def __init__(self, path: str | os.PathLike, max_wait_seconds: float = 120.0):
        self.path = Path(path)
        self.max_wait_seconds = max_wait_seconds
        self._schema_ready = False

    @contextmanager
    def _connect(self, read_only: bool = False):
        """A connection, retried with jittered exponential backoff while another process holds the file."""
        deadline = time.monotonic() + self.max_wait_seconds
        delay = 0.05
        while True:
            try:
                if read_only and not self.path.exists():
                    con = duckdb.connect(":memory:")
                    self._create_tables(con)
                else:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
        try:
            if not read_only and not self._schema_ready:
                self._create_tables(con)
                self._schema_ready = True
            yield con
        finally:
            con.close()

    @staticmethod
    def _create_tables(con) -> None:
        """Create missing tables, and add columns a newer version introduced to existing ones."""
        for table, columns in SCHEMA.items():
            con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
            for column in columns.split(","):
                con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column.strip()}")

    def replace_block_rows(
        self, table: str, pipeline: str, block: str, rows: pd.DataFrame | list[dict], scope: dict | None = None
    ) -> int:
        """Replace ``table``'s rows of (pipeline, block) by ``rows`` in one transaction; return the count.

        ``scope`` narrows what is replaced to rows with these column values too (e.g. the ``performance``
        rows of one ``evaluated_on``), and is written into the new rows.
        """
        import pandas as pd

        scope = scope or {}
        frame = pd.DataFrame(rows)
        if len(frame):
            frame = frame.assign(pipeline=pipeline, block=block, **scope)
        where = " AND ".join(f"{column} = ?" for column in ["pipeline", "block", *scope])
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f"DELETE FROM {table} WHERE {where}", [pipeline, block, *scope.values()])
                if len(frame):
                    con.register("incoming", frame)
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return len(frame)

    def append_rows(self, table: str, rows: pd.DataFrame | list[dict]) -> int:
        """Append rows (for event logs such as ``quarantine``); one transaction."""
        import pandas as pd

        frame = pd.DataFrame(rows)
        if not len(frame):
            return 0
        with self._connect() as con:
            con.register("incoming", frame)
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
        return len(frame)

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """Run a read-only query and return a DataFrame (an empty schema when the file does not exist)."""
        with self._connect(read_only=True) as con:
            return con.execute(sql, params or []).df()

    def rows(self, sql: str, params: list | None = None) -> list[dict]:
        """Run a read-only query and return its rows as dicts (no pandas: for quick reads such as
        ``calmops list``); no rows when the file does not exist."""
        with self._connect(read_only=True) as con:
            return _dicts(con.execute(sql, params or []))

    # --- circuit breaker -----------------------------------------------------------------------------------

    def breaker_state(self, pipeline: str):
        """The stored :class:`~calmops_dagster.store.breaker_state.BreakerState` of ``pipeline`` (closed if none)."""
        try:
            found = self.rows("SELECT * FROM breaker_state WHERE pipeline = ?", [pipeline])
        except duckdb.CatalogException:  # a database written before the breaker existed
            found = []
        return _state_from_row(found[0] if found else None)

    def update_breaker(self, pipeline: str, transition, *, run_id: str | None = None, block: str | None = None,
                       step: str | None = None):
        """Apply ``transition(state) -> (state, event)`` and record it, in one transaction.

        A ``run_id`` already recorded is not counted again (the run-failure sensor and ``calmops run`` may
        both report the same run). Returns ``(state, event)``; ``event`` is ``None`` for such a repeat.
        """
        from datetime import UTC, datetime

        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                found = _dicts(con.execute("SELECT * FROM breaker_state WHERE pipeline = ?", [pipeline]))
                row = found[0] if found else None
                if run_id and con.execute("SELECT 1 FROM breaker_events WHERE pipeline = ? AND run_id = ?",
                                          [pipeline, run_id]).fetchone():
                    con.execute("ROLLBACK")
                    return _state_from_row(row), None
                state, event = transition(_state_from_row(row))
                now = datetime.now(UTC)
                con.execute("DELETE FROM breaker_state WHERE pipeline = ?", [pipeline])
                con.execute("INSERT INTO breaker_state VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [pipeline, state.status, state.consecutive_failures, state.opened_at,
                             state.reopen_at, state.last_reason, now])
                con.execute("INSERT INTO breaker_events BY NAME SELECT ? AS pipeline, ? AS block, ? AS run_id, "
                            "? AS event, ? AS step, ? AS reason, ? AS consecutive_failures, ? AS status, "
                            "? AS event_at", [pipeline, block, run_id, event, step, state.last_reason,
                                        state.consecutive_failures, state.status, now])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return state, event

    # --- archive and removal of one pipeline's rows (calmops delete) --------------------------------------

    def export_pipeline_rows(self, pipeline: str, folder: str | os.PathLike) -> dict[str, int]:
        """Write every table's rows of ``pipeline`` to ``folder/<table>.parquet``; return the row counts."""
        import pandas as pd

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        counts = {}
        for table in SCHEMA:
            try:
                frame = self.query(f"SELECT * FROM {table} WHERE pipeline = ?", [pipeline])
            except duckdb.CatalogException:
                frame = pd.DataFrame()
            frame.to_parquet(folder / f"{table}.parquet", index=False)
            counts[table] = len(frame)
        return counts

    def delete_pipeline_rows(self, pipeline: str) -> None:
        """Remove every row of ``pipeline`` from every table, in one transaction."""
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for table in SCHEMA:
                    con.execute(f"DELETE FROM {table} WHERE pipeline = ?", [pipeline])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise


def _dicts(cursor) -> list[dict]:
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def _state_from_row(row: dict | None) -> BreakerState:
    if row is None:
        return BreakerState()

    def when(value):  # DuckDB returns TIMESTAMPTZ as an aware datetime in the session's zone
        return None if value is None else value.astimezone(UTC)

    return BreakerState(status=row["status"], consecutive_failures=int(row["consecutive_failures"]),
                        opened_at=when(row["opened_at"]), reopen_at=when(row["reopen_at"]),
                        last_reason=row["last_reason"])
