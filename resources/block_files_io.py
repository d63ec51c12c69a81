"""The IO manager of ``data_block`` and ``predictions``: each partition's rows stored once, as the Parquet file
history, reruns, reports and estimation read (``pipelines/<name>/blocks/<block>.parquet`` and
``pipelines/<name>/predictions/<block>.parquet`` under the storage root), the step result's other fields in
the file's metadata (:mod:`calmops_dagster.steps.result_files`).

Files are written through the storage seam, atomically (a renamed temporary file on the local disk, one PUT in
S3), and each materialization's ``path`` metadata names its file, so the partition's page in the Dagster UI
points at it. A block an earlier release materialized has a Parquet file without the result's fields; it
loads from the pickle that release's IO manager stored (``storage/<name>/<asset>/<block>``), checked as every
pickle is (:mod:`calmops_dagster.resources.step_results_io`). Layout: docs/layout.md.
"""

from __future__ import annotations

import pickle

from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext

from calmops_dagster.errors import StaleAssetValueError, StoredRowsError
from calmops_dagster.resources.step_results_io import asset_partition, checked_load
from calmops_dagster.store.paths import BLOCKS_DIR, PREDICTIONS_DIR, CalmOpsHome
from calmops_dagster.store.storage import Location, write_atomic

#: The resource key of this IO manager (``io_manager_key`` of the two assets).
BLOCK_FILES_IO_MANAGER = "block_files_io_manager"
#: The assets stored so, and the folder of ``pipelines/<name>`` holding their files.
FOLDERS = {"data_block": BLOCKS_DIR, "predictions": PREDICTIONS_DIR}
#: What each asset's value is (named in the one-line errors).
RESULTS = {"data_block": "LoadedBlock", "predictions": "Predictions"}


class BlockFilesIOManager(ConfigurableIOManager):
    """Stores a partition of ``data_block`` or ``predictions`` as ``<folder>/<block>.parquet`` of its pipeline."""

    root: str
    """``CALMOPS_HOME``; the files live under its storage root (``CALMOPS_STORAGE_URL``, else the home)."""

    def handle_output(self, context: OutputContext, obj) -> None:
        from calmops_dagster.steps.result_files import result_bytes

        data = result_bytes(obj)
        if data is None:  # nothing predicted (no champion yet): no file, as the metadata's rows 0 says
            return
        location = self.file_of(context)
        write_atomic(location, data)
        context.add_output_metadata({"path": MetadataValue.path(str(location))})

    def load_input(self, context: InputContext):
        from calmops_dagster.steps.result_files import NotAResultFile, UnreadableResultFile, result_from_bytes

        location, where = self.file_of(context), asset_partition(context)
        try:
            data = location.read_bytes()
        except FileNotFoundError:
            data = None
        if data is not None:
            try:
                return result_from_bytes(data)
            except NotAResultFile:
                pass  # an earlier release's file: the value is its pickle
            except UnreadableResultFile as exc:
                raise StoredRowsError(f"{location}: {exc}: materialize {where} again, then retry") from None
        legacy = self.legacy_pickle(context)
        if legacy.exists():
            return checked_load(context, lambda: pickle.loads(legacy.read_bytes()))
        if data is None:
            nothing = (" (a block decided without a champion has no predictions)"
                       if context.asset_key.path[-1] == "predictions" else "")
            raise StoredRowsError(f"{location} is missing: materialize {where} again, then retry{nothing}")
        raise StaleAssetValueError(
            f"{where}: {location} was written by an earlier calmops-dagster release without the "
            f"{RESULTS[context.asset_key.path[-1]]} this release takes: materialize {where} and its upstream "
            "assets again, then retry")

    def file_of(self, context: InputContext | OutputContext) -> Location:
        """``pipelines/<name>/<folder>/<block>.parquet`` under the storage root."""
        pipeline, asset = context.asset_key.path[-2:]
        if asset not in FOLDERS:
            raise ValueError(f"{context.asset_key.to_user_string()}: {type(self).__name__} stores only "
                             f"{', '.join(FOLDERS)}")
        home = CalmOpsHome.from_env(self.root)
        return home.state_dir(pipeline) / FOLDERS[asset] / f"{context.asset_partition_key}.parquet"

    def legacy_pickle(self, context: InputContext) -> Location:
        """Where the filesystem IO manager of earlier releases pickled the value."""
        return CalmOpsHome.from_env(self.root).storage_dir.joinpath(*context.asset_key.path,
                                                                    context.asset_partition_key)
