"""Build ``tests/data/segment_home``: a metric store in Parquet segments, as the release before Delta Lake wrote it.

Run with that release's checkout on the path (its ``MetricsStore`` writes segments), e.g.
``PYTHONPATH=<checkout> python tests/data/build_segment_home.py``; it also writes ``expected.json``: what its
views showed of every table and ``<table>_history``, which the conversion must keep.
"""

from __future__ import annotations

import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from calmops_dagster.steps import circuit_breaker
from calmops_dagster.store.metrics_store import SCHEMA, MetricsStore, views

HOME = Path(__file__).resolve().parent / "segment_home"


def build() -> None:
    shutil.rmtree(HOME, ignore_errors=True)
    store = MetricsStore(HOME / "metrics.duckdb")
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    for pipeline in ("demo", "other pipe"):
        for block in ("1", "2", "3"):
            store.replace_block_rows("blocks", pipeline, block, [{"rows": 100, "source_file": f"b{block}.csv",
                                                                  "loaded_at": at}], run_id=f"run-{block}")
            store.replace_block_rows("drift_results", pipeline, block, [
                {"feature": f"x{i}", "test": "ks", "p_value": 0.1 * i, "drifted": i == 2, "computed_at": at}
                for i in range(3)], run_id=f"run-{block}")
            store.replace_block_rows("performance", pipeline, block, [{"metric": "accuracy", "value": 0.8,
                                                                       "role": "champion"}],
                                     scope={"evaluated_on": "block"}, run_id=f"run-{block}")
            store.replace_block_rows("promotions", pipeline, block, [{"decision": "kept", "reason": "first"}],
                                     run_id=f"run-{block}")
        # a rerun of block 2 (history), a block emptied (a tombstone), event rows
        store.replace_block_rows("drift_results", pipeline, "2", [
            {"feature": "x0", "test": "ks", "p_value": 0.5, "drifted": False, "computed_at": at}], run_id="rerun-2")
        store.replace_block_rows("promotions", pipeline, "2", [{"decision": "promoted", "reason": "rerun"}],
                                 run_id="rerun-2")
        store.replace_block_rows("performance", pipeline, "3", [], scope={"evaluated_on": "block"})
        store.append_rows("quarantine", [{"pipeline": pipeline, "file": "bad.csv", "reason": "empty"}])
        store.append_rows("data_files", [{"pipeline": pipeline, "file": f"b{b}.csv", "size": 10, "status": "accepted"}
                                         for b in "123"])
        store.update_breaker(pipeline, lambda s: circuit_breaker.on_failure(s, 3, 60, at, "boom"), run_id="r-fail")
    store.compact("demo")  # a compacted pipeline beside one that was not
    expected = {view: json.loads(store.query(f"SELECT * FROM {view} ORDER BY ALL").to_json(
        orient="records", date_format="iso")) for view in views()}
    (HOME / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True))
    print(f"{HOME}: {sum(len(v) for v in expected.values())} rows in {len(SCHEMA)} tables and their history",
          file=sys.stderr)


if __name__ == "__main__":
    build()
