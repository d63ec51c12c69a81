"""Bytes and seconds per block of keeping ``data_block``'s value, against the earlier release in the same run.

- **one file** (this release, ``resources/block_files_io.py``): ``blocks/<block>.parquet`` with the step
  result's fields in its metadata, written once; each load reads it back into the ``LoadedBlock``.
- **pickle + Parquet** (the baseline, the release before): Dagster's filesystem IO manager pickles the
  ``LoadedBlock`` (frame included, pickle protocol 4 as Dagster does) to ``storage/<name>/data_block/<block>``
  and the load step writes the rows again, by hand, to ``blocks/<block>.parquet``; each load unpickles.

Per block: one store (the output of ``data_block``) and three loads (``drift_report``, ``champion_model`` and
``predictions`` take ``data_block`` as input), on the local disk, with atomic writes as both releases do them,
on the ingest benchmark's blocks (``benchmarks/ingest_bench.py``'s ``make_blocks``). Medians of ``--repeat``.

    python benchmarks/block_files_bench.py [--rows 10000] [--features 16] [--repeat 7]
"""

from __future__ import annotations

import argparse
import io
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.ingest_bench import load, make_blocks  # after ROOT is on the path
from calmops_dagster.ingest.block_data import frame_sha256
from calmops_dagster.steps.result_files import result_bytes, result_from_bytes
from calmops_dagster.steps.results import LoadedBlock
from calmops_dagster.store.storage import write_atomic

#: How many steps take ``data_block`` as input in a block's run.
LOADS = 3
PICKLE_PROTOCOL = 4


def loaded_block(frame) -> LoadedBlock:
    features = [c for c in frame.columns if c not in ("y", "block")]
    return LoadedBlock(block="1", frame=frame, features=features, source_files=["block_001.csv"], version="v",
                       content_hash=frame_sha256(frame), null_cells=0, max_null_share=0.0, worst_column=features[0],
                       nulls_within_limit=True, breaker="closed")


def one_file(block: LoadedBlock, folder: Path) -> tuple[int, float, float]:
    """Bytes written, seconds to store, seconds for the three loads."""
    path = folder / "blocks" / "1.parquet"
    start = time.perf_counter()
    data = result_bytes(block)
    write_atomic(path, data)
    stored = time.perf_counter()
    for _ in range(LOADS):
        result_from_bytes(path.read_bytes())
    return len(data), stored - start, time.perf_counter() - stored


def pickle_and_parquet(block: LoadedBlock, folder: Path) -> tuple[int, float, float]:
    pickled, kept = folder / "storage" / "demo" / "data_block" / "1", folder / "blocks" / "1.parquet"
    start = time.perf_counter()
    buffer = io.BytesIO()
    block.frame.to_parquet(buffer, index=False)
    write_atomic(kept, buffer.getvalue())
    data = pickle.dumps(block, PICKLE_PROTOCOL)
    write_atomic(pickled, data)
    stored = time.perf_counter()
    for _ in range(LOADS):
        pickle.loads(pickled.read_bytes())
    return len(data) + kept.stat().st_size, stored - start, time.perf_counter() - stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    block = loaded_block(make_blocks(1, args.rows, args.features, drift_every=4)[0])
    figures = {"one file (this release)": [], "pickle + Parquet (before)": []}
    with tempfile.TemporaryDirectory(prefix="block_files_bench_") as root:
        for i in range(args.repeat):  # alternate, so both meet the same load
            figures["one file (this release)"].append(one_file(block, Path(root) / f"a{i}"))
            figures["pickle + Parquet (before)"].append(pickle_and_parquet(block, Path(root) / f"b{i}"))
    print(f"block_files_bench: a block of {args.rows:,} x {args.features}, median of {args.repeat}; {load()}")
    print("| data_block kept as | bytes written | store, s | 3 loads, s | store + loads, s |")
    print("|---|---|---|---|---|")
    for name, runs in figures.items():
        size, store, loads = (statistics.median(column) for column in zip(*runs, strict=True))
        total = statistics.median(s + ld for _, s, ld in runs)
        print(f"| {name} | {size:,.0f} | {store:.3f} | {loads:.3f} | {total:.3f} |")


if __name__ == "__main__":
    main()
