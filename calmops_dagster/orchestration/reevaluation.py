"""Re-evaluation's Dagster wiring: ``calmops reevaluate NAME [--blocks 1-5] [--against current|VERSION]
[--drift.alpha 0.01 ...]`` runs the pipeline's job ``<name>_reevaluate`` once per block (one Dagster run per
partition, tagged ``calmops/reevaluation``, visible in the UI under that job). Its op calls
:func:`calmops_dagster.steps.reevaluate_block.reevaluate_block`, imported when the op runs, not when the
code location builds the job.
"""

import json
import uuid

from dagster import Config, DynamicPartitionsDefinition, OpExecutionContext, Output, job, op

from calmops_dagster.assets.wiring import open_step
from calmops_dagster.orchestration.run_tags import PIPELINE_TAG
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec

REEVALUATION_TAG = "calmops/reevaluation"


def reevaluation_job_name(spec: PipelineSpec) -> str:
    return f"{spec.name}_reevaluate"


def reevaluation_op_name(spec: PipelineSpec) -> str:
    """The op of the ``<name>_reevaluate`` job: named after the pipeline, since op names are unique across a
    code location (two pipelines' ops of one name fail to load)."""
    return f"{spec.name}_reevaluate_block"


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
        from calmops_dagster.steps.reevaluate_block import reevaluate_block as reevaluate

        result = reevaluate(open_step(spec, context, home, metrics), config.reevaluation_id, config.against,
                            json.loads(config.changes))
        return Output(result, metadata={
            "reevaluation_id": result.reevaluation_id, "against": result.against,
            "changes": json.dumps(result.changes), "drift_detected": int(result.drift_detected),
            "drift_share": result.drift_share, "retrain": int(result.retrain),
            "original_drift_detected": int(result.original_drift_detected),
            "original_retrain": int(result.original_retrain), "reason": result.reason,
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
    from calmops_dagster.steps.reevaluate_block import check_changes

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
