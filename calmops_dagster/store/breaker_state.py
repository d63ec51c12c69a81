"""The stored state of a pipeline's circuit breaker: one row of DuckDB ``breaker_state``.

Its transitions (when it opens, closes, what counts) are in :mod:`calmops_dagster.steps.circuit_breaker`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

CLOSED, OPEN = "closed", "open"


@dataclass(frozen=True)
class BreakerState:
    """A breaker's status, its run of consecutive failures, and when it opened and closes again."""

    status: str = CLOSED
    consecutive_failures: int = 0
    opened_at: datetime | None = None
    reopen_at: datetime | None = None
    """When an open breaker closes by itself (``opened_at + backoff``)."""
    last_reason: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status == OPEN
