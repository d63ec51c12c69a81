"""The circuit breaker of a pipeline's retraining, as pure state transitions (docs/unattended.md).

**closed**: retraining runs; a run whose training or promotion step failed adds one to
``consecutive_failures``, a run where both succeeded resets it to 0. **open** once ``consecutive_failures``
hits ``max_failures``: the challenger is not trained (:func:`skip_reason`), drift monitoring and predictions
go on, and outcomes change nothing. It closes after ``backoff_minutes``, or at once by ``calmops relaunch``
(:func:`reset`). Times are timezone-aware; every function returns a new state and never mutates.

>>> from datetime import datetime, UTC
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> state = BreakerState()
>>> for _ in range(3):
...     state, event = on_failure(state, max_failures=3, backoff_minutes=120, now=t0, reason="fit failed")
>>> state.status, event
('open', 'opened')
>>> effective(state, t0).status, effective(state, t0 + timedelta(minutes=121)).status
('open', 'closed')
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from calmops_dagster.store.breaker_state import OPEN, BreakerState


def effective(state: BreakerState, now: datetime) -> BreakerState:
    """The state as of ``now``: an open breaker whose backoff has passed is closed."""
    if state.is_open and state.reopen_at is not None and now >= state.reopen_at:
        return BreakerState(last_reason=f"closed after backoff (opened {state.opened_at:%Y-%m-%d %H:%M} UTC)")
    return state


def on_failure(state: BreakerState, max_failures: int, backoff_minutes: int, now: datetime,
               reason: str) -> tuple[BreakerState, str]:
    """A training or promotion failure. Returns the new state and the event name (``failure``, ``opened``,
    or ``ignored_while_open``)."""
    state = effective(state, now)
    if state.is_open:
        return state, "ignored_while_open"
    failures = state.consecutive_failures + 1
    if failures >= max_failures:
        return BreakerState(OPEN, failures, now, now + timedelta(minutes=backoff_minutes), reason), "opened"
    return replace(state, consecutive_failures=failures, last_reason=reason), "failure"


def on_success(state: BreakerState, now: datetime) -> tuple[BreakerState, str]:
    """Training and promotion both succeeded: a closed breaker forgets its failures."""
    state = effective(state, now)
    if state.is_open:
        return state, "ignored_while_open"
    return BreakerState(last_reason=state.last_reason if state.consecutive_failures == 0 else None), "success"


def reset(reason: str = "closed by calmops relaunch") -> tuple[BreakerState, str]:
    """Close the breaker by hand."""
    return BreakerState(last_reason=reason), "reset"


def skip_reason(state: BreakerState, now: datetime) -> str | None:
    """Why the challenger is not trained now, or ``None`` when retraining may run."""
    state = effective(state, now)
    if not state.is_open:
        return None
    return (f"circuit breaker open after {state.consecutive_failures} consecutive training/promotion "
            f"failures (last: {state.last_reason}); retraining paused until {state.reopen_at:%Y-%m-%d %H:%M} "
            "UTC or `calmops relaunch`")


def describe(state: BreakerState, now: datetime) -> str:
    """Short text for ``calmops list``: ``closed``, ``closed (2 failures)`` or ``OPEN until 14:05``."""
    state = effective(state, now)
    if state.is_open:
        return f"OPEN until {state.reopen_at:%m-%d %H:%M}"
    return f"closed ({state.consecutive_failures} fail)" if state.consecutive_failures else "closed"


def failed_breaker_step(failed_step_keys, pipeline: str) -> str | None:
    """The training/promotion step among a run's failed step keys (``<pipeline>__challenger_model``...)."""
    for step in failed_step_keys:
        for asset in ("challenger_model", "champion_model"):
            if step in (f"{pipeline}__{asset}", asset):
                return asset
    return None
