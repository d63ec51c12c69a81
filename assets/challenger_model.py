"""``challenger_model``: a model trained on the block when its drift report asks for one, over
:func:`calmops_dagster.steps.train_challenger.train_challenger`."""

from dagster import AssetExecutionContext, AssetIn, Output, asset

from calmops_dagster.assets.wiring import asset_key, common, open_step, scores_metadata
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.results import Assessment, ChallengerOutcome, LoadedBlock


def challenger_metadata(spec: PipelineSpec, result: ChallengerOutcome) -> dict:
    if result.version is None:
        return {"trained": 0, **({"rerun": 1} if result.rerun else {}), "reason": result.reason,
                **({"circuit_breaker": "open"} if result.breaker_open else {})}
    return {
        "trained": int(result.trained), "rerun": int(not result.trained), "version": result.version,
        "retrain_mode": spec.retrain_mode, "note": result.note, "train_rows": result.train_rows,
        "eval_rows": result.eval_rows, **result.ipip, **({"trained_by": result.trained_by} if result.trained_by else {}),
        **scores_metadata("challenger_", result.challenger_scores),
        **scores_metadata("champion_", result.champion_scores),
    }


def build_challenger_model(spec: PipelineSpec):
    @asset(
        name="challenger_model",
        description="A model trained on the block (retrain mode of the spec) when drift_report asks for one.",
        ins={"data_block": AssetIn(asset_key(spec, "data_block")),
             "drift_report": AssetIn(asset_key(spec, "drift_report"))},
        **common(spec),
    )
    def challenger_model(context: AssetExecutionContext, data_block: LoadedBlock, drift_report: Assessment,
                         home: CalmOpsHomeResource, metrics: MetricsStoreResource):
        from calmops_dagster.steps.train_challenger import train_challenger

        result = train_challenger(open_step(spec, context, home, metrics), data_block, drift_report)
        return Output(result, metadata=challenger_metadata(spec, result))

    return challenger_model
