"""The Dagster UI tells the block story: what a demo run leaves in the instance (event log, check records).

Four blocks run through Dagster in-process (abrupt drift at block 3): ``challenger_model`` is materialized
only for the blocks that trained one, every check result names its block, the drift check reads per block (block 3 failed, and the latest result is block 4's pass), and the metadata the UI
shows holds rounded floats, booleans as booleans and no NaN. The metadata rules themselves are unit-tested on
small dicts.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from conftest import block_spec_dict
from dagster import (
    AssetCheckKey,
    AssetKey,
    BoolMetadataValue,
    DagsterInstance,
    Definitions,
    FloatMetadataValue,
    IntMetadataValue,
    MetadataValue,
    TextMetadataValue,
)

from calmops_dagster.assets.metadata import (
    check_description,
    check_metadata,
    metadata_value,
    rounded,
    ui_metadata,
)
from calmops_dagster.assets.wiring import DRIFT_CHECK, PERFORMANCE_CHECK, SCHEMA_CHECK
from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.orchestration.headless_runs import run_pending
from calmops_dagster.orchestration.ingest_registration import register_new_blocks
from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
from calmops_dagster.resources import build_resources
from calmops_dagster.spec import parse_spec, save_spec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from calmops_dagster.store.paths import CalmOpsHome

ASSETS = ["data_block", "drift_report", "challenger_model", "champion_model", "predictions", "monitoring"]
CHECKS = [("data_block", SCHEMA_CHECK), ("drift_report", DRIFT_CHECK), ("champion_model", PERFORMANCE_CHECK)]
#: yes/no entries: booleans in the UI, never 1/0
FLAGS = {"drift_detected", "retrain", "performance_drop", "late", "rerun", "trained", "promoted", "rolled_back"}


@pytest.fixture(scope="module")
def four_blocks(tmp_path_factory):
    """(home, instance) after the demo's four blocks (drift at 3) ran through Dagster in-process."""
    root = tmp_path_factory.mktemp("four_blocks")
    home = CalmOpsHome(root / "calmops")
    frame = make_drifting_blocks(n_blocks=4, rows_per_block=300, drift_at=3, seed=7)
    write_blocks(frame, root / "data", block_col="block")
    spec = parse_spec(block_spec_dict("demo", root / "data"), home.spec_path("demo"))
    save_spec(spec, home.spec_path("demo"))
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    with pytest.MonkeyPatch.context() as patch, DagsterInstance.ephemeral() as instance:
        patch.setenv("CALMOPS_HOME", str(home.root))
        metrics = MetricsStore(home.metrics_db)
        register_new_blocks(instance, spec, metrics, ModelStore(home.models_dir("demo")), logging.getLogger("t"))
        results = run_pending(instance, spec, defs.resolve_job_def(job_name(spec)), metrics)
        assert [r.block for r in results] == ["1", "2", "3", "4"] and all(r.success for r in results), results
        yield home, instance


def check_evaluations(instance, asset_name: str, check_name: str) -> list:
    key = AssetCheckKey(AssetKey(["demo", asset_name]), check_name)
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
    return [record.event.dagster_event.event_specific_data for record in history]


def test_challenger_model_is_materialized_only_for_the_blocks_that_trained_one(four_blocks):
    """Blocks 1 (the first champion) and 3 (drift) train a challenger; 2 and 4 do not, and their drift report
    says why, while their decision is still made (``champion_model`` has every block)."""
    home, instance = four_blocks
    trained = MetricsStore(home.metrics_db).query(
        "SELECT block FROM promotions WHERE challenger IS NOT NULL ORDER BY block")["block"].tolist()
    assert trained == ["1", "3"]
    assert instance.get_materialized_partitions(AssetKey(["demo", "challenger_model"])) == {"1", "3"}
    for name in ("data_block", "drift_report", "champion_model", "predictions"):
        assert instance.get_materialized_partitions(AssetKey(["demo", name])) == {"1", "2", "3", "4"}, name
    drift = {r.asset_materialization.partition: r.asset_materialization.metadata for r in
             instance.fetch_materializations(AssetKey(["demo", "drift_report"]), limit=10).records}
    assert drift["2"]["challenger"].value == f"none: {drift['2']['reason'].value}"
    assert drift["2"]["retrain"] == BoolMetadataValue(False)
    assert drift["3"]["challenger"].value == "called for (challenger_model)"
    challenger = instance.get_latest_materialization_event(AssetKey(["demo", "challenger_model"]))
    assert challenger.asset_materialization.partition == "3"
    assert challenger.asset_materialization.metadata["trained"] == BoolMetadataValue(True)


def test_the_decision_alone_is_materializable_and_says_when_a_trained_challenger_is_not_shown(tmp_path, monkeypatch):
    """A run that selects ``champion_model`` without ``challenger_model`` (the UI's Materialize on it) still
    decides the block; the challenger it trains cannot be shown (Dagster refuses an unselected output), and
    the run's log says so."""
    home = CalmOpsHome(tmp_path / "calmops")
    monkeypatch.setenv("CALMOPS_HOME", str(home.root))
    write_blocks(make_drifting_blocks(n_blocks=1, rows_per_block=300, seed=7), tmp_path / "data", block_col="block")
    spec = parse_spec(block_spec_dict("demo", tmp_path / "data"), home.spec_path("demo"))
    save_spec(spec, home.spec_path("demo"))
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    with DagsterInstance.ephemeral() as instance:
        register_new_blocks(instance, spec, MetricsStore(home.metrics_db), ModelStore(home.models_dir("demo")),
                            logging.getLogger("t"))
        selection = [AssetKey(["demo", name]) for name in ("data_block", "drift_report", "champion_model")]
        result = defs.resolve_job_def(job_name(spec)).execute_in_process(
            instance=instance, partition_key="1", asset_selection=selection)
        assert result.success
        assert not instance.get_materialized_partitions(AssetKey(["demo", "challenger_model"]))
        messages = [entry.message for entry in instance.all_logs(result.run_id)]
    assert any("challenger v0001 trained, but challenger_model is not materialized" in m for m in messages)
    assert ModelStore(home.models_dir("demo")).champion_version() == "v0001"  # the first champion, decided


def test_monitoring_says_how_it_is_updated(four_blocks):
    home, _ = four_blocks
    spec = parse_spec(block_spec_dict("demo", home.root), home.spec_path("demo"))
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    monitoring = defs.resolve_asset_graph().get(AssetKey(["demo", "monitoring"]))
    assert "every block's run reports it from its `champion_model` step" in monitoring.description
    assert "no automation, schedule or Materialize button" in monitoring.description


def test_every_check_result_names_its_block_in_its_description_and_metadata(four_blocks):
    _, instance = four_blocks
    for asset_name, check_name in CHECKS:
        evaluations = check_evaluations(instance, asset_name, check_name)
        assert sorted(e.partition for e in evaluations) == ["1", "2", "3", "4"], check_name
        for evaluation in evaluations:
            block = evaluation.partition
            verdict = "passed" if evaluation.passed else "failed"
            assert evaluation.description.startswith(f"block {block}: {verdict}, "), evaluation.description
            assert evaluation.metadata["block"] == TextMetadataValue(block)
    drift = {e.partition: e for e in check_evaluations(instance, "drift_report", DRIFT_CHECK)}
    assert "drifted features: x1" in drift["3"].description and not drift["3"].passed


def test_the_drift_check_reads_per_block_and_its_latest_result_is_the_last_block(four_blocks):
    """What the UI's check status reads: the status per partition (block 3 failed, the others passed), and
    the latest execution, the last block's, which passed: block 3's failure is history, not the state now."""
    _, instance = four_blocks
    key = AssetCheckKey(AssetKey(["demo", "drift_report"]), DRIFT_CHECK)
    per_block = {info.partition_key: info.latest_execution_status.value
                 for info in instance.event_log_storage.get_asset_check_partition_info([key])}
    assert per_block == {"1": "SUCCEEDED", "2": "SUCCEEDED", "3": "FAILED", "4": "SUCCEEDED"}
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    assert latest.partition == "4" and latest.status.value == "SUCCEEDED"


def shown_metadata(instance):
    """(where, key, value) of every metadata entry the run left: materializations and check results."""
    for name in ASSETS:
        for record in instance.fetch_materializations(AssetKey(["demo", name]), limit=100).records:
            materialization = record.asset_materialization
            for key, value in materialization.metadata.items():
                yield f"{name}[{materialization.partition}]", key, value
    for asset_name, check_name in CHECKS:
        for evaluation in check_evaluations(instance, asset_name, check_name):
            for key, value in evaluation.metadata.items():
                yield f"{check_name}[{evaluation.partition}]", key, value


def test_metadata_is_rounded_booleans_are_booleans_and_nothing_is_nan(four_blocks):
    _, instance = four_blocks
    entries = list(shown_metadata(instance))
    assert len(entries) > 100
    floats = [(where, key, v.value) for where, key, v in entries if isinstance(v, FloatMetadataValue)]
    assert floats and all(math.isfinite(value) for _, _, value in floats), [f for f in floats if not
                                                                           math.isfinite(f[2])]
    assert all(float(f"{value:.4g}") == value for _, _, value in floats), [
        f for f in floats if float(f"{f[2]:.4g}") != f[2]]
    flags = [(where, key, v) for where, key, v in entries if key in FLAGS]
    assert {key for _, key, _ in flags} >= {"drift_detected", "retrain", "trained", "promoted", "rerun"}
    assert all(isinstance(v, BoolMetadataValue) for _, _, v in flags), [f for f in flags
                                                                        if not isinstance(f[2], BoolMetadataValue)]
    texts = [(where, key, v.value) for where, key, v in entries if isinstance(v, TextMetadataValue)]
    assert not [t for t in texts if t[2] in ("nan", "NaN", "None")]


def test_metadata_values_are_shown_rounded_as_booleans_or_left_out():
    shown = ui_metadata({"share": 0.13087422194977605, "drifted": True, "np_flag": np.bool_(False),
                         "rows": np.int64(300), "p_value": float("nan"), "inf": np.inf, "champion": None,
                         "big": 123456.789, "tiny": 1.23456e-7, "reason": "data drift",
                         "report": MetadataValue.url("http://x/")})
    assert shown == {"share": FloatMetadataValue(0.1309), "drifted": BoolMetadataValue(True),
                     "np_flag": BoolMetadataValue(False), "rows": IntMetadataValue(300),
                     "big": FloatMetadataValue(123500.0), "tiny": FloatMetadataValue(1.235e-7),
                     "reason": "data drift", "report": MetadataValue.url("http://x/")}
    assert rounded(float("-inf")) is None and rounded(np.float32(0.5)) == 0.5
    assert metadata_value(None) is None


def test_a_check_result_names_its_block():
    assert check_description("4", False, "drift share 0.6") == "block 4: failed, drift share 0.6"
    assert check_metadata("4", {"drift_share": 0.61234, "worst": None}) == {
        "block": "4", "drift_share": FloatMetadataValue(0.6123)}
