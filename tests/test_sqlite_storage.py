"""The local instance's SQLite storage: Dagster's files and tables, with connections kept between statements.

An existing home written with Dagster's own ``storage: sqlite`` keeps its runs and events when it is opened
with the pooled storage; threads share one engine safely; a forked child never uses its parent's engine;
the event log keeps engines for a bounded number of run databases.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import yaml
from dagster import DagsterInstance, in_process_executor, job, op

from calmops_dagster.orchestration.instance import prepare_instance
from calmops_dagster.speedups import sqlite_storage
from calmops_dagster.speedups.sqlite_storage import (
    EnginesByDatabase,
    PooledSqliteEventLogStorage,
    PooledSqliteRunStorage,
)
from calmops_dagster.store.paths import CalmOpsHome


@op
def say_hello(context):
    context.log.info("hello from the op")


@job(executor_def=in_process_executor)
def hello_job():
    say_hello()


def local_home(tmp_path: Path, monkeypatch) -> CalmOpsHome:
    monkeypatch.setenv("CALMOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = CalmOpsHome.from_env()
    prepare_instance(home)
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))  # restored by monkeypatch afterwards
    return home


def test_a_home_written_by_dagsters_sqlite_storage_keeps_its_history(tmp_path, monkeypatch):
    home = local_home(tmp_path, monkeypatch)
    config = home.dagster_home / "dagster.yaml"
    pooled_yaml = config.read_text()
    config.write_text(f"storage:\n  sqlite:\n    base_dir: {home.dagster_home}\n")  # Dagster's own, same folders
    with DagsterInstance.get() as instance:
        assert type(instance.event_log_storage) is not PooledSqliteEventLogStorage
        old_run = hello_job.execute_in_process(instance=instance).run_id
    config.write_text(pooled_yaml)
    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PooledSqliteRunStorage)
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert instance.get_run_by_id(old_run).is_success
        assert any(e.user_message == "hello from the op" for e in instance.all_logs(old_run))
        new_run = hello_job.execute_in_process(instance=instance).run_id
    config.write_text(f"storage:\n  sqlite:\n    base_dir: {home.dagster_home}\n")  # and back again
    with DagsterInstance.get() as instance:
        assert {r.run_id for r in instance.get_runs()} == {old_run, new_run}
        assert any(e.user_message == "hello from the op" for e in instance.all_logs(new_run))


def test_the_local_instance_names_the_pooled_storage_in_its_own_folder(tmp_path, monkeypatch):
    """The storage's folder is written into ``dagster.yaml``, so the instance opens from its folder alone
    (``DagsterInstance.from_config``, no ``DAGSTER_HOME``), and a moved home is pointed at its new place."""
    home = local_home(tmp_path, monkeypatch)
    monkeypatch.delenv("DAGSTER_HOME")
    with DagsterInstance.from_config(str(home.dagster_home)) as instance:
        assert isinstance(instance.run_storage, PooledSqliteRunStorage)
        run_id = hello_job.execute_in_process(instance=instance).run_id
    moved = CalmOpsHome(tmp_path / "moved")
    (tmp_path / "home").rename(moved.root)
    prepare_instance(moved)
    config = yaml.safe_load((moved.dagster_home / "dagster.yaml").read_text())
    assert config["storage"]["custom"]["config"]["base_dir"] == str(moved.dagster_home.resolve())
    with DagsterInstance.from_config(str(moved.dagster_home)) as instance:
        assert instance.get_run_by_id(run_id).is_success


def test_threads_write_runs_events_and_partitions_through_shared_engines(tmp_path, monkeypatch):
    """As the daemon's sensor threads do: runs, events and dynamic partitions written from several threads
    at once (each thread's statements on connections the engines hand out one thread at a time)."""
    local_home(tmp_path, monkeypatch)
    errors, run_ids = [], []
    with DagsterInstance.get() as instance:
        def work(worker: int):
            try:
                for n in range(5):
                    run = instance.create_run_for_job(hello_job, tags={"worker": str(worker)})
                    instance.report_engine_event(f"worker {worker} run {n}", run)
                    instance.add_dynamic_partitions("threads", [f"{worker}-{n}"])
                    assert instance.has_dynamic_partition("threads", f"{worker}-{n}")
                    run_ids.append(run.run_id)
            except Exception as exc:  # noqa: BLE001 - the assertion below reports it
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(set(run_ids)) == 20 and len(instance.get_runs()) == 20
        assert len(instance.get_dynamic_partitions("threads")) == 20
        logs = {run_id: [e.message for e in instance.all_logs(run_id)] for run_id in run_ids}
        assert all(any(m.startswith("worker ") for m in messages) for messages in logs.values()), logs


def test_a_forked_child_makes_its_own_engine(tmp_path):
    engines = EnginesByDatabase()
    conn_string = f"sqlite:///{tmp_path / 'a.db'}"
    parent_engine = engines.get(conn_string)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new engine, and the parent's is left alone
        child_engine = engines.get(conn_string)
        os.write(write, b"new" if child_engine is not parent_engine else b"same")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 10) == b"new"
    assert engines.get(conn_string) is parent_engine


def test_the_event_log_keeps_engines_for_the_most_recent_run_databases(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_storage, "MAX_EVENT_LOG_ENGINES", 3)
    storage = PooledSqliteEventLogStorage(str(tmp_path / "events"))
    for run in range(5):
        with storage.run_connection(f"run{run}"):
            pass
    kept = list(storage._engines._engines)
    assert len(kept) == 3
    assert kept[-1].endswith("run4.db") and not any(k.endswith("run0.db") for k in kept)
    storage.wipe()
    assert not list((tmp_path / "events").glob("run*.db"))
    with storage.run_connection("run9"):  # usable after the wipe
        pass
    storage.dispose()


def _layout(path: Path) -> tuple:
    """A SQLite database's tables and indexes, journal mode and migration stamp."""
    import sqlite3

    with sqlite3.connect(path) as con:
        return (sorted(con.execute("SELECT type, name, sql FROM sqlite_master").fetchall()),
                con.execute("PRAGMA journal_mode").fetchone(),
                con.execute("SELECT version_num FROM alembic_version").fetchall())


def test_a_run_database_is_set_up_as_dagster_sets_it_up(tmp_path, monkeypatch):
    """A new run's database is a copy of an empty one Dagster set up in this process; it has the tables,
    indexes, journal mode and migration stamp of one Dagster sets up itself, and Dagster reads its events."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    local_home(tmp_path, monkeypatch)
    with DagsterInstance.get() as instance:
        run_id = hello_job.execute_in_process(instance=instance).run_id
        runs_folder = Path(instance.event_log_storage._base_dir)
    assert (runs_folder / f"{run_id}.db").is_file() and sqlite_storage._EMPTY_RUN_DATABASE is not None
    with SqliteEventLogStorage(str(tmp_path / "dagster")).run_connection("another-run"):
        pass
    assert _layout(runs_folder / f"{run_id}.db") == _layout(tmp_path / "dagster" / "another-run.db")
    events = SqliteEventLogStorage(str(runs_folder)).get_logs_for_run(run_id)
    assert any(e.user_message == "hello from the op" for e in events)


def test_the_index_is_asked_about_a_table_until_it_is_there_then_never_again(tmp_path, monkeypatch):
    """Dagster's ``has_table`` makes an engine per call; the pooled event log asks it until the table exists,
    then remembers. A table created later (an ``instance migrate``) is found at the next question."""
    from dagster._core.storage.event_log.sqlite import sqlite_event_log
    from sqlalchemy import text

    storage = PooledSqliteEventLogStorage(str(tmp_path / "events"))
    engines = []
    real_create_engine = sqlite_event_log.create_engine
    monkeypatch.setattr(sqlite_event_log, "create_engine", lambda *a, **k: engines.append(a) or real_create_engine(*a, **k))
    assert all(storage.has_table("dynamic_partitions") for _ in range(5))
    assert len(engines) == 1
    assert not storage.has_table("added_later") and not storage.has_table("added_later")
    assert len(engines) == 3  # an absent table is asked about every time
    with storage.index_connection() as conn:
        conn.execute(text("CREATE TABLE added_later (id INTEGER)"))
    assert storage.has_table("added_later") and storage.has_table("added_later")
    assert len(engines) == 4
    storage.dispose()


def test_run_and_schedule_databases_already_set_up_are_opened_without_dagsters_set_up(tmp_path, monkeypatch):
    """A database stamped with the newest migration revision (and holding its set-up table) is opened as it is;
    a missing one, or one stamped with an older revision, gets Dagster's own set-up."""
    import sqlite3

    from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
    from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage

    from calmops_dagster.speedups.sqlite_storage import PooledSqliteScheduleStorage

    set_ups = []
    for base in (SqliteRunStorage, SqliteScheduleStorage):
        real = base.from_local.__func__
        monkeypatch.setattr(base, "from_local", classmethod(
            lambda cls, base_dir, inst_data=None, real=real: set_ups.append(cls.DATABASE) or real(cls, base_dir, inst_data)))
    folder = str(tmp_path / "storage")
    PooledSqliteRunStorage.from_local(folder).dispose()  # new: Dagster's set-up
    PooledSqliteScheduleStorage.from_local(folder).dispose()
    assert set_ups == ["runs", "schedules"]
    runs = PooledSqliteRunStorage.from_local(folder)  # set up: opened as it is
    assert runs.get_runs() == [] and PooledSqliteScheduleStorage.from_local(folder).all_instigator_state() == []
    runs.dispose()
    assert set_ups == ["runs", "schedules"]
    with sqlite3.connect(tmp_path / "storage" / "runs.db") as con:
        con.execute("UPDATE alembic_version SET version_num = 'an-older-revision'")
    PooledSqliteRunStorage.from_local(folder).dispose()
    assert set_ups == ["runs", "schedules", "runs"]
