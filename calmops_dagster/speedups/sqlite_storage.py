"""Dagster's embedded SQLite storage, with each database's connections kept open between statements.

Dagster's SQLite run, event-log and schedule storages create a SQLAlchemy engine, open a connection and (for
the event log) dispose of the engine again for every statement. A block's run stores about 60 events and
looks up its dynamic partition about 60 times, so making and tearing down engines was a large share of a
block's run (docs/speedups.md); the daemon's sensor ticks pay the same per statement.

These classes are Dagster's own storages, subclassed only in how a connection is obtained: one engine per
database file and process, whose pool keeps connections open. The files, tables, WAL journal, busy timeout
and migrations are Dagster's, so an existing home keeps its history. Engines belong to the storage object and
the process that made them: a forked child (the warm run launcher forks runs) makes its own and never uses or
closes its parent's connections.

Setting up a run's database is faster too, with the same result: Dagster creates its tables and stamps its
migration revision, reading every migration script twice on the way, and every other
process that opens the run's events reads them again to check the stamp. Here a new run database is a copy of
an empty one that Dagster set up once in this process, and a database already stamped with the newest
revision is left as it is. And the index's tables are looked for until found, then remembered: Dagster
checks that a table exists before every dynamic-partition lookup, with an engine of its own each time.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import closing, contextmanager
from functools import cache
from pathlib import Path

from alembic.script import ScriptDirectory
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sql import get_alembic_config
from dagster._core.storage.sqlite import create_db_conn_string
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine

from calmops_dagster.store.storage import create_exclusive

#: An empty run database (see :meth:`PooledSqliteEventLogStorage.empty_run_database`), once made.
_EMPTY_RUN_DATABASE: bytes | None = None

#: The event log has one database per run: engines kept for the most recently used ones (each holds one
#: open connection, since the event log serialises its statements).
MAX_EVENT_LOG_ENGINES = 32


class EnginesByDatabase:
    """SQLAlchemy engines by connection string, made on first use in this process, at most ``limit`` kept
    (the least recently used is disposed: only safe where no other thread can be using it)."""

    def __init__(self, limit: int = 1):
        self._limit = limit
        self._pid = os.getpid()
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, conn_string: str, **connect_args) -> Engine:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's connections stay the parent's
                for engine in self._engines.values():
                    engine.dispose(close=False)
                self._engines.clear()
                self._pid = os.getpid()
            engine = self._engines.pop(conn_string, None)
            if engine is None:  # connections cross threads, one thread at a time (the pool hands them out)
                engine = create_engine(conn_string, connect_args={"check_same_thread": False, **connect_args})
            self._engines[conn_string] = engine
            while len(self._engines) > self._limit:
                self._engines.popitem(last=False)[1].dispose()
            return engine

    def dispose(self) -> None:
        with self._lock:
            if self._pid == os.getpid():  # a forked child leaves its parent's connections alone
                for engine in self._engines.values():
                    engine.dispose()
            self._engines.clear()


class _OneEnginePerProcess:
    """For Dagster's single-database SQLite storages (``self._conn_string``): ``connect`` on one engine per
    process instead of a new engine per statement, and Dagster's set-up skipped for a database that has it."""

    #: The database's file name in ``base_dir`` (without ``.db``), and a table Dagster's set-up adds to it
    #: besides the migrations' (:meth:`from_local` checks both).
    DATABASE: str
    SET_UP_TABLE: str

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None):
        self._engines = EnginesByDatabase()
        super().__init__(conn_string, inst_data)

    @classmethod
    def from_local(cls, base_dir: str, inst_data: ConfigurableClassData | None = None):
        """Dagster's ``from_local``, except for a database already stamped with the newest migration revision
        and holding :attr:`SET_UP_TABLE`: that one is opened as it is. Dagster's set-up reads every migration
        script to learn the newest revision (for each of the run and schedule databases, each time an instance
        is made: every ``calmops`` command, every run worker)."""
        path = Path(base_dir) / f"{cls.DATABASE}.db"
        if _set_up(path, cls.SET_UP_TABLE):
            return cls(create_db_conn_string(base_dir, cls.DATABASE), inst_data)
        return super().from_local(base_dir, inst_data)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._engines.get(self._conn_string).connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self._engines.dispose()


class PooledSqliteRunStorage(_OneEnginePerProcess, SqliteRunStorage):
    """Dagster's SQLite run storage (``runs.db``) on one engine per process."""

    DATABASE, SET_UP_TABLE = "runs", "instance_info"


class PooledSqliteScheduleStorage(_OneEnginePerProcess, SqliteScheduleStorage):
    """Dagster's SQLite schedule storage (``schedules.db``: sensor and schedule ticks) on one engine per
    process."""

    DATABASE, SET_UP_TABLE = "schedules", "jobs"


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log (``index.db`` and one database per run) on one engine per database and
    process, for the :data:`MAX_EVENT_LOG_ENGINES` most recently used databases."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self._engines = EnginesByDatabase(limit=MAX_EVENT_LOG_ENGINES)  # before Dagster's set-up, which connects
        self._tables_present: set[str] = set()
        super().__init__(base_dir, inst_data)

    def has_table(self, table_name: str) -> bool:
        """Dagster's check that the index has a table, remembered once the table is there. Dagster asks before
        every dynamic-partition lookup and asset-check event (about 70 times per block, an engine per call);
        migrations add tables and never drop them while a process runs, and ``wipe``
        forgets. (Dagster asks inside index transactions, holding ``_db_lock``: so this takes no lock.)"""
        if table_name not in self._tables_present and super().has_table(table_name):
            self._tables_present.add(table_name)
        return table_name in self._tables_present

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:  # as Dagster's: one statement at a time, so an evicted engine is never in use
            engine = self._engines.get(self.conn_string_for_shard(shard), timeout=SQLITE_BUSY_TIMEOUT_SECONDS)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _initdb(self, engine: Engine, for_index_shard: bool = False) -> None:
        """Dagster's set-up of a database, without its cost where the outcome is known: a new run database is
        created as a copy of an empty one (:meth:`empty_run_database`), and one stamped with the newest
        migration revision needs nothing. Anything else (the index, an older database) is Dagster's."""
        path = Path(engine.url.database)
        new_run_database = path.stem != INDEX_SHARD_NAME and not for_index_shard and not path.exists()
        if new_run_database and create_exclusive(path, self.empty_run_database()):
            return
        if _set_up(path):
            return
        super()._initdb(engine, for_index_shard)

    def empty_run_database(self) -> bytes:
        """The bytes of a run database as Dagster's own set-up leaves it (tables, WAL journal mode, migration
        stamp), made once per process (and before forking, by the warm run launcher's process) in a temporary
        folder and checkpointed, so that the file holds everything."""
        global _EMPTY_RUN_DATABASE
        if _EMPTY_RUN_DATABASE is None:
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "empty.db")
                engine = create_engine(f"sqlite:///{path}")
                try:
                    super()._initdb(engine)
                    with engine.connect() as conn:
                        conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
                finally:
                    engine.dispose()
                _EMPTY_RUN_DATABASE = Path(path).read_bytes()
                _newest_revision()
        return _EMPTY_RUN_DATABASE

    def wipe(self) -> None:
        with self._db_lock:  # the run databases' files are deleted: no connection may stay open on them
            self._engines.dispose()
            self._tables_present.clear()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._engines.dispose()


class PooledSqliteStorage(DagsterSqliteStorage):
    """The local instance's storage (``storage: custom`` in its ``dagster.yaml``): Dagster's SQLite storage in
    the same folders under ``base_dir`` as ``storage: sqlite``, with the pooled storages above."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self.base_dir = base_dir
        self._run_storage = PooledSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = PooledSqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: dict) -> PooledSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)


def _set_up(path: Path, table: str | None = None) -> bool:
    """Whether the SQLite database ``path`` exists, is stamped with the newest migration revision and (when
    given) holds ``table``; read with Python's sqlite3, read-only: no engine, no migration script."""
    if not path.is_file():
        return False
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_SECONDS)) as con:
            stamp = con.execute("SELECT version_num FROM alembic_version").fetchall()
            has_table = table is None or con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                                     "name = ?", [table]).fetchone() is not None
    except sqlite3.Error:  # no alembic_version table, unreadable: Dagster's set-up decides
        return False
    return stamp == [(_newest_revision(),)] and has_table


@cache
def _newest_revision() -> str:
    """The head of Dagster's event-log migrations (read from its scripts once per process)."""
    return ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__)).as_revision_number("head")
