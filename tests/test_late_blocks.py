"""Event time vs processing time: a late block is monitored and kept, but never turns production back."""

from __future__ import annotations

import logging
import shutil

import duckdb
import pandas as pd
import pytest
from conftest import block_spec_dict
from dagster import AssetKey, DagsterInstance, Definitions

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.learning.event_time import place_block
from calmops_dagster.learning.training import fit_full
from calmops_dagster.orchestration.headless_runs import run_pending
from calmops_dagster.orchestration.ingest_registration import register_new_blocks
from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
from calmops_dagster.resources import build_resources
from calmops_dagster.spec import parse_spec, save_spec
from calmops_dagster.steps.assess_block import place_in_event_time
from calmops_dagster.steps.decide_champion import settle_champion
from calmops_dagster.steps.results import ChallengerOutcome
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from tests.test_promotion import concept

ORDER = ["1", "2", "3", "4", "5", "6"]


def test_a_block_older_than_a_processed_one_is_late():
    on_time = place_block("6", ORDER, ["1", "2", "4", "5"], "v0002", ["4"])
    assert not on_time.late and on_time.promotion_hold(False) is None and on_time.rollback_hold() is None
    late = place_block("3", ORDER, ["1", "2", "4", "5", "6"], "v0002", ["4"])
    assert late.late and late.newest_processed == "6" and late.champion_newest_block == "4"
    hold = late.promotion_hold(allow_late_promotion=False)
    assert "late block 3" in hold and "block 4" in hold and "allow_late_promotion" in hold
    assert late.promotion_hold(allow_late_promotion=True) is None
    assert "never triggers an automatic rollback" in late.rollback_hold()


def test_a_late_block_newer_than_the_champions_data_may_still_promote():
    """The champion moves forward in event time: v0001 trained on block 1, block 3 arrives after block 5."""
    late = place_block("3", ORDER, ["1", "2", "4", "5"], "v0001", ["1"])
    assert late.late and not late.champion_is_newer and late.promotion_hold(False) is None
    assert late.rollback_hold() is not None  # but it never rolls back


def test_stream_pipelines_use_arrival_order(home, tmp_path):
    spec = parse_spec({**block_spec_dict("s", str(tmp_path)), "type": "stream", "block_col": None},
                      home.spec_path("s"))
    store = ModelStore(home.models_dir("s"))
    arrival = ["f_b", "f_a", "f_c"]  # block keys need not sort in arrival order
    assert not place_in_event_time(spec, store, "f_c", ["f_b", "f_a"], arrival).late
    assert place_in_event_time(spec, store, "f_a", ["f_b", "f_c"], arrival).late
    with pytest.raises(ValueError, match="not in the event order"):
        place_block("f_x", arrival, [])


def test_a_late_block_never_rolls_back(home, tmp_path):
    """The situation of test_promotion's automatic rollback, but the old concept comes back in a late block:
    the rollback that would have happened is recorded, not applied."""
    spec = parse_spec(block_spec_dict("p", str(tmp_path)), home.spec_path("p"))
    store = ModelStore(home.models_dir("p"))
    for block, flip in (("1", False), ("2", True)):
        frame = concept(int(block), flip)
        model = fit_full(spec, frame[["a", "b"]], frame["y"])
        version = store.save(model, reference=frame, features=["a", "b"], metrics={"balanced_accuracy": 0.99},
                             trained_on_blocks=[block])
        store.set_champion(version, block, "promoted")
    when = place_in_event_time(spec, store, "0", ["1", "2"])
    no_challenger = ChallengerOutcome(None, "v0002", "no retrain")
    decision, _ = settle_champion(spec, store, "0", concept(0), no_challenger, {"balanced_accuracy": 0.02},
                                  rollback_hold=when.rollback_hold())
    assert decision.decision == "late_kept" and store.champion_version() == "v0002"
    assert "never triggers an automatic rollback" in decision.reason and "v0001" in decision.reason


def test_late_block_is_monitored_and_kept_but_does_not_promote(home, tmp_path):
    """The issue's recipe: blocks 1, 2, 4, 5 processed (drift at 4 promotes v0002), then block 3 of the old
    regime arrives. It is judged against v0002, recorded as late, predicted by v0002, kept for history,
    and the champion stays v0002 (no challenger trained, no version added)."""
    staging, data = tmp_path / "staging", tmp_path / "data"
    data.mkdir()
    files = write_blocks(make_drifting_blocks(n_blocks=5, rows_per_block=300, drift_at=4, seed=7), staging,
                         block_col="block")
    spec = parse_spec(block_spec_dict("late", str(data)), home.spec_path("late"))
    save_spec(spec, home.spec_path("late"))
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    metrics, store = MetricsStore(home.metrics_db), ModelStore(home.models_dir("late"))

    def deliver_and_run(instance, *indices):
        for i in indices:
            shutil.copy(files[i], data)
        register_new_blocks(instance, spec, metrics, store, logging.getLogger("test"))
        results = run_pending(instance, spec, defs.resolve_job_def(job_name(spec)), metrics)
        assert all(r.success for r in results), [r.summary for r in results]
        return [r.block for r in results]

    with DagsterInstance.ephemeral() as instance:
        assert deliver_and_run(instance, 0, 1, 3, 4) == ["1", "2", "4", "5"]
        champion, versions = store.champion_version(), store.versions()
        assert champion == "v0002"
        assert deliver_and_run(instance, 2) == ["3"]
        drift_md = instance.get_latest_materialization_event(
            AssetKey(["late", "drift_report"])).asset_materialization.metadata
        champion_md = instance.get_latest_materialization_event(
            AssetKey(["late", "champion_model"])).asset_materialization.metadata
    assert store.champion_version() == champion and store.versions() == versions
    with duckdb.connect(str(home.metrics_db), read_only=True) as con:
        promotions = con.execute("SELECT * FROM promotions ORDER BY block").df().set_index("block")
        summary = con.execute("SELECT * FROM drift_summary ORDER BY block").df().set_index("block")
        trained = con.execute("SELECT count(*) FROM performance WHERE block = '3' AND role = 'challenger'"
                              ).fetchone()
    row = promotions.loc["3"]
    assert row["decision"] == "late_kept" and bool(row["late"]) and row["challenger"] is None
    assert row["champion_before"] == row["champion_after"] == "v0002"
    assert "late block 3" in row["reason"] and "data drift" in row["reason"] and "allow_late_promotion" in row["reason"]
    assert "would have rolled back" in row["reason"]  # v0001 does better on the old regime: not restored
    assert not promotions.loc[["1", "2", "4", "5"], "late"].any()
    assert summary.loc["3", "late"] and summary.loc["3", "drift_detected"] and not summary.loc["3", "retrain"]
    assert summary.loc["3", "reference_version"] == "v0002"
    assert trained == (0,)
    assert drift_md["late"].value == 1 and drift_md["newest_block_processed"].value == "5"
    assert champion_md["late"].value == 1 and champion_md["decision"].value == "late_kept"
    predictions = pd.read_parquet(home.predictions_dir("late") / "3.parquet")
    assert set(predictions["model_version"]) == {"v0002"}
    assert (home.blocks_dir("late") / "3.parquet").is_file()  # kept for window / replay_mix
