"""What the assets of one pipeline share: keys, partitions, check specs, and the context of each step.

Every asset is partitioned by the pipeline's dynamic partitions (one per block) and keyed
``<pipeline>/<asset>``; its checks are partitioned like it.
"""

from __future__ import annotations

import warnings
from functools import partial

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    DynamicPartitionsDefinition,
    OpExecutionContext,
    PreviewWarning,
)

from calmops_dagster.assets.block_alerts import alert_run
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.results import DRIFT_CHECK, PERFORMANCE_CHECK, SCHEMA_CHECK  # noqa: F401 -- for the assets
from calmops_dagster.steps.step_context import BlockOrder, StepContext, step_context


def asset_key(spec: PipelineSpec, name: str) -> AssetKey:
    return AssetKey([spec.name, name])


def partitions(spec: PipelineSpec) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=spec.partitions_name)


def common(spec: PipelineSpec) -> dict:
    """The ``@asset`` arguments every asset of the pipeline shares."""
    return {"key_prefix": [spec.name], "group_name": spec.name, "partitions_def": partitions(spec)}


def check_spec(spec: PipelineSpec, name: str, asset_name: str, description: str,
               blocking: bool = False) -> AssetCheckSpec:
    """A check partitioned like its asset, so every result carries its block (UI check history, GraphQL
    ``assetCheckExecutions[].partition``) and a failed block can be re-run from there."""
    with warnings.catch_warnings():  # partitioned checks are a Dagster "preview" feature (1.13)
        warnings.simplefilter("ignore", PreviewWarning)
        return AssetCheckSpec(name, asset=asset_key(spec, asset_name), description=description, blocking=blocking,
                              partitions_def=partitions(spec))


def scores_metadata(prefix: str, scores: dict[str, float] | None) -> dict:
    """``<prefix><metric>`` for each score."""
    return {f"{prefix}{metric}": float(value) for metric, value in (scores or {}).items()}


def open_step(spec: PipelineSpec, context: AssetExecutionContext | OpExecutionContext, home: CalmOpsHomeResource,
              metrics: MetricsStoreResource) -> StepContext:
    """The step's context in this run (an asset's, or the re-evaluation op's): the block, the stores, the run's
    log and the block's recorded context; the order of blocks is asked of the Dagster instance only when the
    step needs it, and the block's alerts read the checks failed so far from the run's event log."""
    instance, block, store = context.instance, context.partition_key, metrics.store()
    order = BlockOrder(registered=lambda: instance.get_dynamic_partitions(spec.partitions_name))
    alerts = partial(alert_run, spec, home.paths, store, block, instance, context.run_id, log=context.log)
    return step_context(spec, block, context.run_id, home.model_store(spec.name), store, home.paths, order,
                        context.log, alerts)
