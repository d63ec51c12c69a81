# ruff: noqa: N999 -- numbered tutorial scripts are run, never imported
"""Tutorial 6: your own training code, with a fallback for when it fails.

The spec's ``custom_functions`` names functions of your own module (here ``my_training.py``, next to this
script): ``train`` builds the first champion and every challenger, adding a feature inside a scikit-learn
Pipeline; ``fallback`` runs when training raises and returns a simpler model. The module must be importable
where the runs execute (next to the script, installed, or on PYTHONPATH) and listed in ``allow_modules``.
Each model version's manifest records the function that built it and the sha256 of its module file; the
``promotions`` table names it in ``trained_by``.

    python 06_custom_training.py [--home DIR]
"""

import os

import duckdb
from _common import calmops, deliver, tutorial_home

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.store.model_store import ModelStore

home = tutorial_home(__doc__.splitlines()[0])

# 1. Data: four blocks of 300 rows, abrupt drift from block 3.
frame = make_drifting_blocks(n_blocks=4, rows_per_block=300, drift_at=3, seed=7)
staged = write_blocks(frame, home / "incoming", block_col="block")
data_dir = home / "data"
data_dir.mkdir()

# 2. A block pipeline (model_spec names the estimator the task is inferred from), then the custom_functions
#    section added to its pipeline.yaml, as you would in an editor.
calmops("init", "demo", "--type", "block", "--data-dir", str(data_dir), "--target", "y", "--block-col", "block",
        "--model", "sklearn.ensemble.RandomForestClassifier", "--param", "random_state=0")
spec_file = home / "pipelines" / "demo" / "pipeline.yaml"
spec_file.write_text(spec_file.read_text() + """\
custom_functions:
  train: my_training:train          # (X, y, context) -> fitted model
  fallback: my_training:fallback    # (error, X, y, context) -> fitted model, or None
  allow_modules: [my_training]      # imported from nowhere else
""")

# 3. Blocks 1 and 2: my_training.train builds the first champion.
deliver(staged[:2], data_dir)
calmops("run", "demo")

# 4. Drift arrives, and training breaks (the tutorial's stand-in for an outage): the fallback's simpler model
#    is the challenger, judged like any other. No run fails, so the circuit breaker counts nothing.
os.environ["TUTORIAL_BREAK_TRAINING"] = "1"
deliver(staged[2:], data_dir)
calmops("run", "demo")

# 5. Lineage: each version's manifest names the function that built it; promotions.trained_by too.
store = ModelStore(spec_file.parent / "models")
for version in store.versions():
    trained_by = store.manifest(version)["trained_by"]
    print(f"{version}: {trained_by['role']} {trained_by['function']} "
          f"(module sha256 {trained_by['module_sha256'][:12]}...)")
with duckdb.connect(str(home / "metrics.duckdb"), read_only=True) as con:
    print(con.sql("SELECT block, decision, challenger, trained_by, champion_after FROM promotions ORDER BY block"))
calmops("list")
