"""An IPIP pipeline through Dagster: retrains every block, records drift, shows p, b and the kept share."""

from __future__ import annotations

import logging
import os

import duckdb
import numpy as np
import pandas as pd
from dagster import AssetKey, DagsterInstance, Definitions

from calmops_dagster.learning.ipip import IPIPClassifier
from calmops_dagster.orchestration.headless_runs import run_pending
from calmops_dagster.orchestration.ingest_registration import register_new_blocks
from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
from calmops_dagster.resources import build_resources
from calmops_dagster.spec import parse_spec, save_spec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from tests.conftest import block_spec_dict


def imbalanced_blocks(path, n_blocks=3, rows=600, seed=0):
    rng = np.random.default_rng(seed)
    parts = []
    for block in range(1, n_blocks + 1):
        x = rng.normal(size=(rows, 3))
        label = np.where(x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=rows) > 1.9, "fraud", "ok")
        parts.append(pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": label, "block": block}))
    frame = pd.concat(parts)
    frame.to_csv(path, index=False)
    return frame


def test_ipip_pipeline_retrains_every_block(home, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    frame = imbalanced_blocks(data / "blocks.csv")
    assert 0.02 < (frame["label"] == "fraud").mean() < 0.1  # imbalanced, labels other than 0/1
    os.utime(data / "blocks.csv", (0, 0))  # stable
    raw = block_spec_dict("fraud", str(data), type="ipip", target="label", performance={},
                          model_spec={"module": "sklearn.tree", "class": "DecisionTreeClassifier",
                                      "params": {"max_depth": 4, "random_state": 0}})
    spec = parse_spec(raw, home.spec_path("fraud"))
    save_spec(spec, home.spec_path("fraud"))
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    with DagsterInstance.ephemeral() as instance:
        metrics, models = MetricsStore(home.metrics_db), ModelStore(home.models_dir("fraud"))
        register_new_blocks(instance, spec, metrics, models, logging.getLogger("test"))
        results = run_pending(instance, spec, defs.resolve_job_def(job_name(spec)), metrics)
        assert [r.success for r in results] == [True, True, True], [r.summary for r in results]
        challenger = instance.get_latest_materialization_event(AssetKey(["fraud", "challenger_model"]))
        meta = challenger.asset_materialization.metadata
        assert meta["ipip_p"].value >= 1 and meta["ipip_b"].value >= 1
        assert 0 <= meta["ipip_kept_new_share"].value <= 1

    with duckdb.connect(str(home.metrics_db), read_only=True) as con:
        decisions = con.execute("SELECT block, decision, reason FROM promotions ORDER BY block").fetchall()
        drift_rows = con.execute("SELECT count(*) FROM drift_results WHERE block = '3'").fetchone()[0]
    assert [d[1] for d in decisions] == ["promoted"] * 3
    assert all("ipip" in d[2] or "first" in d[2] for d in decisions)
    assert drift_rows > 0  # drift is still recorded, for information
    champion = models.load(models.champion_version())
    inner = champion.named_steps["model"]
    assert isinstance(inner, IPIPClassifier) and set(inner.classes_) == {"fraud", "ok"}
    assert len(inner.ensembles_) == inner.p_
