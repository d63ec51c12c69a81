"""Re-evaluation: drift and performance of past blocks against a chosen champion and/or new settings.

"What would the new thresholds have said last quarter?" ``calmops reevaluate NAME [--blocks 1-5]
[--against current|VERSION] [--drift.alpha 0.01 ...]`` runs the pipeline's dedicated job
``<name>_reevaluate`` once per block (one Dagster run per partition, tagged ``calmops/reevaluation``, visible
in the UI under that job). Each run judges the block's kept rows (``pipelines/<name>/blocks/<block>.parquet``)
against the champion asked for (by default the one in force when the block was first processed) with the
settings recorded then plus the changes, and writes ``reevaluation_summary`` / ``reevaluation_results`` rows
marked with the re-evaluation's id and what was changed, beside the original decisions, never over them. It
trains nothing and moves no champion. The drift engine is imported when the op runs, not when the code
location builds the job.
"""


import copy
import json
import uuid

from dagster import Config, DynamicPartitionsDefinition, OpExecutionContext, Output, job, op

from calmops_dagster.errors import CalmOpsError
from calmops_dagster.ingest.block_data import sort_block_keys
from calmops_dagster.ingest.block_history import read_blocks
from calmops_dagster.orchestration.run_tags import PIPELINE_TAG
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.block_context import read_context, settings_of, spec_with_settings
from calmops_dagster.store.model_store import now_utc

REEVALUATION_TAG = "calmops/reevaluation"
#: Settings a re-evaluation may change (``--drift.alpha 0.01``, ``--performance.max_relative_drop 0.2``).
CHANGEABLE = ("drift", "performance")


def reevaluation_job_name(spec: PipelineSpec) -> str:
    return f"{spec.name}_reevaluate"


def reevaluation_op_name(spec: PipelineSpec) -> str:
    """The op of the ``<name>_reevaluate`` job: named after the pipeline, since op names are unique across a
    code location (two pipelines' ops of one name fail to load)."""
    return f"{spec.name}_reevaluate_block"


def select_blocks(text: str | None, processed: list[str]) -> list[str]:
    """The processed blocks named by ``text`` (``1-5``, ``1,3,7``, ``2-4,9``; ``None``: all), in block order.

    >>> select_blocks("2-4,6", ["1", "2", "3", "4", "5", "6"])
    ['2', '3', '4', '6']
    """
    ordered = sort_block_keys(processed)
    if not text:
        return ordered
    chosen = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        low, sep, high = part.partition("-")
        if sep:  # a range: every processed block from low to high in block order
            missing = [k for k in (low, high) if k not in ordered]
            if missing:
                raise CalmOpsError(f"--blocks {text}: block(s) {missing} not processed (processed: {ordered})")
            chosen.update(ordered[ordered.index(low): ordered.index(high) + 1])
        elif part in ordered:
            chosen.add(part)
        else:
            raise CalmOpsError(f"--blocks {text}: block '{part}' not processed (processed: {ordered})")
    return [block for block in ordered if block in chosen]


def changed_settings(recorded: dict, changes: dict[str, object]) -> dict:
    """``recorded`` settings with the dotted ``changes`` (``{"drift.alpha": 0.01}``) applied."""
    settings = copy.deepcopy(recorded)
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if section not in CHANGEABLE or not field or "." in field:
            raise CalmOpsError(f"--{key}: a re-evaluation changes drift.* and performance.* settings only")
        settings.setdefault(section, {})[field] = value
    return settings


def check_changes(spec: PipelineSpec, changes: dict[str, object]) -> None:
    """Refuse changes the spec's validation would refuse, before any run starts."""
    try:
        spec_with_settings(spec, changed_settings(settings_of(spec), changes))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise CalmOpsError(f"invalid re-evaluation settings: {exc}") from None


class ReevaluationConfig(Config):
    reevaluation_id: str
    against: str = ""
    """``""``: the champion in force when the block was first processed; ``current``; or a version."""
    changes: str = "{}"
    """JSON of the dotted setting changes, e.g. ``{"drift.alpha": 0.01}``."""


def build_reevaluation_job(spec: PipelineSpec):
    """The pipeline's ``<name>_reevaluate`` job: one op, partitioned like the pipeline's assets."""

    @op(name=reevaluation_op_name(spec), description="Drift and performance of one processed block against a chosen "
        "champion and/or changed settings; rows beside the original decisions.")
    def reevaluate_block(context: OpExecutionContext, config: ReevaluationConfig, home: CalmOpsHomeResource,
                         metrics: MetricsStoreResource):
        from calmops_dagster.learning.block_assessment import assessment_rows
        from calmops_dagster.steps.assess_block import (
            DRIFT_COLUMNS,
            assess_against,
            hold_retrain,
            summary_row,
        )

        block, store, db = context.partition_key, home.model_store(spec.name), metrics.store()
        recorded = read_context(db, spec, block)
        original = db.query("SELECT reference_version, drift_detected, retrain FROM drift_summary "
                            "WHERE pipeline = ? AND block = ?", [spec.name, block], pipeline=spec.name)
        if original.empty:
            raise CalmOpsError(f"block {block} of '{spec.name}' was never processed: nothing to re-evaluate")
        first = original.iloc[0]
        then = recorded.champion_version if recorded else first["reference_version"]
        against = {"": then, "current": store.champion_version()}.get(config.against, config.against)
        if against not in store.versions():
            raise CalmOpsError(f"--against {config.against or then}: no such model version of '{spec.name}'")
        changes = json.loads(config.changes)
        settings = changed_settings(recorded.settings if recorded and recorded.settings else settings_of(spec),
                                    changes)
        run_spec = spec_with_settings(spec, settings)
        frame = read_blocks(home.paths.blocks_dir(spec.name), [block])
        assessment = assess_against(run_spec, store, frame, against)
        decision, _ = hold_retrain(assessment.decision, recorded.promotion_hold if recorded else None)
        row = summary_row(assessment, decision, against)
        what = {**({"against": against} if against != then else {}), **changes}
        stamp, scope = now_utc(), {"reevaluation_id": config.reevaluation_id}
        db.replace_block_rows("reevaluation_summary", spec.name, block, [{
            **row, "run_id": context.run_id, "against": against, "changes": json.dumps(what, sort_keys=True),
            "original_reference_version": first["reference_version"],
            "original_drift_detected": bool(first["drift_detected"]), "original_retrain": bool(first["retrain"]),
            "computed_at": stamp,
        }], scope=scope)
        rows = assessment_rows(assessment).reindex(columns=DRIFT_COLUMNS)
        db.replace_block_rows("reevaluation_results", spec.name, block,
                              rows.assign(run_id=context.run_id, computed_at=stamp), scope=scope)
        context.log.info(f"block {block} re-evaluated against {against} ({what or 'no change'}): "
                         f"{decision.reason}")
        return Output(row, metadata={
            "reevaluation_id": config.reevaluation_id, "against": against, "changes": json.dumps(what),
            "drift_detected": int(row["drift_detected"]), "drift_share": float(row["drift_share"]),
            "retrain": int(row["retrain"]), "original_drift_detected": int(bool(first["drift_detected"])),
            "original_retrain": int(bool(first["retrain"])), "reason": row["reason"],
        })

    @job(name=reevaluation_job_name(spec), partitions_def=DynamicPartitionsDefinition(name=spec.partitions_name),
         tags={PIPELINE_TAG: spec.name},
         description=f"Re-evaluate processed blocks of {spec.name} (calmops reevaluate); the original "
                     "decisions are left as they are.")
    def reevaluate():
        reevaluate_block()

    return reevaluate


def run_reevaluation(instance, spec: PipelineSpec, job_def, blocks: list[str], against: str = "",
                     changes: dict | None = None):
    """Run ``job_def`` for every block (in order, in-process, on ``instance``); return (id, results)."""
    changes = dict(changes or {})
    check_changes(spec, changes)
    reevaluation_id = uuid.uuid4().hex[:12]
    config = {"ops": {reevaluation_op_name(spec): {"config": {
        "reevaluation_id": reevaluation_id, "against": against, "changes": json.dumps(changes)}}}}
    results = []
    for block in blocks:
        outcome = job_def.execute_in_process(instance=instance, partition_key=block, run_config=config,
                                             tags={REEVALUATION_TAG: reevaluation_id}, raise_on_error=False)
        results.append((block, outcome))
    return reevaluation_id, results
