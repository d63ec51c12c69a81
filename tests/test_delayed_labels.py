"""Delayed labels: blocks without the target are estimated; when their label files land, the labels sensor
runs them again with the labels, so realized performance sits beside the estimate and the decision is made."""

from __future__ import annotations

import os

import pandas as pd
from dagster import Definitions, build_sensor_context

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.ingest.labels import attach_labels, label_file_versions
from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
from calmops_dagster.resources import build_resources
from calmops_dagster.spec import parse_spec, save_spec
from calmops_dagster.store.metrics_store import MetricsStore
from tests.conftest import block_spec_dict
from tests.test_block_pipeline import run_pipeline


def test_attach_labels_counts_missing_duplicate_and_conflicting_ids():
    block = pd.DataFrame({"id": [1, 2, 3, 4], "x": [0.1, 0.2, 0.3, 0.4]})
    labels = pd.DataFrame({"id": [1, 2, 2, 3, 3, 9], "y": [0, 1, 1, 0, 1, 1]})
    attached, count = attach_labels(block, labels, "id", "y")
    assert attached is None and not count.complete
    assert (count.rows, count.labelled, count.missing, count.duplicate_ids, count.conflicting_ids) == (4, 2, 2, 2, 1)
    attached, count = attach_labels(block.iloc[:2], labels, "id", "y")
    assert count.complete and attached["y"].tolist() == [0, 1]


def test_a_label_file_still_being_written_waits_for_a_later_tick(tmp_path):
    (tmp_path / "l.csv").write_text("id,y\n1,0\n")
    waiting = label_file_versions(tmp_path, settle_seconds=3600)
    assert (waiting.files, waiting.waiting, waiting.hashed) == ({}, ["l.csv"], [])
    settled = label_file_versions(tmp_path, settle_seconds=0)
    assert list(settled.hashes) == ["l.csv"] and not settled.waiting


def test_labels_landing_later_give_realized_performance_beside_the_estimate(home, tmp_path, instance):
    frame = make_drifting_blocks(n_blocks=3, rows_per_block=300, drift_at=4, seed=5)
    frame.insert(0, "id", [f"r{i}" for i in range(len(frame))])
    data, labels_dir = tmp_path / "data", tmp_path / "labels"
    data.mkdir()
    labels_dir.mkdir()
    frame[frame["block"] == 1].to_csv(data / "b1.csv", index=False)  # the first block trains the champion
    frame[frame["block"] > 1].drop(columns="y").to_csv(data / "b23.csv", index=False)
    for path in data.iterdir():
        os.utime(path, (0, 0))
    spec = parse_spec(block_spec_dict("late_labels", data, labels={"dir": str(labels_dir), "id_col": "id"}),
                      home.spec_path("late_labels"))
    save_spec(spec, home.spec_path("late_labels"))
    assert "id" not in spec.feature_columns(frame.columns)
    assert all(r.success for r in run_pipeline(home, spec, instance))
    db = MetricsStore(home.metrics_db)
    summary = db.query("SELECT block, retrain, reason FROM drift_summary ORDER BY block").set_index("block")
    assert summary.loc["2", "reason"].startswith("labels not arrived") and not summary.loc["2", "retrain"]
    roles = db.query("SELECT block, role FROM performance WHERE evaluated_on = 'block'")
    assert set(roles.loc[roles["block"] == "2", "role"]) == {"estimated"}

    block2, block3 = frame[frame["block"] == 2], frame[frame["block"] == 3]
    extra = pd.DataFrame({"id": ["never-seen-1", "never-seen-2", block2["id"].iloc[0]],
                          "y": [0, 1, block2["y"].iloc[0]]})
    pd.concat([block2[["id", "y"]], block3[["id", "y"]].iloc[10:], extra]).to_csv(labels_dir / "l1.csv",
                                                                                  index=False)
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    sensor = next(s for s in build_pipeline_definitions(spec).sensors if s.name == "late_labels_labels")
    resources = build_resources(home)
    result = sensor(build_sensor_context(instance=instance, resources={k: resources[k] for k in ("home", "metrics")}))
    assert [r.partition_key for r in result.run_requests] == ["2"]  # block 3 still lacks 10 labels
    counts = db.query("SELECT * FROM labels").set_index("block")
    assert counts.loc["3", "missing"] == 10 and not counts.loc["3", "complete"]
    assert counts.loc["2", "complete"] and counts.loc["2", "duplicate_ids"] == 1
    assert counts.loc["__unmatched__", "unknown_ids"] == 2
    again = sensor(build_sensor_context(instance=instance, cursor=result.cursor,
                                        resources={k: resources[k] for k in ("home", "metrics")}))
    assert not getattr(again, "run_requests", None)  # nothing new: nothing requested twice

    run = defs.resolve_job_def(job_name(spec)).execute_in_process(partition_key="2", instance=instance)
    assert run.success
    perf = db.query("SELECT role, metric, value, ci_low, ci_high FROM performance "
                    "WHERE block = '2' AND evaluated_on = 'block'").set_index(["role", "metric"])
    realized, estimated = perf.loc[("realized", "accuracy"), "value"], perf.loc[("estimated", "accuracy")]
    assert abs(realized - estimated["value"]) < 0.08
    reason = db.query("SELECT reason FROM drift_summary WHERE block = '2'")["reason"].iloc[0]
    assert not reason.startswith("labels not arrived")
    decision = db.query("SELECT decision, late FROM promotions WHERE block = '2'").iloc[0]
    assert decision["late"]  # block 3 was processed before block 2's labels landed
