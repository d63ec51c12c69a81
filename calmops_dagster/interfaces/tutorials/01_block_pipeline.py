# ruff: noqa: N999 -- numbered tutorial scripts are run, never imported
"""Tutorial 1: a block pipeline, from data files to a promoted challenger.

A *block* pipeline watches a folder of CSV/Parquet files whose rows carry a block column. Every new block
value is a Dagster partition that flows through data_block -> drift_report -> challenger_model ->
champion_model -> predictions. Here the data drifts abruptly at block 3: the drift report sees it, a
challenger is trained on block 3 and replaces the champion because it is significantly better.

    python 01_block_pipeline.py [--home DIR]
"""

import duckdb
from _common import calmops, deliver, tutorial_home

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks

home = tutorial_home(__doc__.splitlines()[0])

# 1. Data: four blocks of 300 rows (x1..x4, segment -> y), abrupt drift from block 3.
frame = make_drifting_blocks(n_blocks=4, rows_per_block=300, drift_at=3, seed=7)
staged = write_blocks(frame, home / "incoming", block_col="block")
data_dir = home / "data"
data_dir.mkdir()

# 2. A pipeline spec: pipelines/demo/pipeline.yaml under CALMOPS_HOME.
calmops("init", "demo", "--type", "block", "--data-dir", str(data_dir), "--target", "y", "--block-col", "block",
        "--model", "sklearn.ensemble.RandomForestClassifier", "--param", "n_estimators=30",
        "--param", "random_state=0")

# 3. The first two blocks arrive; `calmops run` does what the file sensor of `dagster dev` does.
deliver(staged[:2], data_dir)
calmops("run", "demo")

# 4. Drift arrives with blocks 3 and 4.
deliver(staged[2:], data_dir)
calmops("run", "demo")
calmops("list")

# 5. Every figure is in DuckDB.
with duckdb.connect(str(home / "metrics.duckdb"), read_only=True) as con:
    print(con.sql("SELECT block, drift_detected, round(drift_share, 2) AS drift_share, retrain "
                  "FROM drift_summary ORDER BY block"))
    print(con.sql("SELECT block, decision, champion_after FROM promotions ORDER BY block"))

# 6. One HTML page for the pipeline, and its log.
calmops("report", "demo", "--out", str(home / "demo_report.html"))
calmops("logs", "demo", "-n", "3")
print("\nOpen", home / "demo_report.html", "in a browser; `calmops dev` shows the same runs in the Dagster UI.")
