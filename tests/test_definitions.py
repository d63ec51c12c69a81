"""The code location: one asset group per spec; a broken spec is reported and skipped."""

from __future__ import annotations

import pytest
import yaml
from dagster import AssetKey, Definitions

from calmops_dagster.definitions import build_definitions
from calmops_dagster.orchestration.run_scope import run_job_from_env
from tests.conftest import block_spec_dict


def test_good_and_broken_specs(home, tmp_path):
    for name, raw in {
        "good": block_spec_dict("good", str(tmp_path), schedule={"type": "interval", "params": {"minutes": 10}}),
        "broken": {**block_spec_dict("broken", str(tmp_path)), "retrain_every": 3},
    }.items():
        path = home.spec_path(name)
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(raw))

    defs = build_definitions(home)
    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {key for key in graph.get_all_asset_keys()}
    assert keys == {AssetKey(["good", name]) for name in
                    ("data_block", "drift_report", "challenger_model", "champion_model", "predictions",
                     "monitoring")}
    assert {graph.get(key).group_name for key in keys} == {"good"}
    checks = {key.name for key in graph.asset_check_keys}
    assert checks == {"schema_and_nulls", "no_data_drift", "champion_meets_thresholds"}
    sensors = {s.name: s for s in defs.sensors}
    assert set(sensors) == {"calmops_files", "calmops_run_failures", "calmops_run_successes", "broken_spec_error"}
    assert "field 'retrain_every': unknown key" in sensors["broken_spec_error"].description
    assert [s.cron_schedule for s in defs.schedules] == ["*/10 * * * *"]
    job = defs.resolve_job_def("good_job")
    assert job.tags["calmops/pipeline"] == "good"


def test_several_pipelines_load_in_one_code_location(home, tmp_path):
    for name in ("first", "second"):
        path = home.spec_path(name)
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(block_spec_dict(name, str(tmp_path))))
    defs = build_definitions(home)
    Definitions.validate_loadable(defs)  # every job resolved: op names unique across pipelines
    assert {job.name for job in defs.get_repository_def().get_all_jobs()} >= {
        "first_job", "second_job", "first_reevaluate", "second_reevaluate"}


@pytest.mark.parametrize("job", ["second_job", "second_reevaluate"])
def test_a_run_worker_builds_only_the_pipeline_of_its_runs_job_and_the_same_job(home, tmp_path, job):
    for name in ("first", "second", "second_job", "third"):
        path = home.spec_path(name)
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(block_spec_dict(name, str(tmp_path))))
    full, scoped = build_definitions(home), build_definitions(home, run_job=job)
    assert {key.path[0] for key in scoped.resolve_asset_graph().get_all_asset_keys()} == {"second"}
    assert {s.name for s in scoped.sensors} == {"calmops_files", "calmops_run_failures", "calmops_run_successes"}
    assert (scoped.resolve_job_def(job).get_job_snapshot_id() == full.resolve_job_def(job).get_job_snapshot_id())


def test_the_run_job_comes_from_the_warm_worker_or_dagsters_docker_launcher():
    assert run_job_from_env({"CALMOPS_RUN_JOB": "a_job", "DAGSTER_RUN_JOB_NAME": "b_job"}) == "a_job"
    assert run_job_from_env({"DAGSTER_RUN_JOB_NAME": "b_job"}) == "b_job"  # a run container of deploy/
    assert run_job_from_env({"CALMOPS_RUN_JOB": ""}) is None


def test_a_job_no_pipeline_owns_builds_every_pipeline(home, tmp_path):
    for name in ("first", "second"):
        path = home.spec_path(name)
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(block_spec_dict(name, str(tmp_path))))
    groups = {key.path[0] for key in build_definitions(home, run_job="other_job").resolve_asset_graph().get_all_asset_keys()}
    assert groups == {"first", "second"}


def test_one_file_sensor_and_one_breaker_pair_serve_all_pipelines(home, tmp_path):
    for name in ("first", "second", "third"):
        path = home.spec_path(name)
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(block_spec_dict(name, str(tmp_path))))
    sensors = {s.name: s for s in build_definitions(home).sensors}
    assert set(sensors) == {"calmops_files", "calmops_run_failures", "calmops_run_successes"}  # 3, not N + 2
    for name in ("calmops_run_failures", "calmops_run_successes"):
        assert "Serves the 3 pipeline(s)" in sensors[name].description
    files = sensors["calmops_files"]
    assert sorted(job.name for job in files.jobs) == ["first_job", "second_job", "third_job"]
    assert "the 3 pipeline(s)" in files.description
    assert all(f"- {name}: {tmp_path}" in files.description for name in ("first", "second", "third"))


def test_blocking_performance_check(home, tmp_path):
    path = home.spec_path("good")
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(block_spec_dict("good", str(tmp_path))))
    graph = build_definitions(home).resolve_asset_graph()
    blocking = {key.name for key in graph.asset_check_keys if graph.get_check_spec(key).blocking}
    assert blocking == {"champion_meets_thresholds"}


def test_steps_run_in_the_runs_process_unless_the_spec_asks_for_isolation(home, tmp_path):
    for name, extra in {"shared": {}, "isolated": {"executor": "multiprocess"}}.items():
        path = home.spec_path(name)
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(block_spec_dict(name, str(tmp_path), **extra)))
    defs = build_definitions(home)
    assert defs.resolve_job_def("shared_job").executor_def.name == "in_process"
    assert defs.resolve_job_def("isolated_job").executor_def.name == "multiprocess"
