"""The rows of processed blocks, kept for retrain modes that learn from the past (``window``, ``replay_mix``).

``data_block`` writes each block's validated rows to ``pipelines/<name>/blocks/<block>.parquet``
(atomically; re-materializing a block replaces its file). Blocks are read back in block order.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from calmops_dagster.atomic import write_bytes_atomic
from calmops_dagster.block_data import sort_block_keys


def save_block(blocks_dir: Path, block: str, frame: pd.DataFrame) -> Path:
    """Keep the rows of ``block`` (replacing an earlier version of the same block)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    path = Path(blocks_dir) / f"{block}.parquet"
    write_bytes_atomic(path, buffer.getvalue())
    return path


def blocks_before(blocks_dir: Path, block: str, last: int | None = None) -> pd.DataFrame:
    """Rows of the kept blocks that come before ``block`` in block order (the ``last`` N of them, or all).

    An empty frame when there are none.
    """
    paths = {p.stem: p for p in Path(blocks_dir).glob("*.parquet")} if Path(blocks_dir).is_dir() else {}
    ordered = sort_block_keys([*paths, block])
    earlier = [key for key in ordered[: ordered.index(block)] if key in paths]
    if last is not None:
        earlier = earlier[-last:] if last > 0 else []
    if not earlier:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(paths[key]) for key in earlier], ignore_index=True)
