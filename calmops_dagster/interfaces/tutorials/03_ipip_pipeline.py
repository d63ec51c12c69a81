# ruff: noqa: N999 -- numbered tutorial scripts are run, never imported
"""Tutorial 3: an IPIP pipeline for an imbalanced binary target.

IPIP (calmops_dagster.learning.ipip.IPIPClassifier) is an ensemble of ensembles, each trained on balanced
subsamples of the rare and the common class. An ``ipip`` pipeline retrains it on every block (the new
models join, the weakest leave), so it suits labels that are rare and drift slowly. The target can hold any
two labels ("fraud" / "ok" here).

    python 03_ipip_pipeline.py [--home DIR]
"""

import duckdb
import numpy as np
import pandas as pd
from _common import calmops, deliver, tutorial_home

from calmops_dagster.store.model_store import ModelStore

home = tutorial_home(__doc__.splitlines()[0])

# 1. Three blocks of 600 rows, about 5% "fraud".
rng = np.random.default_rng(0)
parts = []
for block in (1, 2, 3):
    x = rng.normal(size=(600, 3))
    label = np.where(x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=600) > 1.9, "fraud", "ok")
    parts.append(pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": label, "block": block}))
data_dir = home / "data"
data_dir.mkdir()
frame = pd.concat(parts)
frame.to_csv(home / "transactions.csv", index=False)
deliver([home / "transactions.csv"], data_dir)  # copied in as a finished upload
print(f"fraud share: {(frame['label'] == 'fraud').mean():.3f}")

# 2. The spec: type ipip, a small tree as the base model.
calmops("init", "fraud", "--type", "ipip", "--data-dir", str(data_dir), "--target", "label",
        "--block-col", "block", "--model", "sklearn.tree.DecisionTreeClassifier", "--param", "max_depth=4",
        "--param", "random_state=0")
calmops("run", "fraud")

# 3. A new model version per block; its manifest says how the ensemble was built.
store = ModelStore(home / "pipelines" / "fraud" / "models")
print("versions:", store.versions(), "champion:", store.champion_version())
manifest = store.manifest(store.champion_version())
print({k: manifest.get(k) for k in ("role", "trained_on_blocks", "model_spec", "metrics")})
with duckdb.connect(str(home / "metrics.duckdb"), read_only=True) as con:
    print(con.sql("SELECT block, decision, reason FROM promotions ORDER BY block"))
