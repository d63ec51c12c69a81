"""The run queue's fairness rule: a pipeline's oldest pending block goes before any pipeline's later ones.

Runs of one pipeline are processed one at a time, in block order (tag concurrency, limit 1 per pipeline).
Across pipelines the queue starts the eligible run of the highest ``dagster/priority`` first, then the
oldest. A block's run gets the priority ``-n``, where ``n`` is the number of runs of its pipeline queued or in
progress ahead of it: every pipeline's next block (priority 0) starts before any pipeline's second pending
block (-1), and that before any third (-2), however many blocks each pipeline received at once. Reruns of a
block whose process died keep priority 1 (they must go before their pipeline's next block).
"""

from __future__ import annotations

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

PRIORITY_TAG = "dagster/priority"
#: Runs that still hold or wait for their pipeline's slot in the queue.
AHEAD = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
         DagsterRunStatus.STARTED]


def runs_ahead(instance: DagsterInstance, pipeline_tag: str, pipeline: str) -> int:
    """How many runs of ``pipeline`` are queued or in progress."""
    return len(instance.get_run_ids(RunsFilter(tags={pipeline_tag: pipeline}, statuses=AHEAD)))


def block_priorities(ahead: int, count: int) -> list[str]:
    """``dagster/priority`` tags for ``count`` new block runs of a pipeline with ``ahead`` runs before them.

    >>> block_priorities(0, 3)
    ['0', '-1', '-2']
    >>> block_priorities(2, 1)
    ['-2']
    """
    return [str(-(ahead + i)) for i in range(count)]
