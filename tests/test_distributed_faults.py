"""Faults of the Celery profile, each one clear line naming the part and what to do, and no block marked done.

Cheaper than ``test_distributed.py``: one machine's worth of parts, a real ``redis-server`` per test (one test
stops it), one real Celery worker (``deploy/celery``'s settings) where a step must reach one, the run started
from the shell with ``dagster job execute`` (the same executor the daemon's runs use) on a local home and
instance. The pipeline trains a tree that can be made to stall in ``fit``, so a test knows when a step is in
flight on the worker.

- the broker unreachable when the run starts: the run fails before sending a step, naming the broker
  without its password;
- the broker lost while a step runs on the worker: the run fails naming the broker, the block stays pending;
- a worker running other code: its step is refused before it writes anything, naming both versions;
- a worker that cannot use the bucket: it exits at start, naming the store, and takes no step.
"""

from __future__ import annotations

import doctest
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import block_spec_dict
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from live_processes import free_port, stop_group, wait_for
from redis_server import redis_server

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.orchestration import celery_executor, code_version
from calmops_dagster.orchestration.code_version import source_digest
from calmops_dagster.orchestration.headless_runs import pending_blocks
from calmops_dagster.orchestration.ingest_registration import register_new_blocks
from calmops_dagster.spec import load_spec, parse_spec, save_spec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from calmops_dagster.store.paths import CalmOpsHome

REPO = Path(__file__).resolve().parents[1]
PIPELINE = "alpha"
CELERY = [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker", "-Q", "dagster", "--pool", "prefork",
          "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
EXECUTE = [sys.executable, "-m", "dagster", "job", "execute", "-m", "calmops_dagster.definitions", "-j",
           f"{PIPELINE}_job", "--tags", json.dumps({"dagster/partition": "1"})]

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed: `make redis` (make test) installs it")


@dataclass
class Site:
    """One home and Dagster instance with block 1 of ``alpha`` registered, and the environment of its processes."""

    root: Path
    home: CalmOpsHome
    env: dict

    def pending(self) -> list[str]:
        spec = load_spec(self.home.spec_path(PIPELINE))
        with DagsterInstance.from_config(self.env["DAGSTER_HOME"]) as instance:
            return pending_blocks(instance, spec, metrics=MetricsStore(self.home.metrics_db))

    def decisions(self) -> int:
        return len(MetricsStore(self.home.metrics_db).query("SELECT * FROM promotions", pipeline=PIPELINE))

    def worker(self, name: str, **env) -> subprocess.Popen:
        """A Celery worker with deploy/celery's settings, its log in ``<name>.log``."""
        worker_env = {**self.env, "PYTHONPATH": os.pathsep.join([str(REPO / "deploy" / "celery"), str(REPO)]),
                      **env}
        with open(self.root / f"{name}.log", "w") as log:
            return subprocess.Popen([*CELERY, "-n", f"{name}@%h"], env=worker_env, cwd=self.root, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def worker_ready(self, name: str) -> bool:
        return "ready." in (self.root / f"{name}.log").read_text()

    def run_record(self):
        """The one run of the job, and the text of every error its events carry (causes included)."""
        with DagsterInstance.from_config(self.env["DAGSTER_HOME"]) as instance:
            [run] = instance.get_runs()
            events = [r.dagster_event for r in instance.all_logs(run.run_id) if r.dagster_event]
        errors = [e.event_specific_data.error.to_string() for e in events
                  if getattr(e.event_specific_data, "error", None) is not None]
        return run, events, "\n".join(errors)


@pytest.fixture
def site(tmp_path) -> Site:
    root = tmp_path
    home = CalmOpsHome(root / "home")
    data_dir = root / "data"
    [block] = write_blocks(make_drifting_blocks(n_blocks=1, rows_per_block=150, seed=7), data_dir, block_col="block")
    os.utime(block, (0, 0))  # long settled
    model = {"module": "calmops_dagster.learning.testing_models", "class": "ControlledTree",
             "params": {"random_state": 0}}
    spec = parse_spec(block_spec_dict(PIPELINE, data_dir, model_spec=model), home.spec_path(PIPELINE))
    save_spec(spec, home.spec_path(PIPELINE))
    dagster_home = root / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "CALMOPS_HOME": str(home.root), "DAGSTER_HOME": str(dagster_home)}
    for key in ("CALMOPS_STORAGE_URL", "CALMOPS_CODE_VERSION", "CALMOPS_CELERY_BACKEND"):
        env.pop(key, None)
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        register_new_blocks(instance, spec, MetricsStore(home.metrics_db), ModelStore(home.models_dir(PIPELINE)),
                            logging.getLogger(__name__))
    return Site(root, home, env)


def test_broker_unreachable_at_start_fails_the_run_before_any_step(site):
    port = free_port()
    env = {**site.env, "CALMOPS_CELERY_BROKER": f"redis://:hunter2@127.0.0.1:{port}/0"}
    done = subprocess.run(EXECUTE, check=False, env=env, cwd=site.root, capture_output=True, text=True, timeout=300)

    assert done.returncode != 0
    run, events, errors = site.run_record()
    assert run.status == DagsterRunStatus.FAILURE
    assert (f"BrokerUnavailableError: Celery broker redis://127.0.0.1:{port}/0 is unreachable (Error 111 "
            f"connecting to 127.0.0.1:{port}. Connection refused.): start it or correct CALMOPS_CELERY_BROKER; "
            f"no step was sent, pipeline {PIPELINE} block 1 stays pending") in errors
    assert "hunter2" not in errors + done.stdout + done.stderr
    assert not [e for e in events if e.event_type == DagsterEventType.STEP_START]
    assert site.pending() == ["1"] and site.decisions() == 0


def test_broker_lost_mid_step_fails_the_run_naming_it_and_the_block_stays_pending(site):
    training = site.root / "training"
    with ExitStack() as stack:
        broker_life = stack.enter_context(ExitStack())
        broker = broker_life.enter_context(redis_server(site.root / "redis.log"))
        worker = site.worker("w1", CALMOPS_CELERY_BROKER=broker, CALMOPS_TEST_FIT_SIGNAL=str(training),
                             CALMOPS_TEST_FIT_SLEEP="5")
        stack.callback(stop_group, worker, 3)  # its broker is gone: no warm shutdown to wait for
        log = stack.enter_context(open(site.root / "run.log", "w"))
        run = subprocess.Popen(EXECUTE, env={**site.env, "CALMOPS_CELERY_BROKER": broker}, cwd=site.root,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(stop_group, run, 10)
        wait_for(training.exists, 300, "the training step to start on the worker", 0.2)
        broker_life.close()  # the broker goes away while the worker trains
        returncode = run.wait(timeout=120)

    assert returncode != 0
    run, _, errors = site.run_record()
    assert run.status == DagsterRunStatus.FAILURE
    port = broker.rsplit(":", 1)[1].split("/")[0]
    assert (f"BrokerUnavailableError: Celery broker {broker} became unreachable mid-run (Error 111 connecting to "
            f"127.0.0.1:{port}. Connection refused.): start it again, then re-execute this run or `calmops run "
            f"{PIPELINE}`; steps that finished keep their results, pipeline {PIPELINE} block 1 is not marked done"
            ) in errors
    assert site.pending() == ["1"]
    # the worker may finish the step it was running (training and deciding are one step, whose writes are
    # atomic) before it is stopped: at most that one decision, and the block is not done without its predictions
    assert site.decisions() <= 1


def test_a_worker_running_other_code_refuses_the_step_before_writing(site):
    with ExitStack() as stack:
        broker = stack.enter_context(redis_server(site.root / "redis.log"))
        worker = site.worker("w1", CALMOPS_CELERY_BROKER=broker, CALMOPS_CODE_VERSION="0.0.9-old")
        stack.callback(stop_group, worker, 15)
        done = subprocess.run(EXECUTE, check=False, env={**site.env, "CALMOPS_CELERY_BROKER": broker},
                              cwd=site.root, capture_output=True, text=True, timeout=300)

    assert done.returncode != 0
    run, events, errors = site.run_record()
    assert run.status == DagsterRunStatus.FAILURE
    started_by = run.tags["calmops/code_version"]
    assert started_by.startswith("0.1.0+") and len(started_by) == len("0.1.0+") + 12  # the source digest
    assert (f"CodeVersionError: worker w1@{socket.gethostname()} runs code 0.0.9-old, this run was started by "
            f"code {started_by}: install the code location's version on the worker (and restart it), then "
            "re-execute the run; nothing of this step was written") in errors
    [failure] = [e for e in events if e.event_type == DagsterEventType.RUN_FAILURE]
    assert failure.event_specific_data.error.message.startswith("calmops_dagster.errors.CodeVersionError: worker w1@")
    assert [e.step_key for e in events if e.event_type == DagsterEventType.RESOURCE_INIT_FAILURE] == [
        f"{PIPELINE}__data_block"]  # the first step, refused before it started
    assert not [e for e in events if e.event_type in (DagsterEventType.STEP_START, DagsterEventType.STEP_OUTPUT,
                                                      DagsterEventType.ASSET_MATERIALIZATION)]
    assert site.pending() == ["1"] and site.decisions() == 0


def test_a_worker_that_cannot_use_the_bucket_exits_at_start(site):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens: this machine cannot reach the store
    worker = site.worker("w1", CALMOPS_CELERY_BROKER=f"redis://127.0.0.1:{free_port()}/0",
                         CALMOPS_STORAGE_URL="s3://calmops-bucket/prod", AWS_ENDPOINT_URL=endpoint,
                         AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                         AWS_DEFAULT_REGION="us-east-1", AWS_MAX_ATTEMPTS="1")
    try:
        returncode = worker.wait(timeout=120)
    finally:
        stop_group(worker, 5)

    assert returncode == 1
    log = (site.root / "w1.log").read_text()
    assert (f"Celery worker w1@{socket.gethostname()} cannot use the pipelines' storage (object store "
            f"s3://calmops-bucket/prod (endpoint {endpoint}): cannot connect (up to 1 attempt)): give this machine "
            "access to it (AWS_* credentials, endpoint, bucket policy) or correct CALMOPS_STORAGE_URL the way "
            "the code location has it, then start the worker again; it took no step") in log.splitlines()
    assert "ready." not in log


def test_the_code_version_changes_with_any_module_and_not_with_the_layout(tmp_path):
    package = tmp_path / "editable" / "calmops_dagster"
    (package / "store").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "store" / "paths.py").write_text("HOME = 1\n")
    assets = tmp_path / "editable" / "assets"
    assets.mkdir()
    (assets / "data_block.py").write_text("STEP = 1\n")
    editable = {"calmops_dagster": package, "calmops_dagster.assets": assets}
    wheel = tmp_path / "wheel" / "calmops_dagster"
    shutil.copytree(package, wheel)
    shutil.copytree(assets, wheel / "assets")  # a wheel has the folder inside the package

    before = source_digest(editable)
    assert source_digest({"calmops_dagster": wheel, "calmops_dagster.assets": wheel / "assets"}) == before
    (assets / "data_block.py").write_text("STEP = 2\n")
    assert source_digest(editable) != before


@pytest.mark.parametrize("module", [celery_executor, code_version], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_doctests(module):
    """Credentials left out of URLs, the parts checked, the refusal's wording."""
    result = doctest.testmod(module)
    assert result.attempted and not result.failed


def test_a_worker_without_its_broker_setting_exits_with_one_line():
    env = {**os.environ, "PYTHONPATH": str(REPO / "deploy" / "celery")}
    env.pop("CALMOPS_CELERY_BROKER", None)
    done = subprocess.run([sys.executable, "-c", "import dagster_celery_config"], check=False, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == ("CALMOPS_CELERY_BROKER is not set: set it to the broker URL of the code location "
                                   "(redis://host:6379/0)")
