"""``champion_model``: the promotion decision, over :func:`calmops_dagster.steps.decide_champion.decide_champion`."""

from dagster import AssetCheckResult, AssetCheckSeverity, AssetExecutionContext, AssetIn, Output, asset

from calmops_dagster.assets.monitoring import monitoring_materialization
from calmops_dagster.assets.wiring import (
    PERFORMANCE_CHECK,
    asset_key,
    check_spec,
    common,
    open_step,
    scores_metadata,
)
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.results import Assessment, ChallengerOutcome, ChampionDecision, LoadedBlock


def champion_metadata(result: ChampionDecision) -> dict:
    decision = result.decision
    return {
        "champion_version": result.after or "none", "decision": decision.decision,
        "promoted": int(decision.promoted), "rolled_back": int(decision.decision == "rolled_back"),
        "late": int(result.late), "rerun": int(result.rerun), "reason": result.reason,
        **({"test": decision.test} if decision.test else {}),
        **{k: float(v) for k in ("p_value", "ci_low", "ci_high") if (v := getattr(decision, k)) is not None},
        **scores_metadata("", result.in_force),
    }


def build_champion_model(spec: PipelineSpec):
    @asset(
        name="champion_model",
        description="The promotion decision: challenger vs champion on the same evaluation rows, with a "
        "significance test; automatic rollback when the champion has degraded badly.",
        ins={"challenger_model": AssetIn(asset_key(spec, "challenger_model")),
             "drift_report": AssetIn(asset_key(spec, "drift_report")),
             "data_block": AssetIn(asset_key(spec, "data_block"))},
        check_specs=[check_spec(spec, PERFORMANCE_CHECK, "champion_model",
                                "The champion in force meets the spec's absolute thresholds", blocking=True)],
        **common(spec),
    )
    def champion_model(context: AssetExecutionContext, challenger_model: ChallengerOutcome, drift_report: Assessment,
                       data_block: LoadedBlock, home: CalmOpsHomeResource, metrics: MetricsStoreResource):
        from calmops_dagster.steps.decide_champion import decide_champion

        result = decide_champion(open_step(spec, context, home, metrics), data_block, drift_report, challenger_model)
        # the overview first: a failing blocking check below ends this step, and the story must show it
        context.log_event(monitoring_materialization(spec, result.overview))
        yield Output(result, metadata=champion_metadata(result))
        yield AssetCheckResult(
            check_name=PERFORMANCE_CHECK, passed=not result.failures,
            severity=AssetCheckSeverity.ERROR if result.blocking else AssetCheckSeverity.WARN,
            metadata={"failures": "; ".join(result.failures) or "none", "champion_version": result.after or "none",
                      "late": int(result.late)},
        )

    return champion_model
