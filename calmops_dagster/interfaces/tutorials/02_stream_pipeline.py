# ruff: noqa: N999 -- numbered tutorial scripts are run, never imported
"""Tutorial 2: a stream pipeline, where every file that lands is one partition.

A *stream* pipeline has no block column: each new file version in the watched folder is a Dagster partition
keyed `<file stem>-<12 hex of its sha256>`, processed in arrival order. A file rewritten later is a new
partition (the old version stays in `pipelines/<name>/incoming/`), a copy of content already seen is ignored,
and a file that cannot be read is moved to `quarantine/` with the reason in DuckDB.

    python 02_stream_pipeline.py [--home DIR]
"""

import shutil

import duckdb
from _common import calmops, deliver, tutorial_home

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks

home = tutorial_home(__doc__.splitlines()[0])

# 1. Data: four hourly exports of 300 rows each (x1..x4, segment -> y), drift from the third one on.
frame = make_drifting_blocks(n_blocks=4, rows_per_block=300, drift_at=3, seed=7)
staged = home / "exports"
staged.mkdir()
exports = []
for hour, rows in frame.groupby("block"):
    path = staged / f"export_{hour:02d}h.csv"
    rows.drop(columns="block").to_csv(path, index=False)
    exports.append(path)
data_dir = home / "data"
data_dir.mkdir()

# 2. A stream spec: no --block-col.
calmops("init", "events", "--type", "stream", "--data-dir", str(data_dir), "--target", "y",
        "--model", "sklearn.ensemble.RandomForestClassifier", "--param", "n_estimators=30",
        "--param", "random_state=0")

# 3. Files land one at a time; `calmops run` does what the file sensor of `dagster dev` does on each tick.
for path in exports:
    deliver([path], data_dir)
    calmops("run", "events")

# 4. Bad and repeated input: an export without the target column is quarantined (a file whose last line
#    is cut short would instead wait: it is still being written), a copy of an old export is ignored.
no_target = staged / "export_05h.csv"
no_target.write_text("x1,x2,x3,x4,segment\n0.1,0.2,0.3,0.4,a\n")
duplicate = staged / "export_01h_copy.csv"
shutil.copy(exports[0], duplicate)
deliver([no_target, duplicate], data_dir)
calmops("run", "events")

# 5. A rewritten file is a new version: a new partition, the old one kept as it was.
rewritten = staged / "rewritten" / exports[3].name
rewritten.parent.mkdir()
frame[frame["block"] == 4].drop(columns="block").head(200).to_csv(rewritten, index=False)
deliver([rewritten], data_dir)
calmops("run", "events")
calmops("list")

with duckdb.connect(str(home / "metrics.duckdb"), read_only=True) as con:
    print(con.sql("SELECT block, rows FROM blocks ORDER BY loaded_at"))
    print(con.sql("SELECT block, drift_detected, retrain FROM drift_summary ORDER BY computed_at"))
    print(con.sql("SELECT regexp_extract(file, '[^/]+$') AS file, reason FROM quarantine"))
print("incoming store:", sorted(p.name for p in (home / "pipelines/events/incoming").iterdir()))
