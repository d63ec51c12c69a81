"""Train a challenger for the block, or say why none is trained.

When the block's assessment calls for one and the pipeline's circuit breaker is closed, a challenger is
trained with the spec's retrain mode (or the IPIP update), stored as a new version (kept even if it is later
rejected), and scored with the champion on the same held-out rows, keeping both models' per-row predictions
(:class:`~calmops_dagster.steps.results.PairedRows`): the champion step decides from those rows, not from two
summary scores. A rerun trains nothing: it scores the challenger the block's first run trained again. The
scores go to ``performance`` (``evaluated_on = eval_split``).

With the spec's ``custom_functions`` the user's ``train``/``retrain`` (or ``fallback``) builds the challenger
(:mod:`calmops_dagster.learning.custom_training`); what it returns must be usable (:func:`model_refusal`),
else the block has no challenger and its decision says why. The manifest records the function
(``trained_by``: path and sha256 of its module file), and a rerun says whether that function could still be
run as it was.
"""

from __future__ import annotations

import copy
import logging
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from calmops_dagster.ingest.block_history import blocks_before, read_blocks
from calmops_dagster.learning import retrain_modes
from calmops_dagster.learning.custom_functions import cannot_rerun
from calmops_dagster.learning.custom_training import one_line, train_custom
from calmops_dagster.learning.evaluation import PROBABILITY_METRICS, score_model
from calmops_dagster.learning.ipip import IPIPClassifier
from calmops_dagster.learning.model_factory import build_model
from calmops_dagster.learning.retrain_modes import Trained
from calmops_dagster.learning.training import evaluation_split
from calmops_dagster.learning.training_context import TrainingContext
from calmops_dagster.spec import PipelineSpec, column_kinds
from calmops_dagster.steps import circuit_breaker
from calmops_dagster.steps.block_context import write_context
from calmops_dagster.steps.results import Assessment, ChallengerOutcome, LoadedBlock, PairedRows
from calmops_dagster.steps.step_context import StepContext, StepLog
from calmops_dagster.store.model_store import ModelStore, now_utc, storage_refusal


def train_challenger(ctx: StepContext, rows: LoadedBlock, assessment: Assessment) -> ChallengerOutcome:
    """The block's challenger and its scores, or why there is none."""
    spec, block, recorded, reason = ctx.spec, ctx.block, ctx.recorded, assessment.decision.reason
    if ctx.rerun:  # never trains over the current champion: the challenger trained then, if any
        if recorded.challenger is None:
            return ChallengerOutcome(None, recorded.champion_version, recorded.challenger_reason or reason,
                                     rerun=True)
        outcome = rescore_challenger(ctx.settings, ctx.models, block, rows.frame, recorded.challenger,
                                     recorded.champion_version, reason)
    else:
        skipped = _not_trained(ctx, assessment)
        if skipped is not None:
            write_context(ctx.metrics, spec, block, ctx.run_id, recorded, challenger=None,
                          challenger_reason=skipped.reason)
            return skipped
        history, earlier = _history(ctx)
        outcome = make_challenger(spec, ctx.models, block, rows.frame, reason, history, history_blocks=earlier,
                                  log=ctx.log)
        write_context(ctx.metrics, spec, block, ctx.run_id, recorded, challenger=outcome.version,
                      challenger_reason=outcome.reason)
    stamp = now_utc()
    ctx.metrics.replace_block_rows("performance", spec.name, block, [
        {"model_version": v, "role": role, "metric": m, "value": s, "computed_at": stamp}
        for v, role, scores in ((outcome.version, "challenger", outcome.challenger_scores),
                                (outcome.champion_version, "champion", outcome.champion_scores))
        for m, s in (scores or {}).items()
    ], scope={"evaluated_on": "eval_split"}, run_id=ctx.run_id)
    if outcome.version is None:
        ctx.log.info(f"block {block}: no challenger ({outcome.reason})")
    else:
        ctx.log.debug(f"block {block}: {'trained' if outcome.trained else 'rerun: re-scored'} challenger "
                      f"{outcome.version} ({outcome.note})")
    return outcome


def _not_trained(ctx: StepContext, assessment: Assessment) -> ChallengerOutcome | None:
    """Why the block's first run trains no challenger (circuit breaker open, or nothing calls for one)."""
    champion_now = ctx.models.champion_version()
    paused = circuit_breaker.skip_reason(ctx.metrics.breaker_state(ctx.spec.name), datetime.now(UTC))
    if paused:
        return ChallengerOutcome(None, champion_now, paused, breaker_open=True)
    if not assessment.decision.retrain:
        return ChallengerOutcome(None, champion_now, assessment.decision.reason)
    return None


def _history(ctx: StepContext) -> tuple[pd.DataFrame | None, list[str]]:
    """The earlier blocks' rows the retrain mode learns from (``window``, ``replay_mix``) and their keys, in
    processing order (stream partitions: arrival order)."""
    wanted, last = retrain_modes.history_needed(ctx.spec)
    if not wanted:
        return None, []
    order = ctx.order.registered() if ctx.spec.type == "stream" else None
    earlier = blocks_before(ctx.paths.blocks_dir(ctx.spec.name), ctx.block, last, order)
    return read_blocks(ctx.paths.blocks_dir(ctx.spec.name), earlier), earlier


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


def make_challenger(spec: PipelineSpec, store: ModelStore, block: str, frame: pd.DataFrame, reason: str,
                    history: pd.DataFrame | None = None, history_blocks: list[str] | None = None,
                    log: StepLog | None = None) -> ChallengerOutcome:
    """Train, store and score a challenger for ``block`` (asked for by ``reason``).

    ``history`` holds the rows of the earlier blocks ``history_blocks`` (for ``window`` and ``replay_mix``);
    the manifest records those block keys as ``history_blocks``. Under ``custom_functions`` the outcome may
    have no challenger (its ``reason`` says why: a refused model, a fallback returning ``None``).
    """
    champion_version = store.champion_version()
    champion = store.load(champion_version, spec.pickle_trusted) if champion_version else None
    features = spec.feature_columns(frame.columns)
    split = evaluation_split(frame, spec, features)
    trained_by = None
    if spec.type == "ipip":
        trained = _ipip_challenger(spec, split.X_train, split.y_train, champion)
    elif spec.custom_functions is not None:
        sources = [*(history_blocks or []), block] if retrain_modes.history_needed(spec)[0] else [block]
        context = TrainingContext(spec.name, block, spec.retrain_mode, tuple(sources), spec.seed,
                                  log or logging.getLogger(__name__))
        custom = train_custom(spec, split.X_train, split.y_train, champion, history, context,
                              lambda model: model_refusal(spec, model, split.X_eval))
        if custom.trained is None:
            return ChallengerOutcome(None, champion_version, f"{reason}; {custom.reason}")
        trained, trained_by = custom.trained, custom.trained_by
    else:
        trained = retrain_modes.train_challenger(spec, split.X_train, split.y_train, champion, history)
    challenger_scores, champion_scores, paired = _score_pair(spec, store, split, trained.model,
                                                             champion_version, champion)
    version = store.save(
        trained.model, reference=trained.rows,
        pipeline=spec.name, role="challenger", retrain_mode="ipip" if spec.type == "ipip" else spec.retrain_mode,
        note=trained.note, model_spec=spec.model_spec.dotted, task=spec.task, trained_on_blocks=[block],
        history_blocks=list(history_blocks or []),
        features=features, feature_kinds=column_kinds(frame, features), metrics=challenger_scores,
        evaluated_on=f"block {block} held-out {len(split.X_eval)} rows",
        **({"trained_by": trained_by} if trained_by else {}),
    )
    return ChallengerOutcome(
        version, champion_version, reason, trained=True, note=trained.note, challenger_scores=challenger_scores,
        champion_scores=champion_scores, paired=paired, train_rows=len(trained.rows), eval_rows=len(split.X_eval),
        ipip=ipip_stats(trained.model), trained_by=trained_by and trained_by["function"],
    )


def needs_probabilities(spec: PipelineSpec) -> str | None:
    """What needs a classifier's ``predict_proba`` in this spec (``None``: nothing)."""
    if spec.task != "classification":
        return None
    wanted = PROBABILITY_METRICS & {spec.performance.metric, *spec.performance.thresholds}
    if wanted:
        return f"the metric {min(wanted)}"
    if spec.drift.decision_rule == "estimated_performance":
        return "decision_rule estimated_performance"
    return None


def model_refusal(spec: PipelineSpec, model, X: pd.DataFrame) -> str | None:
    """Why the model a custom function returned cannot be a challenger (e.g. ``a dict without a predict
    method``), or ``None``: it predicts ``X`` (and gives probabilities where the spec needs them), scikit-learn
    can clone it (label-free estimation refits clones of the champion), and the model store can keep it in a
    format the pipeline loads back."""
    from sklearn.base import clone

    kind = f"a {type(model).__module__}.{type(model).__qualname__}"
    if not callable(getattr(model, "predict", None)):
        return f"{kind} without a predict method"
    proba = callable(getattr(model, "predict_proba", None))
    needed = needs_probabilities(spec)
    if needed and not proba:
        return f"{kind} without predict_proba, which {needed} needs"
    if spec.task == "classification" and proba and getattr(model, "classes_", None) is None:
        return f"{kind} with predict_proba but no classes_ (the order of its probability columns)"
    try:
        model.predict(X)
        if spec.task == "classification" and proba:
            model.predict_proba(X)
    except Exception as exc:  # noqa: BLE001 -- any failure to predict refuses the model
        return f"{kind} whose prediction fails on the block's held-out rows ({one_line(exc)})"
    if spec.task == "regression" or proba:
        try:
            clone(model)
        except Exception as exc:  # noqa: BLE001 -- e.g. no get_params
            return f"{kind} that sklearn.base.clone cannot copy ({one_line(exc)})"
    refused = storage_refusal(model, spec.pickle_trusted)
    return f"{kind}: {refused}" if refused else None


def _score_pair(spec: PipelineSpec, store: ModelStore, split, model, champion_version: str | None, champion):
    """Challenger and champion scored on the same held-out rows, with their per-row predictions."""
    challenger_pred = model.predict(split.X_eval)
    challenger_scores = score_model(model, split.X_eval, split.y_eval, spec.task)
    champion_scores = paired = None
    if champion is not None:
        champion_features = store.manifest(champion_version)["features"]
        champion_pred = champion.predict(split.X_eval[champion_features])
        champion_scores = score_model(champion, split.X_eval[champion_features], split.y_eval, spec.task)
        paired = PairedRows(np.asarray(split.y_eval), np.asarray(champion_pred), np.asarray(challenger_pred))
    return challenger_scores, champion_scores, paired


def rescore_challenger(spec: PipelineSpec, store: ModelStore, block: str, frame: pd.DataFrame, version: str,
                       champion_version: str | None, reason: str) -> ChallengerOutcome:
    """A rerun's challenger: the stored ``version`` trained for ``block`` when it was first processed, scored
    with ``champion_version`` (the champion then) on the same held-out rows (the split is seeded), so the
    scores and the decision come out as they did; nothing is trained or stored. A challenger built by a custom
    function gets a note saying whether that function (its manifest's ``trained_by``) could still be run as it
    was, or why not (:func:`~calmops_dagster.learning.custom_functions.cannot_rerun`)."""
    model = store.load(version, spec.pickle_trusted)
    champion = store.load(champion_version, spec.pickle_trusted) if champion_version else None
    split = evaluation_split(frame, spec, spec.feature_columns(frame.columns))
    challenger_scores, champion_scores, paired = _score_pair(spec, store, split, model, champion_version,
                                                             champion)
    manifest = store.manifest(version)
    note, trained_by = manifest.get("note", ""), manifest.get("trained_by")
    if trained_by:
        allowed = spec.custom_functions.allow_modules if spec.custom_functions else []
        why = cannot_rerun(trained_by, allowed)
        note = (f"{note}; re-scored as stored; " + (f"{trained_by['function']} could not be run again as it was: "
                                                    f"{why}" if why else f"{trained_by['function']} is unchanged"))
    return ChallengerOutcome(
        version, champion_version, reason, rerun=True, note=note,
        challenger_scores=challenger_scores, champion_scores=champion_scores, paired=paired,
        train_rows=len(store.reference(version)), eval_rows=len(split.X_eval), ipip=ipip_stats(model),
        trained_by=trained_by and trained_by.get("function"),
    )
