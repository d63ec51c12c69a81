"""Integration: a whole Block pipeline materialized through Dagster in-process on an ephemeral instance."""

from __future__ import annotations

import logging
import shutil

import duckdb
import pandas as pd
import pytest
from conftest import block_spec_dict
from dagster import AssetCheckKey, AssetKey, DagsterInstance, Definitions

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.orchestration.headless_runs import run_pending
from calmops_dagster.orchestration.ingest_registration import register_new_blocks
from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
from calmops_dagster.reports.pipeline_overview import reports_url
from calmops_dagster.resources import build_resources
from calmops_dagster.spec import parse_spec, save_spec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from calmops_dagster.store.paths import CalmOpsHome

log = logging.getLogger("test")


def run_pipeline(home, spec, instance):
    """What `calmops run` does: register new blocks, then execute every pending one in order."""
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    metrics, models = MetricsStore(home.metrics_db), ModelStore(home.models_dir(spec.name))
    register_new_blocks(instance, spec, metrics, models, log)
    return run_pending(instance, spec, defs.resolve_job_def(job_name(spec)), metrics)


REPORTS_URL = "http://reports.example:8080/"


@pytest.fixture(scope="module")
def three_blocks(tmp_path_factory):
    """(home, instance) after blocks 1-3 (drift at 3) ran once, with ``CALMOPS_REPORTS_URL`` set; shared by
    the tests that only read what the run left (metadata, checks, the overview)."""
    root = tmp_path_factory.mktemp("three_blocks")
    home = CalmOpsHome(root / "calmops")
    frame = make_drifting_blocks(n_blocks=4, rows_per_block=300, drift_at=3, seed=7)  # as ``block_files``
    write_blocks(frame[frame["block"] <= 3], root / "data", block_col="block")
    spec = parse_spec(block_spec_dict("demo", root / "data"), home.spec_path("demo"))
    save_spec(spec, home.spec_path("demo"))
    with pytest.MonkeyPatch.context() as patch, DagsterInstance.ephemeral() as instance:
        patch.setenv("CALMOPS_HOME", str(home.root))
        patch.setenv("CALMOPS_REPORTS_URL", REPORTS_URL)
        results = run_pipeline(home, spec, instance)
        assert [r.block for r in results] == ["1", "2", "3"] and all(r.success for r in results)
        yield home, instance


def query(home, sql):
    with duckdb.connect(str(home.metrics_db), read_only=True) as con:
        return con.execute(sql).df()


def test_abrupt_drift_at_block_3_trains_and_promotes_a_challenger(home, demo_spec, block_files, instance):
    for path in block_files:
        shutil.copy(path, demo_spec.data_dir)
    results = run_pipeline(home, demo_spec, instance)

    assert [r.block for r in results] == ["1", "2", "3", "4"]
    assert all(r.success for r in results), [r.summary for r in results]
    blocks = query(home, "SELECT block, rows, source_file, content_hash FROM blocks ORDER BY block")
    assert blocks["rows"].tolist() == [300] * 4
    assert blocks["content_hash"].str.len().eq(64).all()

    summary = query(home, "SELECT block, drift_detected, retrain FROM drift_summary").set_index("block")
    assert not summary.loc["2", "drift_detected"] and not summary.loc["2", "retrain"]
    perf = query(home, "SELECT block, performance_value, performance_ci_low, performance_ci_high "
                       "FROM drift_summary WHERE block = '3'").iloc[0]
    assert perf["performance_ci_low"] <= perf["performance_value"] <= perf["performance_ci_high"]
    assert summary.loc["3", "drift_detected"] and summary.loc["3", "retrain"]

    drift = query(home, "SELECT * FROM drift_results WHERE block = '3'")
    assert {"x1", "x2", "segment", "__dataset__"} <= set(drift["feature"])
    assert drift.loc[drift["feature"] == "x1", "drifted"].any()

    promotions = query(home, "SELECT block, decision, champion_before, challenger, champion_after, reason "
                             "FROM promotions ORDER BY block").set_index("block")
    assert promotions.loc["1", "decision"] == "promoted" and promotions.loc["1", "reason"].startswith("first")
    assert promotions.loc["2", "decision"] == "kept"
    assert promotions.loc["3", "decision"] == "promoted"
    assert promotions.loc["3", "champion_after"] == promotions.loc["3", "challenger"] != promotions.loc["3", "champion_before"]

    performance = query(home, "SELECT DISTINCT block, model_version, role, evaluated_on FROM performance")
    assert {"champion", "challenger"} <= set(performance["role"])
    assert ModelStore(home.models_dir("demo")).champion_version() == promotions.loc["3", "champion_after"]
    assert (home.predictions_dir("demo") / "3.parquet").is_file()


def test_materializations_carry_numeric_metadata_for_the_ui(three_blocks):
    home, instance = three_blocks
    drift_event = instance.get_latest_materialization_event(AssetKey(["demo", "drift_report"]))
    metadata = drift_event.asset_materialization.metadata
    assert metadata["drift_share"].value > 0 and metadata["drift_detected"].value == 1
    assert "| feature | test |" in metadata["drifted_features"].value
    report = home.reports_dir("demo") / "3.html"
    assert metadata["report"].value == str(report) and report.is_file()
    assert "plotly.min.js" in report.read_text() and (report.parent / "plotly.min.js").is_file()
    assert report.stat().st_size < 1_000_000  # plotly.js is shared, not embedded per block
    champion = instance.get_latest_materialization_event(AssetKey(["demo", "champion_model"]))
    champion_md = champion.asset_materialization.metadata
    assert champion_md["promoted"].value == 1
    assert 0 <= champion_md["balanced_accuracy"].value <= 1 and "f1" in champion_md
    rows = instance.get_latest_materialization_event(AssetKey(["demo", "data_block"]))
    assert rows.asset_materialization.metadata["rows"].value == 300
    assert metadata["report_url"].value == "http://reports.example:8080/reports/demo/3.html"


def test_monitoring_overview_tells_the_story_after_every_block(three_blocks):
    home, instance = three_blocks
    key = AssetKey(["demo", "monitoring"])
    events = instance.fetch_materializations(key, limit=10).records
    assert len(events) == 3  # one per block
    overview = instance.get_latest_materialization_event(key).asset_materialization.metadata
    champion = ModelStore(home.models_dir("demo")).champion_version()
    assert overview["champion"].value == champion == "v0002"
    assert overview["champion_since"].value.startswith("block 3 (promoted")
    assert overview["last_block"].value == "3" and overview["blocks_processed"].value == 3
    assert overview["promotions"].value == 2 and overview["promoted"].value == 1
    summary = query(home, "SELECT drift_share, n_drifted FROM drift_summary WHERE block = '3'").iloc[0]
    assert overview["drift_share"].value == summary["drift_share"] > 0
    assert overview["drifted_features_count"].value == summary["n_drifted"]
    assert 0 < overview["champion_balanced_accuracy"].value <= 1
    decisions = overview["last_decisions"].value.splitlines()
    assert decisions[0].startswith("| block | decision | champion | reason |") and len(decisions) == 2 + 3
    assert decisions[2].startswith("| 3 | promoted | v0002 |") and "first champion" in decisions[-1]
    assert "| 3 | yes | 0.6" in overview["drift_per_block"].value
    assert overview["most_drifting_features"].value.splitlines()[2].startswith("| x1 | 1 |")
    assert overview["pipeline_report"].value == "http://reports.example:8080/reports/demo/"
    assert overview["last_block_report"].value == "http://reports.example:8080/reports/demo/3.html"
    assert overview["last_block_report_path"].value == str(home.reports_dir("demo") / "3.html")


def test_every_check_result_carries_its_block(three_blocks):
    """Checks are partitioned like their assets: the UI's check history (GraphQL
    ``assetCheckExecutions[].partition``) names the block of each result."""
    _, instance = three_blocks
    checks = {("data_block", "schema_and_nulls"), ("drift_report", "no_data_drift"),
              ("champion_model", "champion_meets_thresholds")}
    for asset_name, check_name in checks:
        key = AssetCheckKey(AssetKey(["demo", asset_name]), check_name)
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
        assert sorted(record.partition for record in history) == ["1", "2", "3"], key
    drift = AssetCheckKey(AssetKey(["demo", "drift_report"]), "no_data_drift")
    by_block = {r.partition: r.event.dagster_event.event_specific_data.passed
                for r in instance.event_log_storage.get_asset_check_execution_history(drift, limit=10)}
    assert by_block == {"1": True, "2": True, "3": False}  # the drifted block is the failed one


def test_rematerializing_a_block_replaces_its_rows(home, demo_spec, block_files, instance):
    for path in block_files[:3]:
        shutil.copy(path, demo_spec.data_dir)
    defs = Definitions.merge(build_pipeline_definitions(demo_spec), Definitions(resources=build_resources(home)))
    run_pipeline(home, demo_spec, instance)
    before = {t: query(home, f"SELECT count(*) AS n FROM {t}")["n"][0]
              for t in ("blocks", "drift_results", "performance", "promotions", "drift_summary")}
    result = defs.resolve_job_def(job_name(demo_spec)).execute_in_process(instance=instance, partition_key="3")
    assert result.success
    after = {t: query(home, f"SELECT count(*) AS n FROM {t}")["n"][0] for t in before}
    assert after == before


def write_bad_files(data_dir):
    (data_dir / "garbage.parquet").write_bytes(b"\x00\xffnot parquet at all" * 20)
    (data_dir / "empty.csv").write_text("")
    pd.DataFrame({"x1": [1.0], "x2": [1.0], "x3": [1.0], "x4": [1.0], "segment": ["a"], "block": [9]}).to_csv(
        data_dir / "no_target.csv", index=False)


def test_bad_files_are_quarantined_and_good_blocks_still_processed(home, demo_spec, block_files, instance):
    for path in block_files[:2]:
        shutil.copy(path, demo_spec.data_dir)
    write_bad_files(demo_spec.data_dir)
    results = run_pipeline(home, demo_spec, instance)
    assert [r.block for r in results] == ["1", "2"] and all(r.success for r in results)

    quarantine = query(home, "SELECT file, reason, moved_to FROM quarantine ORDER BY file")
    reasons = dict(zip(quarantine["file"].map(lambda f: f.rsplit("/", 1)[-1]), quarantine["reason"]))
    assert set(reasons) == {"garbage.parquet", "empty.csv", "no_target.csv"}
    assert "not a Parquet file" in reasons["garbage.parquet"]
    assert "empty" in reasons["empty.csv"]
    assert "missing column(s) ['y']" in reasons["no_target.csv"]
    assert sorted(p.name for p in (demo_spec.data_dir / "quarantine").iterdir()) == sorted(reasons)


def test_wrongly_typed_file_is_refused_and_champion_untouched(home, demo_spec, block_files, instance):
    shutil.copy(block_files[0], demo_spec.data_dir)
    run_pipeline(home, demo_spec, instance)
    models = ModelStore(home.models_dir("demo"))
    champion = models.champion_version()
    bad = pd.read_csv(block_files[1]).astype({"x1": str})
    bad.loc[0, "x1"] = "not-a-number"
    bad.to_csv(demo_spec.data_dir / "typed.csv", index=False)
    results = run_pipeline(home, demo_spec, instance)
    assert results == []
    reason = query(home, "SELECT reason FROM quarantine")["reason"][0]
    assert "typed.csv" not in reason and "'x1' should be numeric" in reason and "not-a-number" in reason
    assert models.champion_version() == champion


def test_corrupted_champion_file_is_refused_and_pointer_kept(home, demo_spec, block_files, instance):
    shutil.copy(block_files[0], demo_spec.data_dir)
    run_pipeline(home, demo_spec, instance)
    models = ModelStore(home.models_dir("demo"))
    champion = models.champion_version()
    model_file = models.root / champion / models.manifest(champion)["model_file"]
    model_file.write_bytes(model_file.read_bytes()[:-10] + b"tampered!!")
    shutil.copy(block_files[2], demo_spec.data_dir)
    results = run_pipeline(home, demo_spec, instance)
    assert len(results) == 1 and not results[0].success
    assert "does not match the manifest" in results[0].summary
    assert models.champion_version() == champion
    assert query(home, "SELECT count(*) AS n FROM promotions WHERE block = '3'")["n"][0] == 0


def test_report_links_point_at_calmops_serve_unless_calmops_reports_url_says_otherwise(monkeypatch):
    monkeypatch.delenv("CALMOPS_REPORTS_URL", raising=False)
    assert reports_url("demo", "3") == "http://127.0.0.1:5001/reports/demo/3.html"
    monkeypatch.setenv("CALMOPS_REPORTS_URL", "https://calmops.example/ops/")
    assert reports_url("demo") == "https://calmops.example/ops/reports/demo/"
