# ruff: noqa: N999 -- numbered tutorial scripts are run, never imported
"""Tutorial 4: data generators, known drift to test a pipeline against.

``generators/`` writes one file per block plus ``ground_truth.json`` (where and what drift was put in):
synthetic river streams with concept drift, realistic copies of a real table (FCS cart/rf/lgbm, SDV),
clinical cohorts, and drift injection into any table. The drift engine should find what was injected.

    python 04_generators.py [--home DIR]
"""

import json

from _common import calmops, tutorial_home

from calmops_dagster.drift import DriftConfig, detect_drift
from calmops_dagster.generators.drift_injection import DriftInjector
from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks

home = tutorial_home(__doc__.splitlines()[0])

# 1. A synthetic SEA stream (river) whose concept changes at block 4, one CSV per block.
calmops("generate", "synthetic", "--generator", "sea", "--settings", '{"variant": 0}', "--drift-to",
        '{"variant": 3}', "--drift-block", "4", "--blocks", "5", "--rows-per-block", "300", "--seed", "0",
        "--out", str(home / "sea"))
print(json.dumps(json.loads((home / "sea" / "ground_truth.json").read_text()), indent=1)[:600])

# 2. Drift injection into an existing table: x3 shifts by 1.5 standard deviations in blocks 3 and 4 only.
table = make_drifting_blocks(n_blocks=4, rows_per_block=400, drift_at=99, seed=0)  # no drift of its own
injector = DriftInjector(table, seed=0, block_col="block")
injector.feature_drift(["x3"], kind="shift", magnitude=1.5, blocks=[3, 4])
files = write_blocks(injector.frame, home / "injected", block_col="block", ground_truth=injector.ground_truth)
print("wrote", [f.name for f in files])

# 3. The drift engine finds exactly the injected column.
features = ["x1", "x2", "x3", "x4", "segment"]
reference = injector.frame[injector.frame["block"] == 1][features]
for block in (2, 3):
    current = injector.frame[injector.frame["block"] == block][features]
    report = detect_drift(reference, current, config=DriftConfig(correction="holm"))
    print(f"block {block}: drift={report.drift_detected}, drifted features={report.drifted_features}")
