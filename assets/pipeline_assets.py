"""The asset group of one pipeline: spec in, Dagster assets and checks out.

```
data_block ──► drift_report ──► challenger_model ──► champion_model ──► predictions
```

Every asset is partitioned by the pipeline's dynamic partitions (one per block) and keyed
``<pipeline>/<asset>``. The assets are thin: they read and write through the resources and call the pure
functions of ``calmops_dagster`` for every decision. The champion carries state from block to block through
the model store's champion pointer (runs of one pipeline are processed one at a time, in block order).

The modules that compute (the drift engine and scipy, training and scikit-learn, the promotion tests, the
estimator, the plotly report) are imported inside the assets that use them, when a step runs: the code
location, which only builds these definitions (``dagster dev``'s code server, every run worker, the CLI),
does not load them, and a run loads only what its steps use.
"""

import warnings

import pandas as pd
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    DynamicPartitionsDefinition,
    MetadataValue,
    Output,
    PreviewWarning,
    asset,
)

from calmops_dagster.assets.block_alerts import alert_run
from calmops_dagster.assets.challenger_model import build_challenger_model
from calmops_dagster.assets.champion_model import build_champion_model
from calmops_dagster.assets.data_block import build_data_block
from calmops_dagster.assets.drift_report import build_drift_report
from calmops_dagster.assets.monitoring import monitoring_materialization, monitoring_spec
from calmops_dagster.ingest.block_data import sort_block_keys
from calmops_dagster.orchestration.run_tags import VERSION_TAG
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.block_context import (
    is_rerun,
    read_context,
)
from calmops_dagster.steps.pipeline_overview import pipeline_overview
from calmops_dagster.steps.predict_block import ensure_champion, predict_block, write_predictions
from calmops_dagster.steps.results import LoadedBlock
from calmops_dagster.store.processed_blocks import record_processed

MONITORING = "monitoring"
DRIFT_COLUMNS = ["feature", "test", "statistic", "p_value", "effect_size", "threshold", "drifted", "note"]


def _scores_metadata(prefix: str, scores: dict[str, float] | None) -> dict:
    return {f"{prefix}{metric}": float(value) for metric, value in (scores or {}).items()}


def _block_order(blocks: pd.Series) -> list[int]:
    """Row positions of ``blocks`` in block order."""
    position = {key: i for i, key in enumerate(sort_block_keys(blocks))}
    return sorted(range(len(blocks)), key=lambda i: position[blocks.iloc[i]])


def _drifted_table(drift_rows: pd.DataFrame) -> str:
    """Markdown table of the drifted (feature, test) rows, largest effect first."""
    if drift_rows.empty:
        return "No reference yet: this block trains the first champion."
    drifted = drift_rows[drift_rows["drifted"].astype(bool) & ~drift_rows["feature"].astype(str).str.startswith("__")]
    if drifted.empty:
        return "No feature drifted."
    drifted = drifted.sort_values("effect_size", ascending=False)
    lines = ["| feature | test | statistic | p-value | effect size |", "|---|---|---|---|---|"]
    for row in drifted.itertuples():
        lines.append(
            f"| {row.feature} | {row.test} | {row.statistic:.4g} | {row.p_value:.3g} | {row.effect_size:.3g} |"
        )
    return "\n".join(lines)


def record_run_processed(context: AssetExecutionContext, spec: PipelineSpec, metrics) -> None:
    """Record in the store (``processed_blocks``) that the run's block is processed, at the version its
    ``data_block`` loaded (:data:`VERSION_TAG` on the run); nothing for a run that did not load the block."""
    loaded = context.instance.get_run_by_id(context.run_id).tags.get(VERSION_TAG)
    if loaded is not None:
        record_processed(metrics.store(), spec.name, context.partition_key, loaded, context.run_id)


def build_pipeline_assets(spec: PipelineSpec) -> list:
    """The five assets of ``spec`` (two or three in prediction-only mode) with their checks, and the
    ``monitoring`` overview they report after every block."""
    partitions = DynamicPartitionsDefinition(name=spec.partitions_name)
    prefix = [spec.name]

    def key(name: str) -> AssetKey:
        return AssetKey([*prefix, name])

    common = {"key_prefix": prefix, "group_name": spec.name, "partitions_def": partitions}

    def check(name: str, asset_name: str, description: str, blocking: bool = False) -> AssetCheckSpec:
        """A check partitioned like its asset, so every result carries its block (UI check history,
        GraphQL ``assetCheckExecutions[].partition``) and a failed block can be re-run from there."""
        with warnings.catch_warnings():  # partitioned checks are a Dagster "preview" feature (1.13)
            warnings.simplefilter("ignore", PreviewWarning)
            return AssetCheckSpec(name, asset=key(asset_name), description=description, blocking=blocking,
                                  partitions_def=partitions)

    data_block = build_data_block(spec)

    drift_report = build_drift_report(spec)

    challenger_model = build_challenger_model(spec)

    champion_model = build_champion_model(spec)

    @asset(
        name="predictions",
        description="The champion's predictions for the block, written to predictions/<block>.parquet.",
        ins={"data_block": AssetIn(key("data_block"))},
        deps=[] if spec.prediction_only else [key("champion_model")],
        **common,
    )
    def predictions(context: AssetExecutionContext, data_block: LoadedBlock, home: CalmOpsHomeResource,
                    metrics: MetricsStoreResource):
        block, store = context.partition_key, home.model_store(spec.name)
        data_block = data_block.frame
        recorded = None if spec.prediction_only else read_context(metrics.store(), spec, block, context.run_id)
        # the champion the block's decision left in force (a rerun predicts as the block's first run did)
        version = recorded.champion_after if is_rerun(recorded) else ensure_champion(spec, store)
        if version is None and not spec.prediction_only:  # nothing trained yet: the decision says why
            record_run_processed(context, spec, metrics)
            return Output("", metadata={"rows": 0, "model_version": "none"})
        result = predict_block(store, version, data_block, spec)
        path = write_predictions(result, home.paths.predictions_dir(spec.name), block)
        counts = result["prediction"].value_counts(normalize=True) if spec.task == "classification" else None
        if spec.prediction_only:  # no champion_model step: the overview follows the predictions
            context.log.info(f"block {block}: {len(result)} rows predicted by {version}")  # its one INFO line
            context.log_event(monitoring_materialization(spec, pipeline_overview(
                home.paths, spec.name, spec.performance.metric, metrics=metrics.store())))
            alert_run(spec, home.paths, metrics.store(), block, context.instance, context.run_id, log=context.log)
        record_run_processed(context, spec, metrics)
        return Output(str(path), metadata={
            "rows": len(result), "model_version": version, "path": MetadataValue.path(str(path)),
            **({f"share_{k}": float(v) for k, v in counts.items()} if counts is not None else
               {"mean_prediction": float(result["prediction"].mean())}),
        })

    if spec.prediction_only:
        chain = [data_block, drift_report, predictions] if spec.reference_file else [data_block, predictions]
    else:
        chain = [data_block, drift_report, challenger_model, champion_model, predictions]
    return [*chain, monitoring_spec(spec)]
