"""What the steps of a block hand each other and the assets: one dataclass per step's result.

The assets pass these between them (Dagster stores them with its IO manager) and turn them into output
metadata and check results; nothing downstream reads a value by a string key. This module imports nothing
heavy, so the code location can name these types in the assets' signatures without loading the steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from calmops_dagster.ingest.labels import LabelCount
    from calmops_dagster.learning.promotion import PromotionDecision
    from calmops_dagster.learning.retrain_policy import RetrainDecision
    from calmops_dagster.reports.pipeline_overview import Overview
    from calmops_dagster.steps.estimated_performance import BlockEstimates

#: The checks the assets report from these results, by name (a failed check's alert names it too).
SCHEMA_CHECK = "schema_and_nulls"
DRIFT_CHECK = "no_data_drift"
PERFORMANCE_CHECK = "champion_meets_thresholds"


@dataclass(frozen=True)
class LoadedBlock:
    """The block's rows as :func:`~calmops_dagster.steps.load_block.load_block` loaded and recorded them,
    stored by the assets' IO manager as ``blocks/<block>.parquet`` (the history of ``window``/``replay_mix``)."""

    block: str
    frame: pd.DataFrame
    features: list[str]
    source_files: list[str]
    version: str
    """The block's version: the hash of its file versions' content hashes (the run is tagged with it)."""
    content_hash: str
    null_cells: int
    max_null_share: float
    worst_column: str
    nulls_within_limit: bool
    """The schema check: no feature's null share above ``data_quality.max_null_share``."""
    labels: LabelCount | None = None
    """Delayed labels: how the block's rows met the labels landed so far."""
    breaker: str | None = None
    """The circuit breaker's state as ``calmops list`` shows it (``None``: prediction-only)."""


@dataclass(frozen=True)
class Assessment:
    """The block measured against the champion in force, and whether it calls for a challenger
    (:func:`~calmops_dagster.steps.assess_block.assess_block`)."""

    block: str
    champion: str | None
    """The champion the block was judged against (``None``: none yet)."""
    rerun: bool
    late: bool
    decision: RetrainDecision
    """Whether a challenger is trained, and why (after the late-block rule)."""
    summary: dict
    """The drift report's summary (empty without a champion)."""
    drifted_features: list[str]
    block_scores: dict[str, float] | None
    """The champion's scores on the block (``None``: no champion or no labels)."""
    estimates: BlockEstimates
    drift_rows: pd.DataFrame
    """The block's ``drift_results`` rows."""
    newest_processed: str | None = None
    """A late block's first run: the newest block processed before it."""
    held: str | None = None
    """Why a challenger the block called for was not trained (a late block), the ``late_kept`` reason."""
    rollback_hold: str | None = None
    """Why the block must not roll the champion back (a late block)."""
    error_change_row: int | None = None
    """Where in the block the champion's error stream changed (streaming detectors)."""
    report_path: str | None = None
    """The block's HTML drift report."""

    @property
    def drift_detected(self) -> bool:
        return bool(self.summary.get("drift_detected"))

    @property
    def drift_share(self) -> float:
        return float(self.summary.get("drift_share", 0.0))


@dataclass(frozen=True)
class PairedRows:
    """The held-out rows of a block with both models' predictions on them: the promotion test's data."""

    y_true: np.ndarray
    champion_pred: np.ndarray
    challenger_pred: np.ndarray


@dataclass(frozen=True)
class ChallengerOutcome:
    """The block's challenger, scored with the champion on the same held-out rows, or why there is none
    (:func:`~calmops_dagster.steps.train_challenger.train_challenger`)."""

    version: str | None
    """The challenger's model version (``None``: none trained; ``reason`` says why)."""
    champion_version: str | None
    reason: str
    trained: bool = False
    """Trained by this run (a rerun re-scores the challenger trained by the block's first run)."""
    rerun: bool = False
    breaker_open: bool = False
    note: str = ""
    challenger_scores: dict[str, float] | None = None
    champion_scores: dict[str, float] | None = None
    paired: PairedRows | None = None
    train_rows: int = 0
    eval_rows: int = 0
    ipip: dict[str, float] = field(default_factory=dict)
    """IPIP's p, b and ensemble figures (``ipip_*``; empty for other models)."""
    trained_by: str | None = None
    """The custom function that built the challenger (``module.path:function``; ``None``: the retrain mode)."""


@dataclass(frozen=True)
class ChampionDecision:
    """The block's promotion decision and the champion it leaves in force
    (:func:`~calmops_dagster.steps.decide_champion.decide_champion`)."""

    block: str
    decision: PromotionDecision
    reason: str
    """Why: the decision's reason, or why no challenger was trained when the champion was simply kept."""
    before: str | None
    after: str | None
    in_force: dict[str, float] | None
    """The scores of the champion in force after the decision."""
    late: bool
    rerun: bool
    failures: list[str]
    """The in-force champion's failures of the spec's absolute thresholds (the performance check)."""
    blocking: bool
    """A failure stops the run (not for a late or unlabelled block, whose champion stays in force anyway, nor
    for a block that trained nothing and found no champion, which says why)."""
    overview: Overview
    """The pipeline's overview after this block."""


@dataclass(frozen=True)
class ChallengerAndChampion:
    """The block's challenger and the decision on it, the two assets of one Dagster step
    (:func:`~calmops_dagster.steps.train_and_decide.train_and_decide`)."""

    challenger: ChallengerOutcome
    champion: ChampionDecision | None
    """``None``: no decision was asked for (``challenger_model`` materialized alone)."""


@dataclass(frozen=True)
class Predictions:
    """The champion's predictions for the block (:func:`~calmops_dagster.steps.predict_block.predict_block`),
    stored by the assets' IO manager as ``predictions/<block>.parquet``."""

    block: str
    version: str | None
    """The champion that predicted: the one the block's decision left in force (``None``: no champion yet, as
    the block's decision says; nothing is predicted)."""
    frame: pd.DataFrame | None
    """``prediction`` (and ``proba_<class>``) per row, tagged with ``model_version`` (``None``: nothing
    predicted)."""
    rows: int
    shares: dict[str, float] | None
    """Classification: the share of each predicted class."""
    mean_prediction: float | None
    """Regression: the mean prediction."""
    overview: Overview | None = None
    """Prediction-only pipelines (no champion step): the pipeline's overview after this block."""


@dataclass(frozen=True)
class Reevaluation:
    """A processed block judged again against a chosen champion and/or changed settings
    (:func:`~calmops_dagster.steps.reevaluate_block.reevaluate_block`)."""

    block: str
    reevaluation_id: str
    against: str
    changes: dict
    """What differs from the block's first run: ``against`` (when another champion) and the setting changes."""
    drift_detected: bool
    drift_share: float
    retrain: bool
    reason: str
    original_drift_detected: bool
    original_retrain: bool
