"""One file sensor serving every pipeline of the code location (issue 36.2): a tick ingests only the
pipelines whose files changed, one pipeline's failure does not stop the others, and a tick's time budget
carries work over to the next tick, oldest change first."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from conftest import block_spec_dict, evaluate_file_sensor
from dagster import DagsterRunStatus, Definitions

from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
from calmops_dagster.orchestration.run_tags import PIPELINE_TAG, VERSION_TAG
from calmops_dagster.resources import build_resources
from calmops_dagster.sensors import file_sensor
from calmops_dagster.sensors.file_sensor import cursor_entries
from calmops_dagster.spec import load_spec, parse_spec, save_spec, spec_to_dict
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import CHAMPION_POINTER


def make_specs(home, tmp_path, names, **overrides):
    specs = []
    for name in names:
        data_dir = tmp_path / f"data_{name}"
        data_dir.mkdir()
        path = home.spec_path(name)
        spec = parse_spec(block_spec_dict(name, data_dir, **overrides), path)
        save_spec(spec, path)
        specs.append(spec)
    return specs


def drop(path, data_dir, name=None):
    """Copy a block file into a watched folder, settled (modified a minute ago)."""
    target = shutil.copy(path, data_dir / (name or path.name))
    old = time.time() - 60
    os.utime(target, (old, old))


def requested(result) -> list[tuple[str, str, str]]:
    return [(r.tags["calmops/pipeline"], r.job_name, r.partition_key) for r in result.run_requests or []]


@pytest.fixture
def ingested(monkeypatch):
    """The names of the pipelines each tick ingested (the sensor's real ingest, watched)."""
    names, real = [], file_sensor.ingest_data_dir

    def watched(spec, *args, **kwargs):
        names.append(spec.name)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(file_sensor, "ingest_data_dir", watched)
    return names


def test_one_sensor_requests_the_runs_and_partitions_of_every_pipeline(home, tmp_path, block_files, instance):
    specs = make_specs(home, tmp_path, ["alpha", "beta", "gamma"])
    for spec in specs:
        drop(block_files[0], spec.data_dir)
    result = evaluate_file_sensor(specs, home, instance)
    assert requested(result) == [("alpha", "alpha_job", "1"), ("beta", "beta_job", "1"), ("gamma", "gamma_job", "1")]
    assert len({r.run_key for r in result.run_requests}) == 3  # the same block of three pipelines: three runs
    assert {r.partitions_def_name for r in result.dynamic_partitions_requests} == {s.partitions_name for s in specs}
    assert all(instance.get_dynamic_partitions(spec.partitions_name) == ["1"] for spec in specs)
    again = evaluate_file_sensor(specs, home, instance, cursor=result.cursor)
    assert not again.run_requests and again.skip_reason


def test_a_tick_ingests_only_the_pipelines_whose_files_changed(home, tmp_path, block_files, instance, ingested):
    specs = make_specs(home, tmp_path, ["alpha", "beta", "gamma"])
    for spec in specs:
        drop(block_files[0], spec.data_dir)
    first = evaluate_file_sensor(specs, home, instance)
    assert ingested == ["alpha", "beta", "gamma"]
    ingested.clear()
    drop(block_files[1], specs[1].data_dir)
    second = evaluate_file_sensor(specs, home, instance, cursor=first.cursor)
    assert ingested == ["beta"]
    assert requested(second) == [("beta", "beta_job", "2")]
    ingested.clear()
    assert not evaluate_file_sensor(specs, home, instance, cursor=second.cursor).run_requests
    assert ingested == []


@pytest.fixture
def record_reads(monkeypatch):
    """How many times the metrics store (the ingest record) was read."""
    reads, real = [], MetricsStore.connect

    def counted(self, *args, **kwargs):
        reads.append(args[0] if args else kwargs.get("sql"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MetricsStore, "connect", counted)
    return reads


@pytest.mark.parametrize("blocks", [1, 4])
def test_an_idle_tick_reads_nothing_of_the_ingest_record_whatever_its_history(home, tmp_path, block_files, instance,
                                                                              record_reads, blocks):
    specs = make_specs(home, tmp_path, ["alpha", "beta", "gamma"])
    cursor = None
    for path in block_files[:blocks]:  # one scan recorded per block file: a history of `blocks` scans
        for spec in specs:
            drop(path, spec.data_dir)
        cursor = evaluate_file_sensor(specs, home, instance, cursor=cursor).cursor
    assert record_reads
    record_reads.clear()
    idle = evaluate_file_sensor(specs, home, instance, cursor=cursor)
    assert not idle.run_requests and record_reads == []


def test_a_failing_pipeline_is_logged_by_name_and_the_others_go_on(home, tmp_path, block_files, instance, capfd):
    specs = make_specs(home, tmp_path, ["alpha", "beta", "gamma"])
    for spec in specs:
        drop(block_files[0], spec.data_dir)
    pointer = home.models_dir("beta") / CHAMPION_POINTER  # beta's state is broken: its champion pointer
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text("{not json")
    result = evaluate_file_sensor(specs, home, instance)
    assert requested(result) == [("alpha", "alpha_job", "1"), ("gamma", "gamma_job", "1")]
    logged = capfd.readouterr().err
    assert "pipeline beta: ingest failed, the others go on" in logged and "champion pointer" in logged
    pointer.unlink()  # repaired: the next tick ingests it, the others have nothing new
    fixed = evaluate_file_sensor(specs, home, instance, cursor=result.cursor)
    assert requested(fixed) == [("beta", "beta_job", "1")]


def test_the_tick_budget_carries_changes_over_oldest_first_and_starves_no_one(home, tmp_path, block_files, instance,
                                                                              ingested, monkeypatch):
    monkeypatch.setattr(file_sensor, "TICK_BUDGET_SECONDS", 0.0)  # every tick ingests one changed pipeline
    specs = make_specs(home, tmp_path, ["alpha", "beta", "gamma"])
    for spec in specs:
        drop(block_files[0], spec.data_dir)
    cursor, order = None, []
    for tick in range(4):
        result = evaluate_file_sensor(specs, home, instance, cursor=cursor)
        cursor = result.cursor
        order += requested(result)
        if tick == 0:  # alpha keeps receiving blocks: it must not push beta and gamma back
            drop(block_files[1], specs[0].data_dir)
    assert ingested == ["alpha", "beta", "gamma", "alpha"]
    assert order == [("alpha", "alpha_job", "1"), ("beta", "beta_job", "1"), ("gamma", "gamma_job", "1"),
                     ("alpha", "alpha_job", "2")]
    assert all("pending" not in cursor_entries(cursor)[spec.name] for spec in specs)


def test_a_pipeline_with_its_sensor_disabled_is_not_looked_at(home, tmp_path, block_files, instance, ingested):
    (alpha,) = make_specs(home, tmp_path, ["alpha"])
    (beta,) = make_specs(home, tmp_path, ["beta"], sensor={"interval_seconds": 1, "settle_seconds": 0,
                                                            "enabled": False})
    for spec in (alpha, beta):
        drop(block_files[0], spec.data_dir)
    result = evaluate_file_sensor([alpha, beta], home, instance)
    assert requested(result) == [("alpha", "alpha_job", "1")] and ingested == ["alpha"]


def test_each_pipeline_is_looked_at_on_its_own_interval(home, tmp_path, block_files, instance, ingested):
    (fast,) = make_specs(home, tmp_path, ["fast"])  # every second
    (slow,) = make_specs(home, tmp_path, ["slow"], sensor={"interval_seconds": 3600, "settle_seconds": 0})
    first = evaluate_file_sensor([fast, slow], home, instance)
    for spec in (fast, slow):
        drop(block_files[0], spec.data_dir)
    second = evaluate_file_sensor([fast, slow], home, instance, cursor=first.cursor)
    assert requested(second) == [("fast", "fast_job", "1")]  # slow: its next look is an hour after its first
    assert ingested == ["fast", "slow", "fast"]


def test_sensor_enabled_is_saved_only_when_off(home, tmp_path):
    (on,) = make_specs(home, tmp_path, ["on"])
    (off,) = make_specs(home, tmp_path, ["off"], sensor={"interval_seconds": 1, "settle_seconds": 0,
                                                          "enabled": False})
    assert "enabled" not in spec_to_dict(on)["sensor"]  # readable by releases without the switch
    assert spec_to_dict(off)["sensor"]["enabled"] is False
    assert not load_spec(home.spec_path("off")).sensor.enabled and load_spec(home.spec_path("on")).sensor.enabled


def test_the_runs_of_one_tick_are_submitted_by_several_threads(tmp_path):
    """One file sensor requests the runs of many pipelines in one tick: the instance has Dagster submit them in
    parallel (``sensors.num_submit_workers``), as 200 sensors' runs were by the daemon's 4 threads."""
    from dagster import DagsterInstance

    from calmops_dagster.orchestration.instance import instance_yaml

    (tmp_path / "dagster.yaml").write_text(instance_yaml(tmp_path))
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_settings("sensors")["num_submit_workers"] == 4


def queued_run(home, spec, instance, block, status, **tags):
    """A run of ``spec``'s job for ``block`` as ``calmops relaunch`` submits one (no run key)."""
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    job = defs.resolve_job_def(job_name(spec))
    instance.create_run_for_job(job, status=status,
                                tags={PIPELINE_TAG: spec.name, "dagster/partition": block, **tags})


def test_a_block_a_run_not_started_yet_will_process_is_not_requested_again(home, tmp_path, block_files, instance):
    """`calmops relaunch` with `dagster dev` up submits a run for a new block and starts the sensor, which then
    finds the same file new: the block is processed once, by the run already queued."""
    alpha, beta = make_specs(home, tmp_path, ["alpha", "beta"])
    queued_run(home, alpha, instance, "1", DagsterRunStatus.NOT_STARTED)
    for spec in (alpha, beta):
        drop(block_files[0], spec.data_dir)
    result = evaluate_file_sensor([alpha, beta], home, instance)
    assert requested(result) == [("beta", "beta_job", "1")]
    assert instance.get_dynamic_partitions(alpha.partitions_name) == ["1"]  # the partition exists for the run


def test_a_started_run_is_trusted_only_with_the_blocks_current_version(home, tmp_path, block_files, instance):
    """A started run that loaded another version of the block (or none yet) may have read older rows: the
    current version is requested; one that loaded the current version is not repeated."""
    alpha, beta = make_specs(home, tmp_path, ["alpha", "beta"])
    queued_run(home, alpha, instance, "1", DagsterRunStatus.STARTED, **{VERSION_TAG: "an-older-version"})
    queued_run(home, beta, instance, "1", DagsterRunStatus.STARTED)
    for spec in (alpha, beta):
        drop(block_files[0], spec.data_dir)
    result = evaluate_file_sensor([alpha, beta], home, instance)
    assert requested(result) == [("alpha", "alpha_job", "1"), ("beta", "beta_job", "1")]
    version = result.run_requests[0].run_key.split(":")[-1]
    gamma, = make_specs(home, tmp_path, ["gamma"])
    queued_run(home, gamma, instance, "1", DagsterRunStatus.STARTED, **{VERSION_TAG: version})
    drop(block_files[0], gamma.data_dir)
    assert not evaluate_file_sensor([gamma], home, instance).run_requests
