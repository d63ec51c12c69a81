"""The champion/challenger steps of a block, between the model store and the pure decisions.

:func:`make_challenger` trains a challenger with the spec's retrain mode (or the IPIP update), stores it as
a new version (kept even if it is later rejected), and scores it and the champion on the same held-out
rows, keeping both models' per-row predictions on them. :func:`settle_champion` runs the significance test
on those paired rows (:func:`~calmops_dagster.learning.promotion.gain_evidence`), applies
:func:`~calmops_dagster.learning.promotion.decide_promotion` (or the automatic rollback) and moves the champion
pointer. The assets only wire these to Dagster: ``challenger_model`` hands the paired rows to
``champion_model``, so the decision is made from the rows, not from two summary scores.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pandas as pd

from calmops_dagster.learning.evaluation import score_model
from calmops_dagster.learning.event_time import LATE_KEPT
from calmops_dagster.learning.ipip import IPIPClassifier
from calmops_dagster.learning.model_factory import build_model
from calmops_dagster.learning.promotion import (
    PROMOTED,
    ROLLED_BACK,
    PromotionDecision,
    choose_rollback,
    decide_promotion,
    gain_evidence,
)
from calmops_dagster.learning.retrain_modes import Trained, train_challenger
from calmops_dagster.learning.training import evaluation_split
from calmops_dagster.spec import PipelineSpec, column_kinds
from calmops_dagster.store.model_store import ModelStore


def _ipip_challenger(spec: PipelineSpec, X: pd.DataFrame, y: pd.Series, champion) -> Trained:
    """IPIP: the champion's ensembles updated with the block (pooled, pruned on 20% of it), or new ones."""
    rows = X.assign(**{spec.target: np.asarray(y)})
    if champion is not None and isinstance(champion.named_steps["model"], IPIPClassifier):
        model = copy.deepcopy(champion)
        model.named_steps["model"].update(model[:-1].transform(X), np.asarray(y))
        return Trained(model, rows, "IPIP ensembles updated with the block and pruned")
    model = build_model(spec.model_spec, X)
    model.steps[-1] = ("model", IPIPClassifier(estimator=model.steps[-1][1], random_state=spec.seed))
    return Trained(model.fit(X, np.asarray(y)), rows, "new IPIP ensembles")


def ipip_stats(model) -> dict:
    """p, b and the share of new ensembles kept, for metadata (empty for other models)."""
    inner = getattr(model, "named_steps", {}).get("model")
    if not isinstance(inner, IPIPClassifier):
        return {}
    return {"ipip_p": int(inner.p_), "ipip_b": int(inner.b_), "ipip_np": int(inner.np_),
            "ipip_kept_new_share": float(inner.kept_new_share_),
            "ipip_models": int(sum(len(e) for e in inner.ensembles_))}


def make_challenger(spec: PipelineSpec, store: ModelStore, block: str, frame: pd.DataFrame,
                    history: pd.DataFrame | None = None, history_blocks: list[str] | None = None) -> dict:
    """Train, store and score a challenger for ``block``; the result feeds :func:`settle_champion`.

    ``history`` holds the rows of the earlier blocks ``history_blocks`` (for ``window`` and ``replay_mix``);
    the manifest records those block keys as ``history_blocks``.
    """
    champion_version = store.champion_version()
    champion = store.load(champion_version, spec.pickle_trusted) if champion_version else None
    features = spec.feature_columns(frame.columns)
    split = evaluation_split(frame, spec, features)
    if spec.type == "ipip":
        trained = _ipip_challenger(spec, split.X_train, split.y_train, champion)
    else:
        trained = train_challenger(spec, split.X_train, split.y_train, champion, history)
    challenger_scores, champion_scores, paired = _score_pair(spec, store, split, trained.model,
                                                             champion_version, champion)
    version = store.save(
        trained.model, reference=trained.rows,
        pipeline=spec.name, role="challenger", retrain_mode="ipip" if spec.type == "ipip" else spec.retrain_mode,
        note=trained.note, model_spec=spec.model_spec.dotted, task=spec.task, trained_on_blocks=[block],
        history_blocks=list(history_blocks or []),
        features=features, feature_kinds=column_kinds(frame, features), metrics=challenger_scores,
        evaluated_on=f"block {block} held-out {len(split.X_eval)} rows",
    )
    return {
        "version": version, "champion_version": champion_version, "note": trained.note,
        "challenger_scores": challenger_scores, "champion_scores": champion_scores,
        "paired": paired, "train_rows": len(trained.rows),
        "eval_rows": len(split.X_eval), **ipip_stats(trained.model),
    }


def _score_pair(spec: PipelineSpec, store: ModelStore, split, model, champion_version: str | None, champion):
    """Challenger and champion scored on the same held-out rows, with their per-row predictions."""
    challenger_pred = model.predict(split.X_eval)
    challenger_scores = score_model(model, split.X_eval, split.y_eval, spec.task)
    champion_scores = paired = None
    if champion is not None:
        champion_features = store.manifest(champion_version)["features"]
        champion_pred = champion.predict(split.X_eval[champion_features])
        champion_scores = score_model(champion, split.X_eval[champion_features], split.y_eval, spec.task)
        paired = {"y_true": np.asarray(split.y_eval), "champion_pred": np.asarray(champion_pred),
                  "challenger_pred": np.asarray(challenger_pred)}
    return challenger_scores, champion_scores, paired


def rescore_challenger(spec: PipelineSpec, store: ModelStore, block: str, frame: pd.DataFrame, version: str,
                       champion_version: str | None) -> dict:
    """A rerun's challenger: the stored ``version`` trained for ``block`` when it was first processed, scored
    with ``champion_version`` (the champion then) on the same held-out rows (the split is seeded), so the
    scores and the decision come out as they did; nothing is trained or stored."""
    model = store.load(version, spec.pickle_trusted)
    champion = store.load(champion_version, spec.pickle_trusted) if champion_version else None
    split = evaluation_split(frame, spec, spec.feature_columns(frame.columns))
    challenger_scores, champion_scores, paired = _score_pair(spec, store, split, model, champion_version,
                                                             champion)
    manifest = store.manifest(version)
    return {
        "version": version, "champion_version": champion_version, "note": manifest.get("note", ""),
        "challenger_scores": challenger_scores, "champion_scores": champion_scores, "paired": paired,
        "train_rows": len(store.reference(version)), "eval_rows": len(split.X_eval), **ipip_stats(model),
    }


def _rollback(spec: PipelineSpec, store: ModelStore, frame: pd.DataFrame, block_scores: dict | None,
              current_version: str | None, previous: set[str]):
    """The automatic rollback decision from ``current_version`` to one of the ``previous`` champions, or
    ``None`` (see :func:`choose_rollback`)."""
    metric = spec.performance.metric
    if current_version is None or not block_scores or metric not in block_scores:
        return None
    reference = (store.manifest(current_version).get("metrics") or {}).get(metric)
    previous = set(previous) - {current_version}
    if reference is None or not previous:
        return None
    candidates = {}
    for version in sorted(previous):
        features = store.manifest(version)["features"]
        candidates[version] = score_model(store.load(version, spec.pickle_trusted), frame[features], frame[spec.target],
                                          spec.task)[metric]
    target = choose_rollback(metric, block_scores[metric], reference, spec.performance.rollback_drop, candidates)
    if target is None:
        return None
    return PromotionDecision(
        ROLLED_BACK,
        f"champion {current_version} {metric} {block_scores[metric]:.4f} fell more than "
        f"{spec.performance.rollback_drop:.0%} below its reference {reference:.4f}; "
        f"previous champion {target} scores {candidates[target]:.4f} on the block",
        metric, block_scores[metric], candidates[target],
    ), target


def paired_evidence(spec: PipelineSpec, paired: dict | None):
    """The significance test of the challenger's gain on the paired evaluation rows (``None``: no champion)."""
    if paired is None:
        return None
    perf = spec.performance
    return gain_evidence(spec.task, perf.metric, paired["y_true"], paired["champion_pred"],
                         paired["challenger_pred"], perf.min_improvement, perf.alpha, perf.n_bootstrap, spec.seed)


def settle_champion(spec: PipelineSpec, store: ModelStore, block: str, frame: pd.DataFrame,
                    challenger: dict, block_scores: dict | None, held: str | None = None,
                    rollback_hold: str | None = None) -> tuple[PromotionDecision, dict | None]:
    """Decide, move the champion pointer, and return the decision and the in-force champion's scores.

    ``held`` says why the block called for a challenger that the late-block rule did not let it train (the
    decision is then ``late_kept``); ``rollback_hold`` why an automatic rollback must not happen (a late
    block): a rollback that would have happened is then recorded as ``late_kept`` and not applied.
    """
    current = store.champion_version()
    previous = {h["version"] for h in store.champion_history()}
    decision, in_force, target = judge_champion(spec, store, frame, challenger, block_scores, current, previous,
                                                held, rollback_hold)
    if target != current:
        store.set_champion(target, block, decision.decision)
    return decision, in_force


def judge_champion(spec: PipelineSpec, store: ModelStore, frame: pd.DataFrame, challenger: dict,
                   block_scores: dict | None, current: str | None, previous: set[str], held: str | None = None,
                   rollback_hold: str | None = None) -> tuple[PromotionDecision, dict | None, str | None]:
    """The decision of :func:`settle_champion` with ``current`` in force and ``previous`` champions to roll
    back to, without moving anything: ``(decision, in-force scores, champion after)``. A rerun calls it with
    the champions of the time the block was first processed."""
    perf = spec.performance
    if challenger["version"] is None:
        decision = decide_promotion(perf.metric, None, None, perf.thresholds)
    elif spec.type == "ipip":
        decision = PromotionDecision(
            PROMOTED, "ipip retrains every block: the updated ensembles replace the champion", perf.metric,
            (challenger["champion_scores"] or {}).get(perf.metric), challenger["challenger_scores"][perf.metric])
    else:
        evidence = paired_evidence(spec, challenger.get("paired"))
        decision = decide_promotion(perf.metric, challenger["challenger_scores"], challenger["champion_scores"],
                                    perf.thresholds, perf.min_improvement, evidence)
    if decision.promoted:
        return decision, challenger["challenger_scores"], challenger["version"]
    kept_scores = challenger.get("champion_scores") or block_scores
    if spec.type != "ipip" and spec.target in frame.columns:
        rolled = _rollback(spec, store, frame, block_scores, current, previous)
        if rolled is not None and rollback_hold:
            why = "; ".join(part for part in (held, rollback_hold) if part)
            return PromotionDecision(LATE_KEPT, f"{why}; it would have rolled back: {rolled[0].reason}",
                                     perf.metric, rolled[0].champion_score, None), kept_scores, current
        if rolled is not None:
            rollback, target = rolled
            if challenger["version"] is not None:  # say what became of the challenger too
                rollback = replace(rollback, reason=f"{rollback.reason}; challenger {challenger['version']} "
                                                    f"{decision.decision}: {decision.reason}")
            features = store.manifest(target)["features"]
            model = store.load(target, spec.pickle_trusted)
            return rollback, score_model(model, frame[features], frame[spec.target], spec.task), target
    if held and challenger["version"] is None:
        decision = replace(decision, decision=LATE_KEPT, reason=held)
    return decision, kept_scores, current
