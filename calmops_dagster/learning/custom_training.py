"""Training a challenger with the spec's ``custom_functions``, and falling back when it fails.

Who trains: ``retrain(champion copy, X, y, context)`` when there is a champion and ``retrain`` is given, else
``train(X, y, context)`` when given, else the spec's retrain mode (``model_spec``). ``X, y`` are the rows the
retrain mode selects (:func:`~calmops_dagster.learning.retrain_modes.selected_rows`). What a custom
function returns is judged (``judge``: why the model cannot be used, or ``None``) before it is accepted.

When training raises, or a custom function returns a model that is refused, ``fallback(error, X, y,
context)`` runs; its model is judged the same way, and ``None`` means no challenger for this block. Without a
fallback a refused model means no challenger too (the reason recorded), while an exception fails the step as
:class:`~calmops_dagster.errors.CustomFunctionError`: one line naming the function and its exception, which
is what the circuit breaker counts and shows. A fallback that raises fails the step the same way.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from calmops_dagster.errors import CustomFunctionError
from calmops_dagster.learning import retrain_modes
from calmops_dagster.learning.custom_functions import function_lineage
from calmops_dagster.learning.retrain_modes import Trained
from calmops_dagster.learning.training_context import TrainingContext
from calmops_dagster.spec import PipelineSpec


@dataclass(frozen=True)
class CustomOutcome:
    """A challenger trained under ``custom_functions``, or why there is none."""

    trained: Trained | None
    """The model, its rows and note (``None``: no challenger; ``reason`` says why)."""
    trained_by: dict | None = None
    """The custom function that built the model (:func:`function_lineage`); ``None``: the retrain mode."""
    reason: str | None = None
    """Why there is no challenger."""


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line."""
    message = re.sub(r"\s+", " ", str(exc)).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _label(role: str, spec: PipelineSpec) -> str:
    return f"custom_functions.{role} {getattr(spec.custom_functions, role)}"


def train_custom(spec: PipelineSpec, X: pd.DataFrame, y: pd.Series, champion, history: pd.DataFrame | None,
                 context: TrainingContext, judge: Callable[[object], str | None]) -> CustomOutcome:
    """The challenger of ``spec`` (which has ``custom_functions``) from the block's training rows ``X, y``,
    the fitted ``champion`` (``None`` before the first) and the earlier blocks' rows ``history``."""
    functions = spec.custom_functions
    rows, what = retrain_modes.selected_rows(spec, X, y, history)
    X_rows, y_rows = rows[list(X.columns)], rows[spec.target]
    role = "retrain" if champion is not None and functions.retrain else "train" if functions.train else None
    if role is None:  # the retrain mode trains; a custom fallback takes over if it raises
        label = f"retrain_mode {spec.retrain_mode} ({spec.model_spec.dotted})"
        try:
            return CustomOutcome(retrain_modes.train_challenger(spec, X, y, champion, history))
        except Exception as exc:  # any failure of training is the fallback's to handle
            if not functions.fallback:
                raise
            return _fall_back(spec, X_rows, y_rows, rows, what, context, judge, exc, f"{label} raised {one_line(exc)}")
    function = functions.function(role)
    arguments = (copy.deepcopy(champion), X_rows, y_rows, context) if role == "retrain" else (X_rows, y_rows, context)
    try:
        model = function(*arguments)
    except Exception as exc:  # noqa: BLE001 -- the user's function may raise anything
        failure = f"{_label(role, spec)} raised {one_line(exc)}"
        if not functions.fallback:
            raise CustomFunctionError(f"{failure}; no custom_functions.fallback") from None
        return _fall_back(spec, X_rows, y_rows, rows, what, context, judge, exc, failure)
    refused = judge(model)
    if refused is None:
        return CustomOutcome(Trained(model, rows, f"{_label(role, spec)} on {what}"),
                             function_lineage(role, getattr(functions, role), function))
    failure = f"{_label(role, spec)} returned {refused}"
    if not functions.fallback:
        return CustomOutcome(None, reason=f"{failure}; no challenger")
    return _fall_back(spec, X_rows, y_rows, rows, what, context, judge, CustomFunctionError(failure), failure)


def _fall_back(spec: PipelineSpec, X: pd.DataFrame, y: pd.Series, rows: pd.DataFrame, what: str,
               context: TrainingContext, judge, error: BaseException, failure: str) -> CustomOutcome:
    """``fallback(error, X, y, context)`` after ``failure``; its model judged like any challenger."""
    path = spec.custom_functions.fallback
    function = spec.custom_functions.function("fallback")
    context.logger.warning(f"block {context.block}: {failure}; running the fallback {path}")
    try:
        model = function(error, X, y, context)
    except Exception as exc:  # noqa: BLE001 -- the user's function may raise anything
        raise CustomFunctionError(f"{failure}; {_label('fallback', spec)} raised {one_line(exc)}") from None
    if model is None:
        return CustomOutcome(None, reason=f"{failure}; {_label('fallback', spec)} returned None: no challenger")
    refused = judge(model)
    if refused is not None:
        return CustomOutcome(None, reason=f"{failure}; {_label('fallback', spec)} returned {refused}; no challenger")
    context.logger.info(f"block {context.block}: {failure}; the fallback {path} trained the challenger")
    return CustomOutcome(Trained(model, rows, f"{failure}; {_label('fallback', spec)} on {what}"),
                         function_lineage("fallback", path, function))
