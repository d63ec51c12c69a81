"""Atomic file writes: readers see the old content or the new, never half of it.

On the local disk the pattern is the classic one: write a temporary file in the same folder, flush and
fsync it, then ``os.replace`` it over the target (atomic on POSIX within one file system). In object
storage one PUT is atomic by itself (:func:`calmops_dagster.store.storage.write_atomic`).
"""

from __future__ import annotations

import os

from calmops_dagster.store.storage import Location, is_remote, write_atomic


def write_bytes_atomic(path: Location, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a local path or a :class:`~calmops_dagster.store.storage.StoragePath`)."""
    write_atomic(path, data)


def write_text_atomic(path: Location, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_atomic(path, text.encode("utf-8"))


def write_readable_text_atomic(path: Location, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by everyone (0644) on the local disk: the temporary
    file it is renamed from is private (0600). Reports are written so, for the web UI and other users to
    open; object storage has no file modes."""
    write_text_atomic(path, text)
    if not is_remote(path):
        os.chmod(path, 0o644)
