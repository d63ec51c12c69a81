"""S3 for DuckDB's reads of metric tables' files: what a HEAD said about a write-once object is asked once.

DuckDB reads a Parquet file through fsspec with four HEAD requests (its glob, ``open``, ``size`` and
``modified`` each ask for the object's info) before the range GETs of its data, and it asks again in every
query. A block's run makes about fifteen queries over the same files, so on S3 most of its requests were
HEADs of objects that cannot have changed: a Delta table's data file is written once under a unique name and
never rewritten (optimize writes new files; vacuum deletes old ones). Its info is therefore kept for the life
of the process, and a deleted file fails its GET as before (the store's readers retry a query whose file
vanished). The live files' sizes and times are taken from the Delta log (:meth:`WriteOnceReadsS3.remember`),
so even the first read of a data file sends no HEAD.

A table's ``_replaced.parquet`` is rewritten only when it is outdated (checked once per process,
``MetricsStore._ensure_tables``), by a conversion or a pipeline's deletion, which tell this filesystem to ask
again (:meth:`WriteOnceReadsS3.forget`).
This filesystem is only handed to DuckDB: the stores' own listings, reads and writes keep using a filesystem
without caches, so files that other processes write are always seen.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, datetime

from calmops_dagster.store.object_store import ObjectStoreFileSystem

#: How many objects' info a process keeps (a few hundred bytes each).
MAX_KNOWN = 50_000


class WriteOnceReadsS3(ObjectStoreFileSystem):
    """The seam's S3 filesystem (its retries and failures) whose ``info`` of a Parquet object under a
    write-once prefix (see :meth:`add_write_once_prefix`) is fetched once and then answered from memory."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._prefixes: set[str] = set()
        self._known: OrderedDict[str, dict] = OrderedDict()
        self._known_lock = threading.Lock()

    def add_write_once_prefix(self, prefix: str) -> None:
        """Declare the Parquet objects under ``prefix`` (bucket/key, no protocol) written once, never changed."""
        self._prefixes.add(self._strip_protocol(prefix).rstrip("/") + "/")

    def _write_once(self, name: str) -> bool:
        return name.endswith(".parquet") and any(name.startswith(prefix) for prefix in self._prefixes)

    async def _info(self, path, bucket=None, key=None, refresh=False, version_id=None):
        name = self._strip_protocol(path)
        if not refresh and version_id is None:
            with self._known_lock:
                known = self._known.get(name)
                if known is not None:
                    self._known.move_to_end(name)
                    return dict(known)
        info = await super()._info(path, bucket, key, refresh=refresh, version_id=version_id)
        if info.get("type") == "file" and self._write_once(name):
            with self._known_lock:
                self._known[name] = dict(info)
                while len(self._known) > MAX_KNOWN:
                    self._known.popitem(last=False)
        return info

    def remember(self, path: str, size: int, modified_ms: int) -> None:
        """Take what a Delta log says of a write-once object at ``path`` (its size and time) as its info, so
        DuckDB's first read of it sends no HEAD either."""
        name = self._strip_protocol(path)
        if self._write_once(name):
            with self._known_lock:
                if name not in self._known:
                    self._known[name] = {"name": name, "size": size, "type": "file",
                                         "LastModified": datetime.fromtimestamp(modified_ms / 1000, UTC)}
                    while len(self._known) > MAX_KNOWN:
                        self._known.popitem(last=False)

    def forget(self, path: str) -> None:
        """Ask S3 again next time about ``path`` (this process rewrote or deleted it)."""
        with self._known_lock:
            self._known.pop(self._strip_protocol(path), None)
