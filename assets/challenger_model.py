"""``challenger_model``: a model trained on the block when its drift report asks for one, over
:func:`calmops_dagster.steps.train_challenger.train_challenger`.

The asset is materialized only for the blocks whose challenger was trained (or, on a rerun, scored again):
its partitions are the blocks that trained one. It is produced by the step that decides the champion
(:mod:`calmops_dagster.assets.champion_model`), as an optional output: Dagster skips every step downstream
of an output that was not produced, so the champion's decision, which every block needs, is made in the same
step. Why a block trained none is in its ``drift_report`` (``retrain``, ``reason``, ``challenger``) and in
its ``champion_model`` (``reason``).
"""

from dagster import AssetOut, Output

from calmops_dagster.assets.metadata import ui_metadata
from calmops_dagster.assets.wiring import asset_key, scores_metadata
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.results import ChallengerOutcome

CHALLENGER = "challenger_model"


def challenger_out(spec: PipelineSpec) -> AssetOut:
    """The optional ``challenger_model`` output."""
    return AssetOut(key=asset_key(spec, CHALLENGER), is_required=False,
                    description="A model trained on the block (retrain mode of the spec) when drift_report asks "
                    "for one; blocks that trained none have no materialization (their drift_report says why).")


def challenger_metadata(spec: PipelineSpec, result: ChallengerOutcome) -> dict:
    return ui_metadata({
        "trained": result.trained, "rerun": not result.trained, "version": result.version,
        "retrain_mode": spec.retrain_mode, "note": result.note, "train_rows": result.train_rows,
        "eval_rows": result.eval_rows, **result.ipip, "trained_by": result.trained_by,
        **scores_metadata("challenger_", result.challenger_scores),
        **scores_metadata("champion_", result.champion_scores),
    })


def challenger_output(spec: PipelineSpec, result: ChallengerOutcome) -> Output | None:
    """The block's ``challenger_model`` materialization, or ``None`` when the block has no challenger."""
    if result.version is None:
        return None
    return Output(result, output_name=CHALLENGER, metadata=challenger_metadata(spec, result))
