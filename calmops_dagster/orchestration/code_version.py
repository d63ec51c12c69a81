"""Which version of the code a process runs, so a Celery worker can refuse a step of a run started by other code.

A run's steps are executed by whichever worker takes them, each loading the pipelines' definitions from its
own installation. A worker left on an older release would run the new run's steps with old code and read
asset values pickled by the new (or the reverse), silently. The code location tags every run it starts with
its :func:`code_version` (:data:`~calmops_dagster.orchestration.run_tags.CODE_VERSION_TAG`), and each step
compares it with the version of the process running it (:func:`version_mismatch`).

The version is ``CALMOPS_CODE_VERSION`` when set (a deployment names its release: the image tag, the git
commit), else the package's version and a digest of its Python source (:func:`source_digest`), so two
installations differ as soon as one file does.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import socket
from functools import cache
from pathlib import Path

from calmops_dagster.errors import CodeVersionError
from calmops_dagster.orchestration.run_tags import CODE_VERSION_TAG

CODE_VERSION_ENV = "CALMOPS_CODE_VERSION"
#: The packages whose source makes the code version: the package and the top-level folders installed under it.
PACKAGES = ("calmops_dagster", "calmops_dagster.assets", "calmops_dagster.sensors", "calmops_dagster.resources",
            "calmops_dagster.generators")


def source_digest(roots: dict[str, Path]) -> str:
    """A digest of every ``*.py`` module under ``roots`` (package name -> its folder), keyed by module name,
    so the same modules give the same digest whether a subpackage sits inside its parent's folder (a wheel)
    or elsewhere (an editable install)."""
    modules = {}
    for package, root in roots.items():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join((package, *parts))] = hashlib.sha256(path.read_bytes()).hexdigest()
    digest = hashlib.sha256()
    for name in sorted(modules):
        digest.update(f"{name}\0{modules[name]}\n".encode())
    return digest.hexdigest()


def installed_roots() -> dict[str, Path]:
    """The folder of each of :data:`PACKAGES` in this installation."""
    return {name: Path(next(iter(importlib.util.find_spec(name).submodule_search_locations)))
            for name in PACKAGES}


@cache
def code_version() -> str:
    """``CALMOPS_CODE_VERSION``, else ``<package version>+<first 12 hex digits of the source digest>``."""
    named = os.environ.get(CODE_VERSION_ENV, "").strip()
    if named:
        return named
    return f"{importlib.metadata.version('calmops-dagster')}+{source_digest(installed_roots())[:12]}"


def version_mismatch(run_version: str | None, worker_version: str, worker: str) -> str | None:
    """The one-line refusal when a run started by code ``run_version`` reaches a worker running
    ``worker_version``; ``None`` when they agree or the run carries no version (not started for Celery).

    >>> version_mismatch("1.0+abc", "1.0+abc", "w1@host") is None
    True
    >>> print(version_mismatch("1.1+def", "1.0+abc", "w1@host"))  # doctest: +NORMALIZE_WHITESPACE
    worker w1@host runs code 1.0+abc, this run was started by code 1.1+def: install the code location's version
    on the worker (and restart it), then re-execute the run; nothing of this step was written
    """
    if not run_version or run_version == worker_version:
        return None
    return (f"worker {worker} runs code {worker_version}, this run was started by code {run_version}: install "
            "the code location's version on the worker (and restart it), then re-execute the run; nothing of "
            "this step was written")


def this_worker() -> str:
    """The Celery worker's node name (``w1@host``) inside a Celery task, else this host and process."""
    try:
        from celery import current_task
    except ImportError:  # the `celery` extra is not installed: not a worker
        current_task = None
    hostname = current_task.request.hostname if current_task else None
    return hostname or f"{socket.gethostname()} pid {os.getpid()}"


def check_run_code_version(run_tags: dict[str, str]) -> None:
    """Raise :class:`~calmops_dagster.errors.CodeVersionError` when the run (its ``run_tags``) was started by
    other code than this process runs (runs without :data:`CODE_VERSION_TAG` are not checked)."""
    started_by = run_tags.get(CODE_VERSION_TAG)
    problem = started_by and version_mismatch(started_by, code_version(), this_worker())
    if problem:
        raise CodeVersionError(problem)
