"""``predictions``: the champion's predictions for the block, over
:func:`calmops_dagster.steps.predict_block.predict_block`."""

from dagster import AssetExecutionContext, AssetIn, Output, asset

from calmops_dagster.assets.metadata import ui_metadata
from calmops_dagster.assets.monitoring import monitoring_materialization
from calmops_dagster.assets.wiring import asset_key, common, open_step
from calmops_dagster.orchestration.run_tags import VERSION_TAG
from calmops_dagster.resources.block_files_io import BLOCK_FILES_IO_MANAGER
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.results import LoadedBlock, Predictions


def predictions_metadata(result: Predictions) -> dict:
    if result.version is None:
        return {"rows": 0}
    return ui_metadata({
        "rows": result.rows, "model_version": result.version,
        **({f"share_{k}": v for k, v in result.shares.items()} if result.shares is not None else
           {"mean_prediction": result.mean_prediction}),
    })


def build_predictions(spec: PipelineSpec):
    @asset(
        name="predictions",
        description="The champion's predictions for the block, stored as predictions/<block>.parquet.",
        ins={"data_block": AssetIn(asset_key(spec, "data_block"))},
        deps=[] if spec.prediction_only else [asset_key(spec, "champion_model")],
        io_manager_key=BLOCK_FILES_IO_MANAGER,
        **common(spec),
    )
    def predictions(context: AssetExecutionContext, data_block: LoadedBlock, home: CalmOpsHomeResource,
                    metrics: MetricsStoreResource):
        from calmops_dagster.steps.predict_block import predict_block

        loaded = context.instance.get_run_by_id(context.run_id).tags.get(VERSION_TAG)  # None: not loaded by this run
        result = predict_block(open_step(spec, context, home, metrics), data_block, loaded)
        if result.overview is not None:  # prediction-only: no champion_model step reports it
            context.log_event(monitoring_materialization(spec, result.overview))
        return Output(result, metadata=predictions_metadata(result))

    return predictions
