"""The storage seam: where a pipeline's state lives, on the local disk or in object storage.

A location is a local :class:`pathlib.Path` or a :class:`StoragePath` in S3 (``CALMOPS_STORAGE_URL``), and
each operation whose guarantee differs between the two is one function here: :func:`write_atomic`,
:func:`create_exclusive`, :func:`update_atomically`, :func:`stamp`. What lives where, each guarantee on
either side and why other fsspec protocols are refused: docs/storage.md.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import posixpath
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from calmops_dagster.errors import CalmOpsError

if TYPE_CHECKING:
    import pandas as pd

STORAGE_URL_ENV = "CALMOPS_STORAGE_URL"
#: Protocols whose conditional writes this module implements (and the tests exercise).
OBJECT_PROTOCOLS = ("s3", "s3a")
_LOCAL_PROTOCOLS = ("file", "local")
#: How long :func:`update_atomically` retries on conflicting writers before giving up.
UPDATE_DEADLINE_SECONDS = 60.0


class StorageError(CalmOpsError):
    """A storage URL that cannot be used, or a conditional update that kept conflicting."""


#: Environment variables that configure the S3 client: a change of any of them means another filesystem.
_CLIENT_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_REGION",
               "AWS_DEFAULT_REGION", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE")


def _filesystem(protocol: str):
    """One fsspec filesystem per protocol, process and client settings, without listing caches: other
    processes write the same prefixes, so a cached listing would hide their files."""
    # a forked child must not reuse its parent's event loop; new AWS settings need a new client
    return _filesystem_of(protocol, os.getpid(), tuple(os.environ.get(k) for k in _CLIENT_ENV))


@cache
def _filesystem_of(protocol: str, pid: int, settings: tuple):
    from calmops_dagster.store.object_store import ObjectStoreFileSystem, use_for_s3

    use_for_s3()
    return ObjectStoreFileSystem(use_listings_cache=False, skip_instance_cache=True)


def reader_filesystem(location: StoragePath):
    """The filesystem DuckDB reads ``location``'s Parquet files through: like :attr:`StoragePath.fs`, but what
    S3 said about a write-once object is kept (:mod:`calmops_dagster.store.write_once_reads`)."""
    return _reader_of(location.protocol, os.getpid(), tuple(os.environ.get(k) for k in _CLIENT_ENV))


def binding_filesystem(location: StoragePath):
    """A filesystem of ``location``'s protocol in which nothing exists, for DuckDB to bind a new catalog's
    views through: they are typed by the schema, not by what the store holds, so binding them needs no
    request (readers register :func:`reader_filesystem`)."""
    from fsspec.implementations.memory import MemoryFileSystem

    class Nothing(MemoryFileSystem):
        protocol = (location.protocol,)
        store, pseudo_dirs = {}, [""]  # its own, always empty

    return Nothing(skip_instance_cache=True)


@cache
def _reader_of(protocol: str, pid: int, settings: tuple):
    from calmops_dagster.store.write_once_reads import WriteOnceReadsS3

    return WriteOnceReadsS3(use_listings_cache=False, skip_instance_cache=True)


class StoragePath:
    """A file or prefix in object storage, with the ``pathlib`` methods the stores use.

    Object storage has no folders: ``mkdir`` does nothing, and a "folder" exists when some object lies
    under its prefix."""

    __slots__ = ("path", "protocol")

    def __init__(self, protocol: str, path: str):
        self.protocol = protocol
        self.path = posixpath.normpath(path.strip("/")) if path.strip("/") else ""

    @property
    def fs(self):
        return _filesystem(self.protocol)

    # ---- pure path operations -------------------------------------------------------------------------
    def __truediv__(self, part) -> StoragePath:
        return StoragePath(self.protocol, f"{self.path}/{part}")

    def joinpath(self, *parts) -> StoragePath:
        out = self
        for part in parts:
            out = out / part
        return out

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def stem(self) -> str:
        return self.name[: len(self.name) - len(self.suffix)] if self.suffix else self.name

    @property
    def parent(self) -> StoragePath:
        return StoragePath(self.protocol, posixpath.dirname(self.path))

    def resolve(self) -> StoragePath:
        return self  # normalised when built: no "..", no symlinks

    def relative_to(self, other: StoragePath) -> str:
        return posixpath.relpath(self.path, other.path)

    def __str__(self) -> str:
        return f"{self.protocol}://{self.path}"

    def __repr__(self) -> str:
        return f"StoragePath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, StoragePath) and (self.protocol, self.path) == (other.protocol, other.path)

    def __hash__(self) -> int:
        return hash((self.protocol, self.path))

    def __lt__(self, other: StoragePath) -> bool:
        return self.path < other.path

    # ---- queries -------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def is_file(self) -> bool:
        return self.fs.isfile(self.path)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.path)

    def glob(self, pattern: str) -> Iterator[StoragePath]:
        for found in sorted(self.fs.glob(f"{self.path}/{pattern}")):
            yield StoragePath(self.protocol, found)

    def rglob(self, pattern: str) -> Iterator[StoragePath]:
        return self.glob(f"**/{pattern}")

    def iterdir(self) -> Iterator[StoragePath]:
        try:
            found = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:
            return iter(())
        return iter(StoragePath(self.protocol, p) for p in sorted(found) if p.strip("/") != self.path)

    # ---- content -------------------------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        """One GET (a missing object raises ``FileNotFoundError``): s3fs would first ask for the size (a
        HEAD) to split a large object into concurrent ranged GETs, which the seam's objects do not need."""
        return self.fs.cat_file(self.path, max_concurrency=1)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        """One PUT: the object appears whole or not at all (no temporary name needed)."""
        self.fs.pipe_file(self.path, bytes(data))
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def open(self, mode: str = "rb"):
        return self.fs.open(self.path, mode)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: a prefix exists as soon as an object is written under it."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise


#: A place in storage: a local path, or a file or prefix in object storage.
Location = Path | StoragePath


def storage_root(home_root: Path, url: str | None = None) -> Location:
    """Where pipeline state lives: ``url`` (default ``$CALMOPS_STORAGE_URL``), else ``home_root``.

    A plain path or ``file://`` URL is a local :class:`~pathlib.Path`; ``s3://bucket/prefix`` a
    :class:`StoragePath`; any other protocol is refused with the reason."""
    url = url if url is not None else os.environ.get(STORAGE_URL_ENV, "")
    if not url.strip():
        return Path(home_root)
    protocol, _, rest = url.partition("://")
    if not rest:  # a plain path
        return Path(url).expanduser().resolve()
    protocol = protocol.lower()
    if protocol in _LOCAL_PROTOCOLS:
        return Path(rest).expanduser().resolve()
    if protocol not in OBJECT_PROTOCOLS:
        raise StorageError(f"{STORAGE_URL_ENV}={url}: protocol '{protocol}' is not supported; use a local "
                           "path, file:// or s3:// (the atomic steps rest on S3's conditional writes, which "
                           "are implemented and tested for S3 only)")
    if not rest.strip("/"):
        raise StorageError(f"{STORAGE_URL_ENV}={url}: name a bucket (s3://bucket/prefix)")
    try:
        _filesystem("s3")
    except ImportError as exc:
        raise StorageError(f"{STORAGE_URL_ENV}={url}: s3fs is not installed ({exc}); "
                           "install the s3 extra: pip install -e '.[s3]'") from None
    return StoragePath("s3", rest)


def is_remote(location: Location) -> bool:
    return isinstance(location, StoragePath)


def as_location(value: str | os.PathLike | StoragePath) -> Location:
    """``value`` as a location: a :class:`StoragePath` stays one, anything else is a local path."""
    return value if isinstance(value, StoragePath) else Path(value)


# ---- the operations whose meaning differs between the local disk and object storage --------------------

def _synced_temp(path: Path, data: bytes) -> Path:
    """``data`` written and fsynced to a new temporary file beside ``path`` (same folder, so a rename or a
    link onto ``path`` stays on one file system); the caller renames or links it, then removes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_atomic(location: Location, data: bytes) -> None:
    """Write ``data`` so that readers see the old content or the new, never part of it."""
    if isinstance(location, StoragePath):
        location.write_bytes(data)
        return
    path = Path(location)
    tmp = _synced_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_exclusive(location: Location, data: bytes) -> bool:
    """Create ``location`` holding ``data`` unless it exists; ``True`` when this call created it.

    Of any number of concurrent callers exactly one gets ``True``, and the file is never seen half-written."""
    if isinstance(location, StoragePath):
        try:
            location.fs.pipe_file(location.path, bytes(data), mode="create")  # If-None-Match: *
        except FileExistsError:
            return False
        return True
    path = Path(location)
    tmp = _synced_temp(path, data)
    try:
        os.link(tmp, path)  # fails when the name exists: the exclusive step
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def update_atomically(location: Location, change: Callable[[bytes | None], bytes]) -> bytes:
    """Replace ``location``'s content by ``change(old content or None)`` without losing a concurrent update.

    Every caller's change is applied to the content the previous caller wrote: ``change`` may be called
    more than once (on S3, once per conflicting writer), so it must only compute. Returns what was written.
    """
    if isinstance(location, StoragePath):
        return _update_s3(location, change)
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)  # the folder's lock: held across read and replace
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            old = path.read_bytes() if path.is_file() else None
            new = change(old)
            write_atomic(path, new)
            return new
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _etag(location: StoragePath) -> str | None:
    try:
        return location.fs.info(location.path)["ETag"]
    except FileNotFoundError:
        return None


def _update_s3(location: StoragePath, change: Callable[[bytes | None], bytes]) -> bytes:
    deadline = time.monotonic() + UPDATE_DEADLINE_SECONDS
    delay = 0.02
    while True:
        etag = _etag(location)
        try:
            # read after the ETag: if the object changed in between, the conditional PUT below fails
            old = None if etag is None else location.read_bytes()
        except FileNotFoundError:
            old, etag = None, None
        new = change(old)
        try:
            if etag is None:
                location.fs.pipe_file(location.path, new, mode="create")
            else:
                location.fs.pipe_file(location.path, new, IfMatch=etag)
            return new
        except OSError as exc:
            conflict = isinstance(exc, FileExistsError) or _etag(location) != etag or exc.errno == errno.EINVAL
            if not conflict:
                raise
        if time.monotonic() > deadline:
            raise StorageError(f"{location}: still conflicting with other writers after "
                               f"{UPDATE_DEADLINE_SECONDS:.0f} s; not written")
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 0.5)


def stamp(location: Location) -> tuple | None:
    """A fingerprint that changes whenever the file is replaced; ``None`` when it does not exist."""
    if isinstance(location, StoragePath):
        etag = _etag(location)
        return None if etag is None else (etag,)
    try:
        st = os.stat(location)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def read_parquet(location: Location, **kwargs) -> pd.DataFrame:
    """A Parquet file as a DataFrame, wherever it lives."""
    import pandas as pd

    if isinstance(location, StoragePath):
        return pd.read_parquet(io.BytesIO(location.read_bytes()), **kwargs)
    return pd.read_parquet(location, **kwargs)


def copy_tree(source: Location, target: Location) -> int:
    """Copy every file under ``source`` to the same relative path under ``target`` (either may be local or in
    object storage); return how many files were copied."""
    if isinstance(source, StoragePath):
        files = [(StoragePath(source.protocol, f), posixpath.relpath(f, source.path))
                 for f in source.fs.find(source.path)]
    else:
        files = [(p, p.relative_to(source).as_posix()) for p in sorted(Path(source).rglob("*")) if p.is_file()]
    for path, relative in files:
        if isinstance(path, StoragePath) and isinstance(target, StoragePath) and path.protocol == target.protocol:
            path.fs.copy(path.path, (target / relative).path)
        else:
            write_atomic(target / relative, path.read_bytes())
    return len(files)


def remove_tree(location: Location) -> None:
    """Delete a folder (prefix) and everything under it; nothing when it is absent."""
    if isinstance(location, StoragePath):
        try:
            location.fs.rm(location.path, recursive=True)
        except FileNotFoundError:
            pass
        return
    shutil.rmtree(location, ignore_errors=True)
