"""Dagster resources of calmops-dagster, and the resource set every pipeline uses."""

from calmops_dagster.resources.block_files_io import BLOCK_FILES_IO_MANAGER, BlockFilesIOManager
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.resources.step_results_io import StepResultsIOManager
from calmops_dagster.store.paths import CalmOpsHome

__all__ = ["BLOCK_FILES_IO_MANAGER", "CalmOpsHomeResource", "MetricsStoreResource", "build_resources"]


def build_resources(home: CalmOpsHome) -> dict:
    """The resources of a code location or a headless run on ``home``."""
    return {
        "home": CalmOpsHomeResource(root=str(home.root)),
        "metrics": MetricsStoreResource(db_path=str(home.metrics_db)),
        # Dagster's own pickles of asset values: under the storage root too (UPath over fsspec for s3://)
        "io_manager": StepResultsIOManager(base_dir=str(home.storage_dir)),
        # the rows of data_block and predictions: once, as the Parquet files every reader uses
        BLOCK_FILES_IO_MANAGER: BlockFilesIOManager(root=str(home.root)),
    }
