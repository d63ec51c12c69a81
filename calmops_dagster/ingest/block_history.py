"""The rows of processed blocks, kept for retrain modes that learn from the past (``window``, ``replay_mix``).

Each block's validated rows are ``pipelines/<name>/blocks/<block>.parquet``, the one file the assets' IO
manager stores ``data_block`` in (``resources/block_files_io.py``; re-materializing a block replaces it).
Blocks are read back in processing order: block order, or for stream pipelines the order their files arrived
in (the partitions' registration order).
"""

from __future__ import annotations

import pandas as pd

from calmops_dagster.ingest.block_data import sort_block_keys
from calmops_dagster.store.storage import Location, as_location, read_parquet


def blocks_before(blocks_dir: Location, block: str, last: int | None = None,
                  order: list[str] | None = None) -> list[str]:
    """Keys of the kept blocks that come before ``block`` (the ``last`` N of them, or all), oldest first.

    ``order`` lists block keys in processing order (a stream pipeline's partitions in arrival order); by
    default blocks are in block order. Kept blocks missing from ``order`` are left out.
    """
    blocks_dir = as_location(blocks_dir)
    kept = {p.stem for p in blocks_dir.glob("*.parquet")} if blocks_dir.exists() else set()
    ordered = sort_block_keys([*kept, block]) if order is None else list(order)
    if block not in ordered:
        raise ValueError(f"block {block!r} is not in the given processing order")
    earlier = [key for key in ordered[: ordered.index(block)] if key in kept]
    if last is not None:
        earlier = earlier[-last:] if last > 0 else []
    return earlier


def read_blocks(blocks_dir: Location, keys: list[str]) -> pd.DataFrame:
    """The kept rows of ``keys``, concatenated in that order (an empty frame for no keys)."""
    if not keys:
        return pd.DataFrame()
    blocks_dir = as_location(blocks_dir)
    return pd.concat([read_parquet(blocks_dir / f"{key}.parquet") for key in keys], ignore_index=True)
