"""``champion_model``: the promotion decision, over :func:`calmops_dagster.steps.decide_champion.decide_champion`,
and before it the block's ``challenger_model``, over :func:`calmops_dagster.steps.train_challenger.train_challenger`.

One step (``<pipeline>__challenger_and_champion``) runs both: the challenger is an optional output, materialized
only for a block that has one, and Dagster skips whatever is downstream of an output that was not produced,
whereas every block needs its decision. The lineage stays: ``champion_model`` depends on ``challenger_model``.
Either can be materialized alone (a rerun from the UI); the decision needs the challenger's scores, so the
challenger step runs for it too (a rerun re-scores the block's recorded challenger, it trains none). Both
steps run in :func:`~calmops_dagster.steps.train_and_decide.train_and_decide`.
"""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    Output,
    multi_asset,
)

from calmops_dagster.assets.challenger_model import CHALLENGER, challenger_out, challenger_output
from calmops_dagster.assets.metadata import check_description, check_metadata, ui_metadata
from calmops_dagster.assets.monitoring import monitoring_materialization
from calmops_dagster.assets.wiring import (
    PERFORMANCE_CHECK,
    asset_key,
    check_spec,
    open_step,
    partitions,
    scores_metadata,
)
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.results import Assessment, ChampionDecision, LoadedBlock

CHAMPION = "champion_model"
STEP = "challenger_and_champion"
"""The step's name after the pipeline's (``<pipeline>__challenger_and_champion``)."""


def champion_metadata(result: ChampionDecision) -> dict:
    decision = result.decision
    return ui_metadata({
        "champion_version": result.after, "decision": decision.decision,
        "promoted": decision.promoted, "rolled_back": decision.decision == "rolled_back",
        "late": result.late, "rerun": result.rerun, "reason": result.reason,
        "test": decision.test or None,
        **{k: getattr(decision, k) for k in ("p_value", "ci_low", "ci_high")},
        **scores_metadata("", result.in_force),
    })


def performance_check_text(result: ChampionDecision) -> str:
    """What the performance check says about the block's champion in force."""
    failures = "; ".join(result.failures) or "meets every threshold"
    return f"champion {result.after or '(none yet)'}: {failures}"


def build_champion_model(spec: PipelineSpec):
    """The step that trains the block's challenger (when one is called for) and decides the champion."""
    inputs = {asset_key(spec, "data_block"), asset_key(spec, "drift_report")}

    @multi_asset(
        name=f"{spec.name}__{STEP}",
        outs={CHALLENGER: challenger_out(spec),
              # optional only so that the challenger can be materialized alone: every run that selects it yields it
              CHAMPION: AssetOut(key=asset_key(spec, CHAMPION), is_required=False, description="The promotion "
                                 "decision: challenger vs champion on the same evaluation rows, with a "
                                 "significance test; automatic rollback when the champion has degraded badly.")},
        internal_asset_deps={CHALLENGER: inputs, CHAMPION: {*inputs, asset_key(spec, CHALLENGER)}},
        ins={"drift_report": AssetIn(asset_key(spec, "drift_report")),
             "data_block": AssetIn(asset_key(spec, "data_block"))},
        check_specs=[check_spec(spec, PERFORMANCE_CHECK, CHAMPION,
                                "The champion in force meets the spec's absolute thresholds", blocking=True)],
        group_name=spec.name, partitions_def=partitions(spec), can_subset=True,
    )
    def challenger_and_champion(context: AssetExecutionContext, drift_report: Assessment, data_block: LoadedBlock,
                                home: CalmOpsHomeResource, metrics: MetricsStoreResource):
        from calmops_dagster.steps.train_and_decide import train_and_decide

        selected = context.selected_output_names  # one of the two alone: a rerun of that asset
        both = train_and_decide(lambda: open_step(spec, context, home, metrics), data_block, drift_report,
                                decide=CHAMPION in selected)
        challenger, result = both.challenger, both.champion
        if CHALLENGER in selected and (output := challenger_output(spec, challenger)) is not None:
            yield output
        elif challenger.trained:  # Dagster refuses an output the run did not select
            context.log.warning(f"block {context.partition_key}: challenger {challenger.version} trained, but "
                                "challenger_model is not materialized: this run did not select it")
        if result is None:
            return
        # the overview first: a failing blocking check below ends this step, and the story must show it
        context.log_event(monitoring_materialization(spec, result.overview))
        yield Output(result, output_name=CHAMPION, metadata=champion_metadata(result))
        yield AssetCheckResult(
            asset_key=asset_key(spec, CHAMPION), check_name=PERFORMANCE_CHECK, passed=not result.failures,
            severity=AssetCheckSeverity.ERROR if result.blocking else AssetCheckSeverity.WARN,
            description=check_description(result.block, not result.failures, performance_check_text(result)),
            metadata=check_metadata(result.block, {"failures": "; ".join(result.failures) or "none",
                                                   "champion_version": result.after, "late": result.late}),
        )

    return challenger_and_champion
