"""Where things live under ``CALMOPS_HOME`` and ``CALMOPS_STORAGE_URL``.

One object answers every "where is ..." question so that the CLI, the code location, the sensors and the
tests agree on the layout. Pipeline state (models, blocks, incoming file versions, predictions, reports,
estimation data, metric tables) lives under the storage root (:mod:`calmops_dagster.store.storage`);
specs, run locks, logs, the metrics catalog and the Dagster instance stay in ``CALMOPS_HOME``. The whole
layout: docs/layout.md; what moves to object storage: docs/storage.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from calmops_dagster.errors import PipelineNameError
from calmops_dagster.store.storage import Location, storage_root

DEFAULT_HOME = ".calmops"
#: Folders of a pipeline's state folder (``pipelines/<name>`` under the storage root).
BLOCKS_DIR, PREDICTIONS_DIR = "blocks", "predictions"
#: A pipeline name: it names a folder under ``CALMOPS_HOME/pipelines``, Dagster asset keys and partitions.
PIPELINE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")


def check_pipeline_name(name) -> str:
    """``name`` when it is a pipeline name, else :class:`PipelineNameError` saying why.

    The one check every command, the server and the spec loader use before a name is joined to
    ``CALMOPS_HOME``: a name is a single folder name, so ``../x``, ``/abs``, ``a/b`` and ``a\\b`` can never
    reach outside ``pipelines/``.
    """
    if not isinstance(name, str) or not PIPELINE_NAME.fullmatch(name):
        raise PipelineNameError(f"{name!r} is not a pipeline name: it must start with a letter and hold only "
                                "letters, digits and '_' (at most 63), no path separators or '..'")
    return name


@dataclass(frozen=True)
class CalmOpsHome:
    """The root folder of one CalmOps installation."""

    root: Path

    @classmethod
    def from_env(cls, override: str | os.PathLike | None = None) -> CalmOpsHome:
        """``override`` (``--home``), else ``$CALMOPS_HOME``, else ``./.calmops``; always absolute."""
        raw = override or os.environ.get("CALMOPS_HOME") or DEFAULT_HOME
        return cls(Path(raw).expanduser().resolve())

    @property
    def pipelines_dir(self) -> Path:
        return self.root / "pipelines"

    @cached_property
    def state_root(self) -> Location:
        """Where pipeline state lives: ``$CALMOPS_STORAGE_URL``, else this home (a local path)."""
        return storage_root(self.root)

    @property
    def metrics_dir(self) -> Location:
        """The metric tables, one Delta Lake table each (see :mod:`calmops_dagster.store.metrics_store`)."""
        return self.state_root / "metrics"

    @property
    def metrics_db(self) -> Path:
        return self.root / "metrics.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def storage_dir(self) -> Location:
        """Dagster's IO manager outputs (pickled asset values), under the storage root."""
        return self.state_root / "storage"

    def pipeline_dir(self, name: str) -> Path:
        """``pipelines/<name>``; a name that is not a pipeline name is refused before it touches a path."""
        return self.pipelines_dir / check_pipeline_name(name)

    def state_dir(self, name: str) -> Location:
        """``pipelines/<name>`` under the storage root: the pipeline's state (``pipeline_dir`` when local)."""
        return self.state_root / "pipelines" / check_pipeline_name(name)

    def spec_path(self, name: str) -> Path:
        return self.pipeline_dir(name) / "pipeline.yaml"

    def models_dir(self, name: str) -> Location:
        return self.state_dir(name) / "models"

    def blocks_dir(self, name: str) -> Location:
        """Processed blocks' rows, one Parquet file per block: the history of ``window``/``replay_mix``."""
        return self.state_dir(name) / BLOCKS_DIR

    def predictions_dir(self, name: str) -> Location:
        return self.state_dir(name) / PREDICTIONS_DIR

    def reports_dir(self, name: str) -> Location:
        return self.state_dir(name) / "reports"

    def estimation_dir(self, name: str) -> Location:
        """Per model version, the labels and out-of-fold probabilities label-free estimation calibrates on."""
        return self.state_dir(name) / "estimation"

    def spec_files(self) -> list[Path]:
        """Every ``pipelines/<name>/pipeline.yaml``, sorted by name."""
        if not self.pipelines_dir.is_dir():
            return []
        return sorted(self.pipelines_dir.glob("*/pipeline.yaml"))
