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
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetMaterialization,
    AssetSpec,
    DynamicPartitionsDefinition,
    MetadataValue,
    Output,
    PreviewWarning,
    asset,
)

from calmops_dagster.assets.block_alerts import alert_run
from calmops_dagster.assets.challenger_model import build_challenger_model
from calmops_dagster.assets.data_block import build_data_block
from calmops_dagster.assets.drift_report import build_drift_report
from calmops_dagster.assets.wiring import PERFORMANCE_CHECK
from calmops_dagster.ingest.block_data import sort_block_keys
from calmops_dagster.orchestration.run_tags import VERSION_TAG
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.block_context import (
    champions_before,
    is_rerun,
    read_context,
    spec_with_settings,
    write_context,
)
from calmops_dagster.steps.pipeline_overview import pipeline_overview
from calmops_dagster.steps.predict_block import ensure_champion, predict_block, write_predictions
from calmops_dagster.steps.results import Assessment, ChallengerOutcome, LoadedBlock
from calmops_dagster.store.model_store import now_utc
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


def monitoring_materialization(spec: PipelineSpec, home, metrics) -> AssetMaterialization:
    """The ``<name>/monitoring`` overview after a block: champion, decisions, drift, links (see
    :mod:`calmops_dagster.interfaces.pipeline_overview`)."""
    view = pipeline_overview(home.paths, spec.name, spec.performance.metric, metrics=metrics.store())
    metadata = {
        "champion": view.champion, "champion_since": view.champion_since, "last_block": view.last_block,
        "blocks_processed": view.blocks_processed, "promotions": view.promotions, "rollbacks": view.rollbacks,
        **view.numbers,
        "last_decisions": MetadataValue.md(view.decisions_md),
        "drift_per_block": MetadataValue.md(view.drift_md),
        "most_drifting_features": MetadataValue.md(view.features_md),
        "pipeline_report": MetadataValue.url(view.pipeline_report_url),
    }
    if view.block_report_url:
        metadata["last_block_report"] = MetadataValue.url(view.block_report_url)
        metadata["last_block_report_path"] = MetadataValue.path(view.block_report_path)
    return AssetMaterialization(AssetKey([spec.name, MONITORING]), metadata=metadata,
                                description=f"after block {view.last_block}")


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

    @asset(
        name="champion_model",
        description="The promotion decision: challenger vs champion on the same evaluation rows, with a "
        "significance test; automatic rollback when the champion has degraded badly.",
        ins={"challenger_model": AssetIn(key("challenger_model")), "drift_report": AssetIn(key("drift_report")),
             "data_block": AssetIn(key("data_block"))},
        check_specs=[check(PERFORMANCE_CHECK, "champion_model",
                           "The champion in force meets the spec's absolute thresholds", blocking=True)],
        **common,
    )
    def champion_model(context: AssetExecutionContext, challenger_model: ChallengerOutcome, drift_report: Assessment,
                       data_block: LoadedBlock, home: CalmOpsHomeResource, metrics: MetricsStoreResource):
        from calmops_dagster.learning.evaluation import threshold_failures
        from calmops_dagster.steps.decide_champion import judge_champion, settle_champion
        from calmops_dagster.steps.estimated_performance import prepare_calibration

        block, store, db = context.partition_key, home.model_store(spec.name), metrics.store()
        data_block = data_block.frame
        late, recorded = drift_report.late, read_context(db, spec, block, context.run_id)
        rerun = is_rerun(recorded)
        if rerun:  # the decision as it was made, against the champions of the time; nothing is moved
            run_spec, before = spec_with_settings(spec, recorded.settings), recorded.champion_version
            decision, in_force, after = judge_champion(
                run_spec, store, data_block, challenger_model, drift_report.block_scores, before,
                champions_before(store, recorded), drift_report.held, drift_report.rollback_hold)
        else:
            run_spec, before = spec, store.champion_version()
            decision, in_force = settle_champion(spec, store, block, data_block, challenger_model,
                                                 drift_report.block_scores, drift_report.held,
                                                 drift_report.rollback_hold)
            after = store.champion_version()
            write_context(db, spec, block, context.run_id, recorded, champion_after=after, decided=True)
            if after not in (None, before):  # the next block's estimate reads the folds instead of fitting them
                context.log.debug(f"block {block}: estimation for {after}: " + prepare_calibration(
                    spec, store, after, home.paths.estimation_dir(spec.name)))
        perf = run_spec.performance
        reason = decision.reason if challenger_model.version or decision.decision != "kept" else (
            challenger_model.reason)
        db.replace_block_rows("promotions", spec.name, block, [{
            "champion_before": before, "challenger": challenger_model.version, "decision": decision.decision,
            "reason": reason, "metric": perf.metric, "champion_score": decision.champion_score,
            "challenger_score": decision.challenger_score, "champion_after": after, "test": decision.test,
            "p_value": decision.p_value, "ci_low": decision.ci_low, "ci_high": decision.ci_high,
            "late": late, "decided_at": now_utc(),
        }], run_id=context.run_id)
        drift = "drift" if drift_report.drift_detected else "no drift"
        context.log.info(f"block {block}: {decision.decision} ({reason}); {drift}; champion {after or 'none'}")
        # the overview first: a failing blocking check below ends this step, and the story must show it
        context.log_event(monitoring_materialization(spec, home, metrics))
        yield Output(
            {"champion_version": after, "decision": decision.decision, "reason": reason},
            metadata={"champion_version": after or "none", "decision": decision.decision,
                      "promoted": int(decision.promoted), "rolled_back": int(decision.decision == "rolled_back"),
                      "late": int(late), "rerun": int(rerun),
                      "reason": reason, **({"test": decision.test} if decision.test else {}),
                      **{k: float(v) for k in ("p_value", "ci_low", "ci_high")
                         if (v := getattr(decision, k)) is not None},
                      **_scores_metadata("", in_force)},
        )
        failures = [f"no champion ({reason})"] if after is None else threshold_failures(in_force or {}, perf.thresholds)
        unlabelled = spec.target not in data_block.columns  # delayed labels: nothing to check yet
        alert_run(spec, home.paths, db, block, context.instance, context.run_id, {PERFORMANCE_CHECK: failures},
                  context.log)
        untrained = after is None and challenger_model["version"] is None  # e.g. too few rows to train
        yield AssetCheckResult(  # a late block's result is a warning: it never replaces the champion,
            check_name=PERFORMANCE_CHECK,  # so its predictions are made by the champion in force anyway
            passed=not failures,
            severity=AssetCheckSeverity.WARN if late or unlabelled or untrained else AssetCheckSeverity.ERROR,
            metadata={"failures": "; ".join(failures) or "none", "champion_version": after or "none",
                      "late": int(late)},
        )

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
            context.log_event(monitoring_materialization(spec, home, metrics))
            alert_run(spec, home.paths, metrics.store(), block, context.instance, context.run_id, log=context.log)
        record_run_processed(context, spec, metrics)
        return Output(str(path), metadata={
            "rows": len(result), "model_version": version, "path": MetadataValue.path(str(path)),
            **({f"share_{k}": float(v) for k, v in counts.items()} if counts is not None else
               {"mean_prediction": float(result["prediction"].mean())}),
        })

    monitoring = AssetSpec(
        key(MONITORING), group_name=spec.name,
        deps=[key("predictions") if spec.prediction_only else key("champion_model")],
        description=f"Overview of pipeline {spec.name}, reported after every block by the block's run: "
        "champion and since when, the last decisions and their reasons, drift per block, the features that "
        "drift most, links to the reports (served by `calmops serve`).",
    )
    if spec.prediction_only:
        chain = [data_block, drift_report, predictions] if spec.reference_file else [data_block, predictions]
    else:
        chain = [data_block, drift_report, challenger_model, champion_model, predictions]
    return [*chain, monitoring]
