"""``monitoring``: the pipeline's overview, reported by each block's run after its decision (or, in
prediction-only mode, after its predictions) from :mod:`calmops_dagster.reports.pipeline_overview`."""

from dagster import AssetKey, AssetMaterialization, AssetSpec, MetadataValue

from calmops_dagster.assets.metadata import ui_metadata
from calmops_dagster.assets.wiring import asset_key
from calmops_dagster.reports.pipeline_overview import Overview
from calmops_dagster.spec import PipelineSpec

MONITORING = "monitoring"


def monitoring_spec(spec: PipelineSpec) -> AssetSpec:
    upstream = "predictions" if spec.prediction_only else "champion_model"
    return AssetSpec(
        asset_key(spec, MONITORING), group_name=spec.name, deps=[asset_key(spec, upstream)],
        description=f"Overview of pipeline {spec.name}: champion and since when, the last decisions and their "
        "reasons, drift per block, the features that drift most, links to the reports (served by `calmops "
        f"serve`). How it is updated: every block's run reports it from its `{upstream}` step, after the "
        "block's " + ("predictions" if spec.prediction_only else "decision") + ", so it has one "
        "materialization per block processed. It has no automation, schedule or Materialize button of its "
        "own (an external asset): process a block to update it.",
    )


def monitoring_materialization(spec: PipelineSpec, view: Overview) -> AssetMaterialization:
    """The ``<name>/monitoring`` overview after a block: champion, decisions, drift, links."""
    metadata = ui_metadata({
        "champion": view.champion, "champion_since": view.champion_since, "last_block": view.last_block,
        "blocks_processed": view.blocks_processed, "promotions": view.promotions, "rollbacks": view.rollbacks,
        **view.numbers,
        "last_decisions": MetadataValue.md(view.decisions_md),
        "drift_per_block": MetadataValue.md(view.drift_md),
        "most_drifting_features": MetadataValue.md(view.features_md),
        "pipeline_report": MetadataValue.url(view.pipeline_report_url),
    })
    if view.block_report_url:
        metadata["last_block_report"] = MetadataValue.url(view.block_report_url)
        metadata["last_block_report_path"] = MetadataValue.path(view.block_report_path)
    return AssetMaterialization(AssetKey([spec.name, MONITORING]), metadata=metadata,
                                description=f"after block {view.last_block}")
