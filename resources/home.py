"""Dagster resources over the CalmOps home folder: the model store and the DuckDB metrics store."""

from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext

from calmops_dagster.orchestration.code_version import check_run_code_version
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from calmops_dagster.store.paths import CalmOpsHome


class CalmOpsHomeResource(ConfigurableResource):
    """The CalmOps home folder: where specs, models, predictions and reports of every pipeline live."""

    root: str

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Every step of a pipeline uses this resource: a step sent to a Celery worker whose code is not the
        code that started its run stops here, before it reads or writes anything."""
        if context.dagster_run is not None:
            check_run_code_version(context.dagster_run.tags)

    @property
    def paths(self) -> CalmOpsHome:
        return CalmOpsHome.from_env(self.root)

    def model_store(self, pipeline: str) -> ModelStore:
        """Versioned models and the champion pointer of ``pipeline``."""
        return ModelStore(self.paths.models_dir(pipeline))


class MetricsStoreResource(ConfigurableResource):
    """The metric tables: ``db_path`` is the DuckDB catalog; rows are Delta Lake tables (no lock)."""

    db_path: str

    def store(self) -> MetricsStore:
        return MetricsStore(self.db_path)
