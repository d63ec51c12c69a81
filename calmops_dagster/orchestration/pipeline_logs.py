"""Per-pipeline log files: ``CALMOPS_HOME/pipelines/<name>/logs/pipeline.log`` (rotated by size).

Dagster keeps its own captured logs (stdout/stderr per step, the event log in the UI). Those are keyed by run
and step, which is the wrong shape for "what happened to pipeline ``demo`` lately?". So every pipeline job
also gets :data:`pipeline_file_logger`, a Dagster ``@logger`` registered next to the console logger in the
pipeline's ``Definitions``. Dagster hands a logger every message of a run, its own events (step start, asset
materialized, check evaluated, run failure) as well as the assets' ``context.log`` lines, so the file tells the
whole story of each block in one place, in every process that runs a step (in-process ``calmops run`` as
well as ``dagster dev``'s run workers). A plain ``logging`` handler on the ``calmops_dagster`` logger would
miss Dagster's own events, and ``python_logs`` instance config would need a change of ``dagster.yaml``.

The logger finds the pipeline from the job's ``calmops/pipeline`` tag and ``CALMOPS_HOME`` from the
environment (the code location reads it from there too). One handler per file per process is shared by all
runs of that process (no file handle leak over many blocks). Rotation: ``pipeline.log`` grows to
``MAX_BYTES`` and is rotated to ``pipeline.log.1`` ... ``.5``; lines are appended with ``O_APPEND``, so
writers in several processes interleave whole lines.

``calmops logs NAME -n 50`` prints the last lines (:func:`tail_lines`).
"""

from __future__ import annotations

import hashlib
import logging
import logging.handlers
import sys
import threading
from collections import deque
from pathlib import Path

from dagster import Field, logger

from calmops_dagster.orchestration.run_tags import PIPELINE_TAG
from calmops_dagster.store.paths import CalmOpsHome

LOG_FILE = "pipeline.log"
MAX_BYTES = 5 * 1024 * 1024
BACKUP_COUNT = 5
FORMAT = "%(asctime)s %(levelname)s %(message)s"

_handlers: dict[Path, logging.Handler] = {}
_lock = threading.Lock()


def logs_dir(home: CalmOpsHome, name: str) -> Path:
    return home.pipeline_dir(name) / "logs"


def file_handler(path: Path) -> logging.Handler:
    """The process-wide rotating handler of ``path`` (created once)."""
    path = Path(path)
    with _lock:
        handler = _handlers.get(path)
        if handler is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT,
                                                           encoding="utf-8")
            handler.setFormatter(logging.Formatter(FORMAT))
            _handlers[path] = handler
        return handler


def pipeline_logger(home: CalmOpsHome, name: str, level: int = logging.INFO) -> logging.Logger:
    """A python logger writing to the pipeline's log file (also usable outside Dagster runs).

    One logger per log file, not per pipeline name: a process that runs a pipeline of one home and then a
    pipeline of the same name in another home writes each one's lines to its own file only."""
    path = logs_dir(home, name) / LOG_FILE
    log = logging.getLogger(f"calmops.pipeline.{name}.{hashlib.sha256(str(path).encode()).hexdigest()[:12]}")
    log.setLevel(level)
    log.propagate = False
    handler = file_handler(path)
    if handler not in log.handlers:
        log.addHandler(handler)
    return log


@logger(
    config_schema={"log_level": Field(str, is_required=False, default_value="INFO")},
    description="Appends every message of a pipeline's runs to CALMOPS_HOME/pipelines/<name>/logs/pipeline.log",
)
def pipeline_file_logger(init_context):
    level = logging.getLevelName(init_context.logger_config["log_level"].upper())
    job = init_context.job_def
    name = (job.tags or {}).get(PIPELINE_TAG) if job is not None else None
    if not name:  # a job that is not a pipeline's (e.g. an ad-hoc asset job): nothing to write
        null = logging.getLogger("calmops.pipeline.__none__")
        null.addHandler(logging.NullHandler())
        null.propagate = False
        return null
    return pipeline_logger(CalmOpsHome.from_env(), name, level)


class _WarningsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return logging.WARNING <= record.levelno < logging.ERROR


@logger(description="The console of `calmops run`: a run's warnings (a late block, rows that changed), one line "
        "each. Failures are left out: `calmops run` names each one in its block's line (the stack trace stays "
        "in pipeline.log and the UI), so a failed block, or an object store that went away, is not followed by "
        "pages of stack.")
def headless_console_logger(init_context):
    # one per run, on the stderr of the moment, outside logging's registry (as Dagster's console logger is)
    log = logging.Logger("calmops.headless_console", logging.WARNING)  # noqa: LOG001
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s - dagster - %(levelname)s - %(message)s"))
    handler.addFilter(_WarningsOnly())
    log.addHandler(handler)
    return log


def tail_lines(home: CalmOpsHome, name: str, n: int = 50) -> list[str]:
    """The last ``n`` lines of the pipeline's log (older rotated files are read when the current is short)."""
    folder = logs_dir(home, name)
    files = [folder / LOG_FILE, *(folder / f"{LOG_FILE}.{i}" for i in range(1, BACKUP_COUNT + 1))]
    collected: list[str] = []
    for path in files:  # newest first
        if len(collected) >= n:
            break
        if not path.is_file():
            continue
        with open(path, encoding="utf-8", errors="replace") as handle:
            last = deque(handle, maxlen=n - len(collected))
        collected = [line.rstrip("\n") for line in last] + collected
    return collected
