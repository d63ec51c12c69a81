"""Train the block's challenger, then decide the champion on it: the work of the one Dagster step behind the
assets ``challenger_model`` and ``champion_model`` (docs/architecture.md says why they share a step)."""

from __future__ import annotations

from collections.abc import Callable

from calmops_dagster.steps.decide_champion import decide_champion
from calmops_dagster.steps.results import Assessment, ChallengerAndChampion, LoadedBlock
from calmops_dagster.steps.step_context import StepContext
from calmops_dagster.steps.train_challenger import train_challenger


def train_and_decide(open_context: Callable[[], StepContext], rows: LoadedBlock, assessment: Assessment,
                     decide: bool = True) -> ChallengerAndChampion:
    """:func:`~calmops_dagster.steps.train_challenger.train_challenger`, then, when ``decide``,
    :func:`~calmops_dagster.steps.decide_champion.decide_champion` on its challenger. Each step gets a context
    opened when it starts (``open_context``), so the decision's holds what training recorded."""
    challenger = train_challenger(open_context(), rows, assessment)
    decision = decide_champion(open_context(), rows, assessment, challenger) if decide else None
    return ChallengerAndChampion(challenger, decision)
