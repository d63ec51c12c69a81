"""``drift_report``: drift and the champion's performance on the block, over
:func:`calmops_dagster.steps.assess_block.assess_block`."""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
    asset,
)

from calmops_dagster.assets.metadata import check_description, check_metadata, ui_metadata
from calmops_dagster.assets.wiring import (
    DRIFT_CHECK,
    asset_key,
    check_spec,
    common,
    open_step,
    scores_metadata,
)
from calmops_dagster.reports.pipeline_overview import reports_url
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.results import Assessment, LoadedBlock


def drifted_table(drift_rows: pd.DataFrame) -> str:
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


def challenger_plan(result: Assessment, breaker: str | None) -> str:
    """Whether the block gets a challenger (``challenger_model`` is materialized only then), and why not.

    ``breaker`` is the circuit breaker's state as the block's ``data_block`` read it (``OPEN until ...``).
    """
    if not result.decision.retrain:
        return f"none: {result.decision.reason}"
    if result.rerun:
        return "the one the block's first run trained, if any (a rerun trains none)"
    if breaker is not None and breaker.startswith("OPEN"):
        return f"none: circuit breaker {breaker}"
    return "called for (challenger_model)"


def drift_report_metadata(spec: PipelineSpec, result: Assessment, breaker: str | None = None) -> dict:
    summary, decision = result.summary, result.decision
    return ui_metadata({
        "drift_detected": result.drift_detected,
        "drift_share": result.drift_share,
        "drifted_features_count": len(result.drifted_features),
        "retrain": decision.retrain,
        "performance_drop": decision.performance_drop,
        "reason": decision.reason,
        "challenger": challenger_plan(result, breaker),
        "reference_version": result.champion,
        "late": result.late, "rerun": result.rerun,
        "newest_block_processed": result.newest_processed,
        "top_features": ", ".join(summary.get("top_features", [])) or "none",
        "drifted_features": MetadataValue.md(drifted_table(result.drift_rows)),
        **{k: v for k, v in summary.items() if isinstance(v, (bool, int, float))},
        **scores_metadata("champion_", result.block_scores),
        **result.estimates.metadata(),
        "error_change_row": result.error_change_row,
        **({"report": MetadataValue.path(result.report_path),
            "report_url": MetadataValue.url(reports_url(spec.name, result.block))} if result.report_path else {}),
    })


def drift_check_text(result: Assessment) -> str:
    """What the drift check says about the block: the drifted share and the features."""
    drifted = ", ".join(result.drifted_features) or "none"
    return f"drift share {result.drift_share:.3g}, drifted features: {drifted}"


def build_drift_report(spec: PipelineSpec):
    @asset(
        name="drift_report",
        description="Drift of the block against the champion's training data, and the champion's "
        "performance on the block; decides whether a challenger is trained.",
        ins={"data_block": AssetIn(asset_key(spec, "data_block"))},
        check_specs=[check_spec(spec, DRIFT_CHECK, "drift_report", "Dataset-level drift decision of the drift engine")],
        **common(spec),
    )
    def drift_report(context: AssetExecutionContext, data_block: LoadedBlock, home: CalmOpsHomeResource,
                     metrics: MetricsStoreResource):
        from calmops_dagster.steps.assess_block import assess_block

        result = assess_block(open_step(spec, context, home, metrics), data_block)
        yield Output(result, metadata=drift_report_metadata(spec, result, data_block.breaker))
        yield AssetCheckResult(
            check_name=DRIFT_CHECK, passed=not result.drift_detected, severity=AssetCheckSeverity.WARN,
            description=check_description(result.block, not result.drift_detected, drift_check_text(result)),
            metadata=check_metadata(result.block, {"drift_share": result.drift_share,
                                                   "drifted_features": ", ".join(result.drifted_features) or "none"}),
        )

    return drift_report
