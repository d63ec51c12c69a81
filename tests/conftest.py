"""Shared fixtures: a temporary CALMOPS_HOME with a small drifting block pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dagster import DagsterInstance, build_sensor_context

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.orchestration.pipeline_defs import build_job
from calmops_dagster.resources import build_resources
from calmops_dagster.sensors.file_sensor import build_files_sensor
from calmops_dagster.spec import parse_spec, save_spec
from calmops_dagster.store.paths import CalmOpsHome

#: The modules taking more than 5 s, slowest first, collected first so that ``make test``'s workers
#: (``--dist loadfile --no-loadscope-reorder``: whole modules, in collection order) start the long modules
#: first and end on short ones, within seconds of each other (tests/README.md).
SLOW_MODULES_FIRST = (
    "test_distributed.py",  # Redis, PostgreSQL, moto, two Celery workers and the daemon (mostly waiting)
    "test_distributed_faults.py",  # Redis and a Celery worker per fault (mostly waiting)
    "test_dagster_dev.py",  # two lives of dagster dev, four pipelines (mostly waiting on them)
    "test_speedups.py",  # dagster dev on stock Dagster, a fresh process per run
    "test_store_outage.py",  # moto stopped and started under pipelines that run as commands
    "test_tutorials.py",  # six tutorial scripts, each its own process
    "test_faults.py",
    "test_custom_functions.py",  # seven pipelines in-process with a user's package
    "test_s3_requests.py",  # moto and `calmops run` on S3, counted request by request
    "test_postgres_instance.py",  # a PostgreSQL server and a Dagster daemon on it (mostly waiting)
    "test_s3_storage.py",  # moto and every command on S3
    "test_server_schemathesis.py",
    "test_block_pipeline.py",
    "test_alerts.py",  # five pipelines in-process against a local HTTP receiver
    "test_storage.py",
    "test_bad_input.py",
    "test_estimation_regression.py",
    "test_block_io_manager.py",
    "test_stream_sensor.py",
    "test_circuit_breaker.py",
    "test_warm_run_launcher.py",
    "test_reruns.py",
    "test_exactly_once.py",
    "test_fork_safety.py",
    "test_skops_io.py",
    "test_run_guard.py",
    "test_metrics_store.py",
    "test_drift_multivariate.py",  # a null simulation of the classifier p-value, MMD equality grids
    "test_drift_profile.py",
    "test_store_views.py",
    "test_labels_sensor_ticks.py",
    "test_drift_profile_pipeline.py",
    "test_ipip.py",
    "test_promotion.py",
    "test_drift_engine.py",
    "test_generators_real.py",
    "test_pipeline_report.py",
    "test_cli.py",
    "test_estimated_performance.py",
    "test_cli_imports.py",
    "test_late_blocks.py",
    "test_sqlite_storage.py",
    "test_server.py",
    "test_delayed_labels.py",
    "test_ipip_pipeline.py",
    "test_estimation.py",
    "test_block_keys.py",
    "test_estimation_multiclass.py",
    "test_bad_content.py",
    "test_dead_runs.py",
    "test_landing_page.py",
    "test_server_rude_clients.py",
    "test_drift_univariate.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the modules of :data:`SLOW_MODULES_FIRST` first, in that order; every module keeps its tests' order."""
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOW_MODULES_FIRST.index(name) if name in SLOW_MODULES_FIRST else len(SLOW_MODULES_FIRST)

    items.sort(key=rank)


def evaluate_file_sensor(spec, home: CalmOpsHome, instance, cursor: str | None = None):
    """One tick of the file sensor serving ``spec`` (a spec or a list of them; ``build_sensor_context``),
    applying its partition requests to ``instance`` as the daemon would."""
    specs = spec if isinstance(spec, list) else [spec]
    sensor = build_files_sensor(specs, [build_job(one) for one in specs])
    resources = build_resources(home)
    context = build_sensor_context(instance=instance, cursor=cursor,
                                   resources={k: resources[k] for k in ("home", "metrics")})
    result = sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def block_spec_dict(name: str, data_dir: Path, **overrides) -> dict:
    """The spec of a small block pipeline watching ``data_dir``. Its forest has 10 trees: every test that uses it
    passed with 30 as with 10."""
    raw = {
        "name": name,
        "type": "block",
        "data_dir": str(data_dir),
        "target": "y",
        "block_col": "block",
        "model_spec": {"module": "sklearn.ensemble", "class": "RandomForestClassifier",
                       "params": {"n_estimators": 10, "random_state": 0}},
        "performance": {"thresholds": {"balanced_accuracy": 0.6}},
        "sensor": {"interval_seconds": 1, "settle_seconds": 0},
    }
    raw.update(overrides)
    return raw


@pytest.fixture
def home(tmp_path, monkeypatch) -> CalmOpsHome:
    """An empty CALMOPS_HOME in a temporary folder (also set in the environment)."""
    root = tmp_path / "calmops"
    monkeypatch.setenv("CALMOPS_HOME", str(root))
    return CalmOpsHome(root)


@pytest.fixture
def instance():
    """An ephemeral (in-memory) Dagster instance."""
    with DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def block_files(tmp_path) -> list[Path]:
    """Four block files (1..4) with an abrupt drift at block 3, in a staging folder."""
    frame = make_drifting_blocks(n_blocks=4, rows_per_block=300, drift_at=3, seed=7)
    return write_blocks(frame, tmp_path / "staging", block_col="block")


@pytest.fixture
def demo_spec(home, tmp_path):
    """A valid block pipeline ``demo`` watching an empty ``tmp_path/data``."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = home.spec_path("demo")
    spec = parse_spec(block_spec_dict("demo", data_dir), path)
    save_spec(spec, path)
    return spec


@pytest.fixture(scope="session")
def processed_home(tmp_path_factory):
    """(home, spec) of a processed ``demo`` pipeline (processed_home.py), built once per test run: pytest-xdist
    workers share it through the run's temporary folder. Tests must not modify it
    (``processed_home.copy_home`` gives a writable copy)."""
    from processed_home import build_processed_home, shared_processed_home

    if "PYTEST_XDIST_WORKER" not in os.environ:
        # no workers (no -n, or -p no:xdist): the folder above this run's would be shared with other runs
        return build_processed_home(tmp_path_factory.mktemp("processed"))
    return shared_processed_home(tmp_path_factory.getbasetemp().parent / "processed")
