"""What every step of a block is given: the pipeline, the block and its run, the stores, a log, the block's
alerts, and what was recorded about the block before the step started.

A block's first run decides (champion, promotion) and records what was in force; a later run of the same
block is a **rerun** and reproduces it (:mod:`calmops_dagster.steps.block_context`). Which one a step is in,
and which settings and champion are then in force, is worked out here once, from the recorded context the
run reads from the store once: the steps read :attr:`StepContext.rerun` and :attr:`StepContext.settings`
instead of deriving them again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.block_context import BlockContext, is_rerun, read_context, spec_with_settings
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from calmops_dagster.store.paths import CalmOpsHome


class StepLog(Protocol):
    """Where a step says what it did: Dagster's run log in a run, any :class:`logging.Logger` elsewhere."""

    def debug(self, msg: str) -> object: ...
    def info(self, msg: str) -> object: ...
    def warning(self, msg: str) -> object: ...


class BlockAlerts(Protocol):
    """Sends the block's alerts (:mod:`calmops_dagster.interfaces.alerts`): the events it recorded and the
    checks that failed in its run so far, with ``checks``, those the calling step's asset is about to report
    (name -> what failed). Never raises. The orchestrator gives it, as a run's checks are in its event log."""

    def __call__(self, checks: dict[str, list[str]] | None = None) -> object: ...


@dataclass(frozen=True)
class BlockOrder:
    """The order the pipeline's blocks were registered in, asked of the orchestrator only when a step needs it
    (a stream pipeline's event order: placing a block in event time, a challenger reading earlier blocks)."""

    registered: Callable[[], list[str]]
    """Every block in the order it was registered: a stream pipeline's arrival order."""


@dataclass(frozen=True)
class StepContext:
    """One step of ``block`` in run ``run_id`` of pipeline ``spec``."""

    spec: PipelineSpec
    block: str
    run_id: str | None
    models: ModelStore
    metrics: MetricsStore
    paths: CalmOpsHome
    recorded: BlockContext | None
    """The block's recorded context when the step started (``None``: not processed yet, or prediction-only)."""
    order: BlockOrder
    log: StepLog
    alerts: BlockAlerts
    """Sends the block's alerts: the step that ends the block's work calls it once its rows are written."""

    @property
    def rerun(self) -> bool:
        """The block's decision was made by an earlier run: this one reproduces it and moves nothing."""
        return is_rerun(self.recorded)

    @cached_property
    def settings(self) -> PipelineSpec:
        """The spec in force: on a rerun, with the ``drift``, ``performance`` and ``promotion`` settings
        recorded when the block was first processed."""
        return spec_with_settings(self.spec, self.recorded.settings) if self.rerun else self.spec


def step_context(spec: PipelineSpec, block: str, run_id: str | None, models: ModelStore, metrics: MetricsStore,
                 paths: CalmOpsHome, order: BlockOrder, log: StepLog, alerts: BlockAlerts) -> StepContext:
    """The context of a step of ``block``; the recorded context is read from the store once per run
    (:func:`~calmops_dagster.steps.block_context.read_context` with ``run_id``)."""
    recorded = None if spec.prediction_only else read_context(metrics, spec, block, run_id)
    return StepContext(spec, block, run_id, models, metrics, paths, recorded, order, log, alerts)
