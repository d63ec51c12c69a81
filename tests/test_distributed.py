"""Beyond one machine, for real: Dagster's Celery executor on Redis, the instance on PostgreSQL, the state in S3.

The configuration of ``deploy/celery/``, run here with every part but the containers: a real ``redis-server``
(the broker), PostgreSQL (Dagster's records), moto's S3 server (``CALMOPS_STORAGE_URL``), two Celery workers
and ``dagster-daemon`` with the code location. Each worker is a "machine" of its own: its own working
directory, ``CALMOPS_HOME`` (spec copies, its own metrics catalog and logs) and ``DAGSTER_HOME``; the workers
share nothing with the daemon but the broker, the database and the bucket.

Four pipelines receive two blocks each through their file sensors. One of them trains a tree that stalls in
``fit`` on its first block; the worker process running that step is killed with SIGKILL, and the step is
delivered again to a worker (``task_acks_late`` with ``task_reject_on_worker_lost``) and completes.
Every block is then compared with what ``calmops run`` (in-process, one local home) decides on the same
files: the same rows and the same decisions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from live_processes import group_alive, stop_group, wait_for
from moto_s3 import moto_s3
from postgres_server import postgres_server
from redis_server import redis_server

from calmops_dagster.interfaces.cli import main

REPO = Path(__file__).resolve().parents[1]
CALMOPS = [sys.executable, "-m", "calmops_dagster.interfaces.cli"]
CELERY = [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker", "-Q", "dagster", "--pool", "prefork",
          "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
DAEMON = [sys.executable, "-m", "dagster._daemon", "run", "-m", "calmops_dagster.definitions"]
PIPELINES = ("alpha", "beta", "gamma", "stalled")
BUCKET = "calmops-distributed"
WORKERS = ("w1", "w2")

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed: `make redis` (make test) installs it")


def make_pipelines(home: Path) -> dict[str, tuple[list[Path], Path]]:
    """Four demo pipelines (two blocks of 150 rows each, drift at block 2; ``calmops demo`` in this process);
    ``stalled`` trains a tree whose fit can be made to stall, the others a forest of 10 trees (the demo's 100
    are fitted six times a promotion, on the workers and in the reference, and the comparison does not depend
    on the model). Returns each pipeline's block files and watched folder."""
    found = {}
    for name in PIPELINES:
        assert main(["--home", str(home), "demo", "--name", name, "--initial", "0", "--blocks", "2",
                     "--drift-at", "2", "--rows-per-block", "150"]) == 0
        base = home / "demo" / name
        found[name] = (sorted((base / "blocks").glob("*.csv")), base / "data")
        spec_path = home / "pipelines" / name / "pipeline.yaml"
        raw = yaml.safe_load(spec_path.read_text())
        if name == "stalled":
            raw["model_spec"] = {"module": "calmops_dagster.learning.testing_models", "class": "ControlledTree",
                                 "params": {"random_state": 0}}
        else:
            raw["model_spec"]["params"]["n_estimators"] = 10
        spec_path.write_text(yaml.safe_dump(raw))
    return found


def decisions(env: dict) -> list[dict]:
    """Every pipeline's blocks and decisions, read with ``calmops sql`` from the store ``env`` points at."""
    query = ("SELECT b.pipeline, b.block, b.rows, p.decision, p.champion_after FROM blocks b "
             "JOIN promotions p USING (pipeline, block) ORDER BY b.pipeline, b.block")
    out = subprocess.run([*CALMOPS, "sql", "--format", "json", query], env=env, check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def worker_env(base: dict, root: Path, name: str, signal_dir: Path) -> dict:
    home = root / name / "home"
    return {**base, "CALMOPS_HOME": str(home), "DAGSTER_HOME": str(root / name / "dagster_home"),
            "PYTHONPATH": os.pathsep.join([str(REPO / "deploy" / "celery"), str(REPO)]),
            "CALMOPS_TEST_FIT_SIGNAL": str(signal_dir / f"{name}.training"), "CALMOPS_TEST_FIT_SLEEP": "4"}


def decide_in_process(files: dict[str, tuple[list[Path], Path]], specs: Path, local_home: Path,
                      monkeypatch) -> None:
    """``calmops run`` of every pipeline in this process, on ``local_home`` (local disk, its own instance) with
    copies of the same block files and specs: the reference the distributed decisions are compared with."""
    for name, (blocks, _) in files.items():
        spec = yaml.safe_load((specs / name / "pipeline.yaml").read_text())
        spec["data_dir"] = str(local_home / "data" / name)
        Path(spec["data_dir"]).mkdir(parents=True)
        for path in blocks:
            os.utime(shutil.copy(path, spec["data_dir"]), (0, 0))  # long settled
        (local_home / "pipelines" / name).mkdir(parents=True)
        (local_home / "pipelines" / name / "pipeline.yaml").write_text(yaml.safe_dump(spec))
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        assert main(["--home", str(local_home), "run", name]) == 0


def pool_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], check=False, capture_output=True, text=True).stdout
    return [int(line) for line in out.split()]


def test_four_pipelines_on_two_celery_workers_decide_as_in_process(tmp_path, monkeypatch):
    root = tmp_path
    local_home = root / "local" / "home"  # the in-process reference: same files, `calmops run`, local disk
    with ExitStack() as stack:
        broker = stack.enter_context(redis_server(root / "redis.log"))
        pg = stack.enter_context(postgres_server())
        s3_env = stack.enter_context(moto_s3(BUCKET, log_path=root / "moto.log"))
        dagster_home = root / "daemon" / "dagster_home"
        base = {**os.environ, **s3_env, "CALMOPS_STORAGE_URL": f"s3://{BUCKET}/prod",
                "CALMOPS_CELERY_BROKER": broker, "DAGSTER_POSTGRES_HOST": pg.host,
                "DAGSTER_POSTGRES_PORT": str(pg.port), "DAGSTER_POSTGRES_USER": pg.user,
                "DAGSTER_POSTGRES_PASSWORD": "trust-auth-ignores-it", "DAGSTER_POSTGRES_DB": pg.database}
        base.pop("CALMOPS_HOME", None)
        for key in ("DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_PORT", "DAGSTER_POSTGRES_USER",
                    "DAGSTER_POSTGRES_PASSWORD", "DAGSTER_POSTGRES_DB"):
            monkeypatch.setenv(key, base[key])  # this process reads the instance too
        daemon_env = {**base, "CALMOPS_HOME": str(root / "daemon" / "home"), "DAGSTER_HOME": str(dagster_home)}
        files = make_pipelines(root / "daemon" / "home")
        signal_dir = root / "signals"
        signal_dir.mkdir()
        workers = {}
        for name in WORKERS:
            env = worker_env(base, root, name, signal_dir)
            for home in (Path(env["DAGSTER_HOME"]), Path(env["CALMOPS_HOME"])):
                home.mkdir(parents=True)
            shutil.copy(REPO / "deploy" / "celery" / "dagster.yaml", Path(env["DAGSTER_HOME"]) / "dagster.yaml")
            shutil.copytree(root / "daemon" / "home" / "pipelines", Path(env["CALMOPS_HOME"]) / "pipelines",
                            ignore=shutil.ignore_patterns("logs", ".run.lock"))  # the specs, shipped with the code
            log = stack.enter_context(open(root / f"{name}.log", "w"))
            workers[name] = subprocess.Popen([*CELERY, "-n", f"{name}@%h"], env=env, cwd=root / name,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            stack.callback(stop_group, workers[name], 30)
        dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "deploy" / "celery" / "dagster.yaml", dagster_home / "dagster.yaml")
        daemon_log = stack.enter_context(open(root / "daemon.log", "w"))
        daemon = subprocess.Popen(DAEMON, env=daemon_env, cwd=REPO, stdout=daemon_log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        stack.callback(stop_group, daemon, 60)

        for blocks, data_dir in files.values():
            for path in blocks:
                shutil.copy(path, data_dir / path.name)

        # the stalled tree's first fit: kill the worker process running it; the step goes to a worker again
        wait_for(lambda: list(signal_dir.glob("*.training")), 600, "the stalled pipeline's first fit")
        [first] = list(signal_dir.glob("*.training"))
        victim = workers[first.stem]
        [child] = pool_children(victim.pid)
        os.kill(child, signal.SIGKILL)
        killed_at = first.stem

        # while the workers decide, the reference: the same files in this process on a local home
        decide_in_process(files, root / "daemon" / "home" / "pipelines", local_home, monkeypatch)

        with DagsterInstance.from_config(str(dagster_home)) as instance:
            def all_blocks_decided() -> bool:
                runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
                return len({(run.tags.get("calmops/pipeline"), run.tags.get("dagster/partition")) for run in runs
                            if run.tags.get("calmops/pipeline") in PIPELINES}) == 2 * len(PIPELINES)
            wait_for(all_blocks_decided, 1500, "every block of every pipeline to be decided", 2)
            runs = [run for run in instance.get_runs() if run.tags.get("calmops/pipeline") in PIPELINES]
            hosts, deliveries = set(), Counter()
            for run in runs:
                for record in instance.get_records_for_run(run.run_id).records:
                    event = record.event_log_entry.dagster_event
                    if event and event.event_type == DagsterEventType.ENGINE_EVENT:
                        metadata = event.event_specific_data.metadata or {}
                        if "Celery worker" in metadata:
                            hosts.add(metadata["Celery worker"].value.split("@")[0])
                            deliveries[(run.tags["calmops/pipeline"], run.tags["dagster/partition"],
                                        event.step_key)] += 1
        distributed = decisions(daemon_env)

    assert hosts == set(WORKERS), hosts  # both workers executed steps
    assert killed_at in WORKERS
    # the killed step was delivered again and ran to its end; no other step ran twice
    assert [key for key, count in deliveries.items() if count > 1] == [max(deliveries, key=deliveries.get)]
    assert max(deliveries, key=deliveries.get)[:2] == ("stalled", "1")
    assert not group_alive(daemon.pid) and not any(group_alive(w.pid) for w in workers.values())

    local_env = {**os.environ, "CALMOPS_HOME": str(local_home)}
    assert distributed == decisions(local_env)
    assert len(distributed) == 2 * len(PIPELINES)
