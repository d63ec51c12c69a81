"""Typed errors of the drift engine.

Problems with the inputs as a whole (not a DataFrame, nothing in common, a requested feature missing) raise
one of these. Problems with a single feature (all-NaN, constant, too few rows, mixed types) do not raise:
that feature gets a ``not tested`` row whose ``note`` says why, so one bad column never hides the others.
"""

from calmops_dagster.errors import CalmOpsError


class DriftError(CalmOpsError):
    """Base class of every error the drift engine raises on purpose."""


class DriftInputError(DriftError, ValueError):
    """The reference or current data cannot be compared at all (wrong type, no rows, no common columns)."""


class MissingFeatureError(DriftInputError):
    """A feature asked for explicitly is absent from the reference or the current data."""

    def __init__(self, missing_in_reference: list[str], missing_in_current: list[str]):
        self.missing_in_reference = list(missing_in_reference)
        self.missing_in_current = list(missing_in_current)
        parts = []
        if self.missing_in_reference:
            parts.append(f"missing in reference: {self.missing_in_reference}")
        if self.missing_in_current:
            parts.append(f"missing in current: {self.missing_in_current}")
        super().__init__("requested features not found; " + "; ".join(parts))
