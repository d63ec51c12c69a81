"""Delta Lake tables under the storage root, through ``deltalake`` (delta-rs): commits, the live files, errors.

One metric table is one Delta table at ``<storage root>/metrics/<table>``. What this module adds to delta-rs:

- :func:`commit`: one atomic commit (an append, or an overwrite whose predicate names the rows it replaces),
  retried with backoff while other writers' commits conflict with it, until :data:`COMMIT_DEADLINE_SECONDS`;
  a write is never dropped silently. On S3 delta-rs commits with conditional PUTs (``conditional_put:
  etag``): no lock service and no file lock.
- :func:`live_files`: the Parquet files of a table's current version, read from its Delta log by a
  :class:`~deltalake.DeltaTable` kept per process and brought up to date incrementally (on S3, one listing
  of the log per read), optionally only those whose statistics may hold one pipeline's rows.
- :func:`delta_errors`: what delta-rs raises for a table written by a newer Delta version, a log it cannot
  read or a store that is gone, as one line naming the table and what to do.

delta-rs starts a runtime (threads) on first use, which does not survive ``fork``: a process that touched it
must start others with ``spawn`` (:mod:`calmops_dagster.speedups` forks only from a process that never did).
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

from calmops_dagster.errors import CalmOpsError, StoreUnavailableError
from calmops_dagster.store.storage import Location, StoragePath

#: How long :func:`commit` retries a commit that conflicts with other writers' before it gives up (and raises).
COMMIT_DEADLINE_SECONDS = 300.0
#: Conflicting commits retried by this process (figures for benchmarks; a retry is never a lost write).
RETRIES = {"commits": 0, "retries": 0}
_TABLES: dict[tuple[int, str], object] = {}
_TABLES_LOCK = threading.Lock()
_COMMIT_LOCKS: dict[int, threading.Lock] = {}
#: The processes that opened a Delta table (and so started delta-rs's runtime).
_USED_BY: set[int] = set()


class MetricTableError(CalmOpsError):
    """A metric table that cannot be read or written as it is (newer format, unreadable log...)."""


def used_in_this_process() -> bool:
    """Whether this process has used delta-rs (opened a table): then it must not ``fork`` without ``exec``,
    as a forked child would hang on the runtime it inherits half-copied."""
    return os.getpid() in _USED_BY


def table_uri(location: Location) -> str:
    """The URI delta-rs opens ``location`` by: an absolute local path, or ``s3://bucket/key``."""
    if isinstance(location, StoragePath):
        return f"s3://{location.path}"
    return str(Path(location).resolve())


def storage_options(location: Location) -> dict[str, str] | None:
    """delta-rs's client settings for ``location``: for S3, taken from the same environment variables as the
    rest of the storage seam (endpoint, region, credentials), with conditional PUTs for commits and the
    seam's bounded retries."""
    if not isinstance(location, StoragePath):
        return None
    from calmops_dagster.store.object_store import store_attempts

    env = os.environ
    options = {"AWS_REGION": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
               "conditional_put": "etag", "max_retries": str(store_attempts() - 1), "retry_timeout": "30s"}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if env.get(name):
            options[name] = env[name]
    return options


@contextmanager
def delta_errors(name: str, location: Location):
    """Turn delta-rs's failures on the table ``name`` at ``location`` into one line saying what to do:
    :class:`~calmops_dagster.errors.StoreUnavailableError` when the store itself failed, else
    :class:`MetricTableError`."""
    from deltalake.exceptions import DeltaError, DeltaProtocolError

    try:
        yield
    except (CalmOpsError, FileNotFoundError):
        raise
    except (DeltaError, OSError, ValueError) as exc:
        text, full = _one_line(exc), _one_line(exc, limit=None)
        if isinstance(exc, DeltaProtocolError) or _NEWER.search(text):
            raise MetricTableError(
                f"metric table {name} ({table_uri(location)}) was written by a newer Delta Lake version than "
                f"deltalake {_version()} reads ({text}); upgrade calmops-dagster, or have that writer keep to "
                "the table's protocol") from None
        if isinstance(location, StoragePath) and (failure := _store_failure(full)):
            raise StoreUnavailableError(f"{_describe(location)}: metric table {name}: {failure}") from None
        if isinstance(exc, (DeltaError, OSError)):
            raise MetricTableError(
                f"metric table {name} ({table_uri(location)}): its Delta log cannot be read ({text}); restore "
                "the damaged commit file under _delta_log from a backup, or delete it if it is the newest one "
                "(the table goes back to its previous version)") from None
        raise


#: How delta-rs words a table whose protocol (reader or writer version, table features) it does not support.
_NEWER = re.compile(r"unsupported.*feature|feature.*not supported|reader version|writer version|"
                    r"minReaderVersion|minWriterVersion", re.IGNORECASE)
#: Terminal colour codes in delta-rs's error text.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Where delta-rs's error text turns into a backtrace.
_BACKTRACE = re.compile(r"\s+0: (<unknown>|\S+::)")


#: What delta-rs's S3 client says when the store itself failed, and the words this module says it in.
_STORE_FAILURES = (("nosuchbucket", "the bucket does not exist"), ("connection refused", "cannot connect"),
                   ("error sending request", "cannot connect"), ("dns error", "cannot connect"),
                   ("timed out", "no answer, timed out"), ("timeout", "no answer, timed out"),
                   ("accessdenied", "access refused"), ("invalidaccesskeyid", "access refused"),
                   ("status: 403", "access refused"), ("slowdown", "unavailable"), ("status: 503", "unavailable"),
                   ("status: 500", "unavailable"))


def _store_failure(text: str) -> str | None:
    """What failed, in a few words, when delta-rs's error ``text`` is a failure of the store itself."""
    lowered = text.lower()
    return next((words for marker, words in _STORE_FAILURES if marker in lowered), None)


def _describe(location: StoragePath) -> str:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    bucket = location.path.split("/")[0]
    configured = os.environ.get("CALMOPS_STORAGE_URL", "").strip().rstrip("/")
    url = configured if configured.partition("://")[2].split("/")[0] == bucket else f"s3://{bucket}"
    return f"object store {url} (endpoint {endpoint})"


def _one_line(error: BaseException, limit: int | None = 300) -> str:
    text = " ".join(_ANSI.sub("", _BACKTRACE.split(str(error), maxsplit=1)[0]).split())
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def _version() -> str:
    import deltalake

    return deltalake.__version__


#: deltalake's names of the DuckDB column types the metric tables use.
DELTA_TYPES = {"VARCHAR": "string", "BIGINT": "long", "DOUBLE": "double", "BOOLEAN": "boolean",
               "TIMESTAMPTZ": "timestamp"}


def delta_schema(types: dict[str, str]):
    """A Delta schema of ``{column: DuckDB type}`` (every column nullable)."""
    from deltalake import Field, Schema
    from deltalake.schema import PrimitiveType

    return Schema([Field(name, PrimitiveType(DELTA_TYPES[kind]), nullable=True) for name, kind in types.items()])


def open_table(location: Location, create_schema=None, configuration: dict | None = None, latest: bool = True):
    """This process's :class:`~deltalake.DeltaTable` at ``location``, brought up to its latest version (with
    ``latest=False``, as this process last saw it: a writer need not ask, delta-rs checks its commit against the
    commits it missed); ``None`` when there is no table there. With ``create_schema`` (a Delta schema) a
    missing table is created (of racing creators one commits version 0, the others open it)."""
    from deltalake import DeltaTable, write_deltalake
    from deltalake.exceptions import TableNotFoundError

    uri, options = table_uri(location), storage_options(location)
    key = (os.getpid(), uri)
    _USED_BY.add(os.getpid())
    with _TABLES_LOCK:
        table = _TABLES.get(key)
    if table is not None:
        if latest:
            table.update_incremental()
        return table
    try:
        table = DeltaTable(uri, storage_options=options)
    except TableNotFoundError:
        if create_schema is None:
            return None
        try:  # an empty write creates it: on S3 half the requests of DeltaTable.create, which re-reads it
            write_deltalake(uri, _empty(create_schema), mode="error", configuration=configuration,
                            storage_options=options)
        except Exception:  # another process created it first: open theirs
            if not DeltaTable.is_deltatable(uri, storage_options=options):
                raise
        table = DeltaTable(uri, storage_options=options)
    with _TABLES_LOCK:
        _TABLES[key] = table
    return table


def create_appending(location: Location, data, *, configuration: dict | None = None,
                     metadata: dict | None = None) -> bool:
    """Create the table at ``location`` by appending ``data`` (a pyarrow table) as its version 0: one commit,
    no empty one before it. ``False`` when a table was there already (nothing committed: the caller commits
    to it). Only for appends: of writers racing to create one table, delta-rs commits a loser's creation as the
    next version, its rows appended (never dropped), so a write that replaces rows creates the table empty
    first (:func:`open_table`) and replaces in a commit of its own."""
    from deltalake import CommitProperties, DeltaTable, PostCommitHookProperties, write_deltalake

    uri, options = table_uri(location), storage_options(location)
    _USED_BY.add(os.getpid())
    try:
        write_deltalake(uri, data, mode="error", configuration=configuration, storage_options=options,
                        post_commithook_properties=PostCommitHookProperties(cleanup_expired_logs=False),
                        commit_properties=CommitProperties(custom_metadata=metadata))
    except Exception:
        if not DeltaTable.is_deltatable(uri, storage_options=options):
            raise
        return False
    return True


def _empty(schema):
    """An Arrow table of no rows with the columns of ``schema`` (a Delta schema); arro3's, as deltalake's
    own, so creating a table needs no pyarrow."""
    from arro3.core import Table

    return Table.from_batches([], schema=schema.to_arrow())


def forget_tables() -> None:
    """Drop this process's open tables (they are opened again, from the log, when next used)."""
    with _TABLES_LOCK:
        _TABLES.clear()


def commit(table, data, *, predicate: str | None = None, metadata: dict[str, str] | None = None,
           app: tuple[str, int] | None = None) -> bool:
    """Append ``data`` (a pyarrow table) to ``table``, or with ``predicate`` replace the rows it matches by
    ``data``: one commit either way. New columns of ``data`` are added to the table's schema. A commit that
    conflicts with another writer's is tried again on the new version (backoff with jitter) until
    :data:`COMMIT_DEADLINE_SECONDS`, then raises: never dropped.

    ``app`` (an application id and a version) makes the write idempotent, as Delta's application
    transactions do: it is committed with the table's version of that id, and not made (``False``) when the
    table already holds that version or a later one, even when another writer commits it at the same moment
    (Delta refuses the second of two concurrent commits of one id; the retry finds it done)."""
    from deltalake import CommitProperties, PostCommitHookProperties, Transaction, write_deltalake
    from deltalake.exceptions import CommitFailedError

    deadline = time.monotonic() + COMMIT_DEADLINE_SECONDS
    delay = 0.02
    # the checkpoint every 100 commits, but not the cleanup of expired log entries, which lists the whole
    # log after every commit: ``calmops compact`` cleans the log up (``DeltaTable.cleanup_metadata``)
    hooks = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)
    RETRIES["commits"] += 1
    with _commit_lock(table):  # this process's threads share the table object: one commit at a time on it
        while True:
            if app is not None:
                table.update_incremental()
                if (table.transaction_version(app[0]) or -1) >= app[1]:
                    return False
            try:
                write_deltalake(table, data, mode="overwrite" if predicate else "append", predicate=predicate,
                                schema_mode="merge", post_commithook_properties=hooks,
                                commit_properties=CommitProperties(
                                    custom_metadata=metadata,
                                    app_transactions=[Transaction(app_id=app[0], version=app[1])] if app else None))
                return True
            except CommitFailedError:
                if time.monotonic() > deadline:
                    raise
                RETRIES["retries"] += 1
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
            table.update_incremental()


def _commit_lock(table) -> threading.Lock:
    with _TABLES_LOCK:
        return _COMMIT_LOCKS.setdefault(id(table), threading.Lock())


def live_files(table, pipeline: str | None = None) -> list[str]:
    """The URIs of ``table``'s current Parquet files; with ``pipeline``, only those whose column statistics
    say they may hold that pipeline's rows."""
    return [uri for uri, _, _ in live_file_facts(table, pipeline)]


def live_file_facts(table, pipeline: str | None = None) -> list[tuple[str, int, int]]:
    """``(uri, size in bytes, modification time in ms since the epoch)`` of each of :func:`live_files`, as
    the Delta log records them (a reader need not ask the store)."""
    actions = table.get_add_actions(flatten=True)  # an Arrow table of arro3's: no pyarrow needed to read it
    paths = actions.column("path").to_pylist()
    facts = zip(paths, actions.column("size_bytes").to_pylist(), _epoch_ms(actions.column("modification_time")),
                strict=True)
    if pipeline is not None and "min.pipeline" in actions.column_names:
        low, high = actions.column("min.pipeline").to_pylist(), actions.column("max.pipeline").to_pylist()
        facts = [f for f, lo, hi in zip(facts, low, high, strict=True)
                 if lo is None or hi is None or lo <= pipeline <= hi]
    root = table.table_uri.rstrip("/")
    if root.startswith("file://"):
        root = root.removeprefix("file://")
    # delta-rs percent-encodes the table's URI (``with%20space``) and the log its paths: the readers need the names
    return [(unquote(f"{root}/{path}"), size, modified) for path, size, modified in facts]


def _epoch_ms(column) -> list[int]:
    """A column of times (deltalake gives them as timestamps or as ms since the epoch) as ms since the epoch."""
    return [value if isinstance(value, int) else int(value.timestamp() * 1000) for value in column.to_pylist()]
