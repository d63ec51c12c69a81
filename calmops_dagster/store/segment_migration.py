"""Convert a metric store of Parquet segments (the format before Delta Lake) into Delta tables, every row kept.

The earlier format kept each write of a table as an immutable Parquet file, a *segment*, under
``metrics/<table>/<pipeline>/<block>/<seq>.parquet`` (and ``metrics/<table>/_migrated/`` for rows of the
single-file design before it), with hidden columns ``_seq`` (the write's sequence), ``_row`` and
``_tombstone``; ``metrics/<table>/_schema.parquet`` typed it. The newest write of each key won; the rows it
replaced were the table's history. Here, per table:

1. the rows the segments' views showed (the newest write of each key, every row of an event table) are
   appended to the Delta table in one commit marked ``calmops_migrated`` (a commit found marked is not made
   again, so a conversion cut short is finished by the next one);
2. the rows later writes had replaced go to ``<table>/_replaced.parquet`` with their ``replaced_at``, where
   ``<table>_history`` reads them;
3. the segments are deleted, ``_schema.parquet`` last (its presence is what marks a table to convert).

It runs on first open of such a store (:meth:`~calmops_dagster.store.metrics_store.MetricsStore`) or with
``calmops migrate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from calmops_dagster.store.storage import Location

if TYPE_CHECKING:
    from calmops_dagster.store.metrics_store import MetricsStore

#: The schema file of a table in segments: present until the table is converted.
SEGMENT_SCHEMA_FILE = "_schema.parquet"
#: The commit metadata entry of the commit holding a table's converted rows.
MIGRATED = "calmops_migrated"


def has_segments(data_dir: Location) -> bool:
    """Whether some table under ``data_dir`` is still in segments (one listing)."""
    return any(True for _ in data_dir.glob(f"*/{SEGMENT_SCHEMA_FILE}"))


def _segments(root: Location) -> list[Location]:
    """The segment files of the table at ``root``: every Parquet file in a subfolder other than the log."""
    prefix = len(str(root)) + 1
    return [path for path in root.rglob("*.parquet")
            if "/" in str(path)[prefix:] and not str(path)[prefix:].startswith("_delta_log/")]


def _segment_sql(store: MetricsStore, table: str, files: list[Location], history: bool) -> str:
    """The rows the segment store showed of ``table`` (``history``: the rows later writes replaced, with
    ``replaced_at``), as its views computed them."""
    from calmops_dagster.store.metrics_store import APPEND_ONLY, _sql_text, key_of

    root = store.table_location(table)
    listed = ", ".join(_sql_text(str(f)) for f in [root / SEGMENT_SCHEMA_FILE, *files])
    rows = f"SELECT DISTINCT ON (_seq, _row) * FROM read_parquet([{listed}], union_by_name = true)"
    if table in APPEND_ONLY:
        return rows
    key = ", ".join(key_of(table))
    if not history:
        return (f"SELECT * FROM (SELECT *, max(_seq) OVER (PARTITION BY {key}) AS _newest FROM ({rows})) "
                f"WHERE _seq = _newest AND NOT coalesce(_tombstone, false)")
    same = " AND ".join(f"r.{k} IS NOT DISTINCT FROM w.{k}" for k in key_of(table))
    return (f"WITH r AS ({rows}), w AS (SELECT {key}, _seq, lead(_seq) OVER (PARTITION BY {key} ORDER BY _seq) "
            f"AS _next FROM (SELECT DISTINCT {key}, _seq FROM r)) "
            f"SELECT r.*, to_timestamp(CAST(left(w._next, 20) AS BIGINT) / 1e9) AS replaced_at "
            f"FROM r JOIN w ON {same} AND r._seq = w._seq WHERE w._next IS NOT NULL AND NOT coalesce(r._tombstone, false)")


def migrate(store: MetricsStore) -> dict[str, tuple[int, int]]:
    """Convert every table of ``store`` still in segments; return ``{table: (rows, replaced rows)}``.

    Held under the store's conversion lock (one converting process per machine)."""
    from calmops_dagster.store import delta_tables
    from calmops_dagster.store.metrics_store import APPEND_ONLY, SCHEMA, columns
    from calmops_dagster.store.storage import StoragePath

    converted = {}
    with store._file_lock("migrate"):
        for table in SCHEMA:
            root = store.table_location(table)
            if not (root / SEGMENT_SCHEMA_FILE).exists():
                continue
            files = _segments(root)
            dt = store._open(table, create=True)
            with delta_tables.delta_errors(table, root):
                done = any(MIGRATED in entry for entry in dt.history())
            with store._memory() as con:
                current = con.execute(_segment_sql(store, table, files, history=False)).df()
                replaced = (con.execute(_segment_sql(store, table, files, history=True)).df()
                            if table not in APPEND_ONLY else None)
            current = current[[c for c in columns(table) if c in current.columns]]
            if not done:
                store._commit(table, current, metadata={MIGRATED: "segments"})
            if replaced is not None:
                store.write_replaced(table, replaced[[c for c in [*columns(table), "replaced_at"]
                                                      if c in replaced.columns]])
            for path in files:
                path.unlink(missing_ok=True)
            if not isinstance(root, StoragePath):
                for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "_delta_log"):
                    _remove_empty(folder)
            (root / SEGMENT_SCHEMA_FILE).unlink(missing_ok=True)
            converted[table] = (len(current), 0 if replaced is None else len(replaced))
    return converted


def _remove_empty(folder) -> None:
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()
