"""Write a generated table as one file per block plus ``ground_truth.json``.

A pipeline's sensor turns each new file (or each new value of the block column) into a partition, so the
generators' output is directly consumable: ``block_000.csv``, ``block_001.csv``, ... each carrying the block
column, and a ``ground_truth.json`` saying where and what drift was injected, so that the drift engine's
alarms can be scored against it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calmops_dagster.generators.errors import GeneratorConfigError, check_option

FORMATS = ("csv", "parquet")
GROUND_TRUTH_FILE = "ground_truth.json"


def assign_blocks(frame: pd.DataFrame, rows_per_block: int, block_col: str = "block") -> pd.DataFrame:
    """Return a copy of ``frame`` with a block column numbering consecutive runs of ``rows_per_block`` rows.

    Examples
    --------
    >>> assign_blocks(pd.DataFrame({"a": range(5)}), 2)["block"].tolist()
    [0, 0, 1, 1, 2]
    """
    if rows_per_block <= 0:
        raise GeneratorConfigError(f"rows_per_block must be positive, got {rows_per_block}")
    out = frame.reset_index(drop=True).copy()
    out[block_col] = np.arange(len(out)) // rows_per_block
    return out


def block_rows(frame: pd.DataFrame, block_col: str) -> dict[Any, list[int]]:
    """Map each block value to the ``[start, stop)`` positional row range it occupies (blocks contiguous)."""
    ranges: dict[Any, list[int]] = {}
    for pos, value in enumerate(frame[block_col].to_numpy()):
        key = value.item() if hasattr(value, "item") else value
        if key in ranges:
            ranges[key][1] = pos + 1
        else:
            ranges[key] = [pos, pos + 1]
    return ranges


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_blocks(
    frame: pd.DataFrame,
    out_dir: str | Path,
    block_col: str = "block",
    fmt: str = "csv",
    ground_truth: Sequence[Mapping[str, Any]] = (),
    source: Mapping[str, Any] | None = None,
    first_number: int = 0,
) -> list[Path]:
    """Write one file per block value and ``ground_truth.json`` into ``out_dir``.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table, with a ``block_col`` column.
    out_dir : str or Path
        Output directory, created if needed.
    block_col : str
        Column whose values define the blocks; kept in every file.
    fmt : {"csv", "parquet"}
        File format.
    ground_truth : sequence of dict
        Drift records (from the generators or :class:`~generators.drift_injection.DriftInjector`).
    source : dict, optional
        How the data were made (generator, settings, seed); stored in the ground-truth file.
    first_number : int
        Number in the first file's name; files are numbered in block order from it (the demo's blocks are
        ``1..n``, so it passes 1 and ``block_001.csv`` holds block 1).

    Returns
    -------
    list of Path
        The block files, in block order.
    """
    check_option("format", fmt, FORMATS)
    if block_col not in frame.columns:
        raise GeneratorConfigError(f"block column {block_col!r} not in the table's columns")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blocks = sorted(frame[block_col].unique().tolist())
    width = max(3, len(str(len(blocks) - 1 + first_number)))
    paths: list[Path] = []
    files: dict[str, str] = {}
    for i, value in enumerate(blocks):
        path = out / f"block_{i + first_number:0{width}d}.{fmt}"
        part = frame[frame[block_col] == value]
        if fmt == "csv":
            part.to_csv(path, index=False)
        else:
            part.to_parquet(path, index=False)
        paths.append(path)
        files[str(value)] = path.name
    record = {
        "block_col": block_col,
        "n_blocks": len(blocks),
        "n_rows": len(frame),
        "format": fmt,
        "files": files,
        "block_rows": {str(k): v for k, v in block_rows(frame, block_col).items()},
        "source": dict(source or {}),
        "drifts": [dict(g) for g in ground_truth],
    }
    (out / GROUND_TRUTH_FILE).write_text(json.dumps(record, indent=2, default=_json_default))
    return paths


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file by its suffix."""
    p = Path(path)
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    if p.suffix == ".csv":
        return pd.read_csv(p)
    raise GeneratorConfigError(f"cannot read {p.name!r}: expected a .csv or .parquet file")
