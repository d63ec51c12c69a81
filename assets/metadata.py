"""How the assets' figures read in the Dagster UI: one rule for every materialization and check result.

Floats are rounded to :data:`SIGNIFICANT_DIGITS` significant digits (``0.1309``, not ``0.13087422194977605``),
booleans are booleans (``MetadataValue.bool``, not ``1``/``0``), and a value that is absent (``None``, NaN,
an infinity) is left out rather than shown as ``nan`` or ``None``. A check result names its block in its
description and in its ``block`` entry, so the check's history reads block by block.
"""

from __future__ import annotations

import math
import numbers

from dagster import MetadataValue

SIGNIFICANT_DIGITS = 4


def rounded(value: float) -> float | None:
    """``value`` to :data:`SIGNIFICANT_DIGITS` significant digits; ``None`` when it is NaN or infinite."""
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def metadata_value(value):
    """One metadata value as the UI should show it, or ``None`` when it is absent.

    >>> metadata_value(0.13087422194977605), metadata_value(True), metadata_value(float("nan"))
    (FloatMetadataValue(value=0.1309), BoolMetadataValue(value=True), None)
    """
    if value is None or isinstance(value, MetadataValue):
        return value
    if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b":  # numpy's too
        return MetadataValue.bool(bool(value))
    if isinstance(value, numbers.Integral):
        return MetadataValue.int(int(value))
    if isinstance(value, numbers.Real):
        value = rounded(value)
        return None if value is None else MetadataValue.float(value)
    return value


def ui_metadata(entries: dict) -> dict:
    """``entries`` with every value as :func:`metadata_value` shows it, the absent ones left out."""
    shown = {key: metadata_value(value) for key, value in entries.items()}
    return {key: value for key, value in shown.items() if value is not None}


def check_description(block: str, passed: bool, what: str) -> str:
    """A check result's description: its block first, then its verdict on ``what``.

    >>> check_description("4", False, "data drift: 3 of 5 features")
    'block 4: failed, data drift: 3 of 5 features'
    """
    return f"block {block}: {'passed' if passed else 'failed'}, {what}"


def check_metadata(block: str, entries: dict) -> dict:
    """A check result's metadata: its ``block`` and ``entries`` (as :func:`ui_metadata` shows them)."""
    return ui_metadata({"block": block, **entries})
