"""What the steps of a block hand each other and the assets: one dataclass per step's result.

The assets pass these between them (Dagster stores them with its IO manager) and turn them into output
metadata and check results; nothing downstream reads a value by a string key. This module imports nothing
heavy, so the code location can name these types in the assets' signatures without loading the steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from calmops_dagster.ingest.labels import LabelCount


@dataclass(frozen=True)
class LoadedBlock:
    """The block's rows as :func:`~calmops_dagster.steps.load_block.load_block` loaded and recorded them."""

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
