"""Blocks per minute on Dagster's Celery executor with one worker and with two, and where a block's time goes,
against the in-process path on the same files in the same run.

Every part is a real process on this machine, as in ``tests/test_distributed.py``: ``redis-server`` (broker and
result backend), PostgreSQL (Dagster's records), moto's S3 server (``CALMOPS_STORAGE_URL``), ``dagster-daemon``
(file sensors, run queue; each run's process coordinates its steps) and N Celery workers of concurrency 1,
each with its own home. ``--pipelines`` pipelines get ``--blocks`` blocks each, dropped at once.

Baselines on the same files, in this process (imports paid before the clock starts): ``calmops run`` of each
pipeline in turn with the in-process executor, on the local disk and on the same S3 server. The difference
between the two is what S3 costs a block; what the Celery configurations add beyond in-process-on-S3 is the
distribution: a process per run, the broker's round trips, a worker loading the job for each step.

Where the time of a Celery block goes, from Dagster's event log (timestamps of the run's and workers' events):

- *run start*: the run's process starting (``RUN_STARTING`` -> ``RUN_START``, launched by the daemon);
- *queue*: a step submitted to the broker -> a worker starts it ("Executing steps ... in celery worker");
- *worker set-up*: that -> ``STEP_START`` (the worker builds the execution plan and initialises resources);
- *step*: ``STEP_START`` -> ``STEP_SUCCESS`` (the step's own work, its S3 reads and writes included);
- *result*: ``STEP_SUCCESS`` -> the run's process submits the next step or ends (Celery's result backend,
  polled once a second by dagster-celery's loop).

Throughput is blocks over the span from the first run's start to the last run's end (the sensors' detection
of the files is left out: it is the same for every executor).

    python benchmarks/celery_bench.py [--pipelines 4] [--blocks 3] [--rows 150] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

BUCKET = "calmops-celery-bench"
CELERY = [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker", "-Q", "dagster", "--pool", "prefork",
          "--concurrency", "1", "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
DAEMON = [sys.executable, "-m", "dagster._daemon", "run", "-m", "calmops_dagster.definitions"]
PG_ENV = ("DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_PORT", "DAGSTER_POSTGRES_USER", "DAGSTER_POSTGRES_PASSWORD",
          "DAGSTER_POSTGRES_DB")


def spec_dict(name: str, data_dir: Path) -> dict:
    """A block pipeline with a 10-tree forest (the suite's ``block_spec_dict``)."""
    return {"name": name, "type": "block", "data_dir": str(data_dir), "target": "y", "block_col": "block",
            "model_spec": {"module": "sklearn.ensemble", "class": "RandomForestClassifier",
                           "params": {"n_estimators": 10, "random_state": 0}},
            "performance": {"thresholds": {"balanced_accuracy": 0.6}},
            "sensor": {"interval_seconds": 1, "settle_seconds": 0}}


def make_files(staging: Path, pipelines: int, blocks: int, rows: int) -> dict[str, list[Path]]:
    from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
    from calmops_dagster.generators.writer import write_blocks

    return {f"p{i}": write_blocks(make_drifting_blocks(n_blocks=blocks, rows_per_block=rows,
                                                       drift_at=max(2, blocks), seed=i),
                                  staging / f"p{i}", block_col="block")
            for i in range(1, pipelines + 1)}


def make_home(home: Path, files: dict[str, list[Path]], data_root: Path) -> None:
    """Specs under ``home`` watching ``data_root/<name>`` (created empty)."""
    from calmops_dagster.spec import parse_spec, save_spec
    from calmops_dagster.store.paths import CalmOpsHome

    paths = CalmOpsHome(home)
    for name in files:
        (data_root / name).mkdir(parents=True)
        save_spec(parse_spec(spec_dict(name, data_root / name), paths.spec_path(name)), paths.spec_path(name))


def drop(files: dict[str, list[Path]], data_root: Path, settled: bool) -> None:
    for name, blocks in files.items():
        for path in blocks:
            copy = shutil.copy(path, data_root / name / path.name)
            if settled:
                os.utime(copy, (0, 0))


@contextlib.contextmanager
def environment(**values):
    """``os.environ`` with ``values`` set (``None``: removed) for the block, then as before."""
    before = {key: os.environ.get(key) for key in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def in_process(root: Path, files: dict[str, list[Path]], storage_url: str | None, s3_env: dict) -> float:
    """Seconds ``calmops run`` takes for every pipeline in turn, in this process."""
    from calmops_dagster.interfaces.cli import main

    home = root / "home"
    make_home(home, files, root / "data")
    drop(files, root / "data", settled=True)
    settings = {**s3_env, "CALMOPS_STORAGE_URL": storage_url} if storage_url else {"CALMOPS_STORAGE_URL": None}
    with environment(DAGSTER_HOME=None, CALMOPS_CELERY_BROKER=None, **settings):
        started = time.monotonic()
        for name in files:
            with contextlib.redirect_stdout(io.StringIO()):
                assert main(["--home", str(home), "run", name]) == 0, name
        return time.monotonic() - started


def celery_runs(root: Path, files: dict[str, list[Path]], workers: int, s3_env: dict, moto_log: Path) -> dict:
    """Drop every block into a daemon's data folders with ``workers`` Celery workers; the runs' timings."""
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
    from live_processes import stop_group, wait_for
    from postgres_server import postgres_server
    from redis_server import redis_server

    root.mkdir(parents=True)
    with ExitStack() as stack:
        broker = stack.enter_context(redis_server(root / "redis.log"))
        pg = stack.enter_context(postgres_server())
        base = {**os.environ, **s3_env, "CALMOPS_STORAGE_URL": f"s3://{BUCKET}/{root.name}",
                "CALMOPS_CELERY_BROKER": broker, "DAGSTER_POSTGRES_HOST": pg.host,
                "DAGSTER_POSTGRES_PORT": str(pg.port), "DAGSTER_POSTGRES_USER": pg.user,
                "DAGSTER_POSTGRES_PASSWORD": "trust-auth-ignores-it", "DAGSTER_POSTGRES_DB": pg.database}
        base.pop("CALMOPS_CODE_VERSION", None)
        daemon_home, dagster_home = root / "daemon" / "home", root / "daemon" / "dagster_home"
        make_home(daemon_home, files, root / "data")
        procs = []
        for i in range(1, workers + 1):
            wroot = root / f"w{i}"
            env = {**base, "CALMOPS_HOME": str(wroot / "home"), "DAGSTER_HOME": str(wroot / "dagster_home"),
                   "PYTHONPATH": os.pathsep.join([str(ROOT / "deploy" / "celery"), str(ROOT)])}
            (wroot / "dagster_home").mkdir(parents=True)
            shutil.copy(ROOT / "deploy" / "celery" / "dagster.yaml", wroot / "dagster_home" / "dagster.yaml")
            shutil.copytree(daemon_home / "pipelines", wroot / "home" / "pipelines")
            log = stack.enter_context(open(root / f"w{i}.log", "w"))
            procs.append(subprocess.Popen([*CELERY, "-n", f"w{i}@%h"], env=env, cwd=wroot, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
            stack.callback(stop_group, procs[-1], 30)
        dagster_home.mkdir(parents=True)
        shutil.copy(ROOT / "deploy" / "celery" / "dagster.yaml", dagster_home / "dagster.yaml")
        daemon_env = {**base, "CALMOPS_HOME": str(daemon_home), "DAGSTER_HOME": str(dagster_home)}
        daemon_log = stack.enter_context(open(root / "daemon.log", "w"))
        daemon = subprocess.Popen(DAEMON, env=daemon_env, cwd=ROOT, stdout=daemon_log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        stack.callback(stop_group, daemon, 60)
        requests_before = moto_log.read_text().count("HTTP/1.1")
        drop(files, root / "data", settled=False)
        total = sum(len(blocks) for blocks in files.values())
        with environment(**{key: base[key] for key in PG_ENV}), DagsterInstance.from_config(str(dagster_home)) as inst:
            def finished():
                runs = inst.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE]))
                return len(runs) >= total and runs
            runs = wait_for(finished, 3600, "every block's run", 2)
            failed = [run.run_id for run in runs if run.status != DagsterRunStatus.SUCCESS]
            assert not failed, f"runs failed: {failed}"
            timings = [run_timings(inst, run.run_id) for run in runs]
        requests = moto_log.read_text().count("HTTP/1.1") - requests_before
    return {"blocks": total, "span": max(t["end"] for t in timings) - min(t["start"] for t in timings),
            "runs": timings, "s3_requests": requests}


def run_timings(instance, run_id: str) -> dict:
    """A run's start and end, and per part (see the module's docstring) the seconds summed over its steps."""
    from dagster import DagsterEventType

    events = [(r.timestamp, r.dagster_event) for r in instance.all_logs(run_id) if r.dagster_event]
    first = {}
    for stamp, event in events:
        kind = event.event_type
        message = event.message or ""
        key = ("submitted" if kind == DagsterEventType.ENGINE_EVENT and message.startswith("Submitting celery task")
               else "in worker" if kind == DagsterEventType.ENGINE_EVENT and "in celery worker" in message
               else kind.value)
        first.setdefault((key, event.step_key), stamp)
    starting = first[(DagsterEventType.RUN_STARTING.value, None)]
    start = first[(DagsterEventType.RUN_START.value, None)]
    end = first[(DagsterEventType.RUN_SUCCESS.value, None)]
    parts = {"run start": start - starting, "queue": 0.0, "worker set-up": 0.0, "step": 0.0}
    steps = sorted({step for (_, step) in first if step})
    for step in steps:
        parts["queue"] += first[("in worker", step)] - first[("submitted", step)]
        parts["worker set-up"] += first[(DagsterEventType.STEP_START.value, step)] - first[("in worker", step)]
        parts["step"] += (first[(DagsterEventType.STEP_SUCCESS.value, step)]
                          - first[(DagsterEventType.STEP_START.value, step)])
    parts["result"] = (end - start) - parts["queue"] - parts["worker set-up"] - parts["step"]
    return {"start": starting, "end": end, "steps": len(steps), "parts": parts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--rows", type=int, default=150)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from moto_s3 import moto_s3

    import calmops_dagster.interfaces.cli  # noqa: F401 -- imports paid before any clock starts

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="celery-bench-"))
    try:
        files = make_files(root / "staging", args.pipelines, args.blocks, args.rows)
        total = args.pipelines * args.blocks
        moto_log = root / "moto.log"
        with moto_s3(BUCKET, log_path=moto_log) as s3_env:
            rows = []
            for label, url in (("in-process, local disk", None), ("in-process, S3", f"s3://{BUCKET}/inproc")):
                seconds = in_process(root / label.replace(", ", "-").replace(" ", "_"), files, url, s3_env)
                rows.append((label, total, seconds, None))
                print(f"{label}: {total} blocks in {seconds:.1f} s", flush=True)
            for n in args.workers:
                result = celery_runs(root / f"celery{n}", files, n, s3_env, moto_log)
                rows.append((f"Celery, {n} worker{'s' if n > 1 else ''}", result["blocks"], result["span"], result))
                print(f"Celery, {n} workers: {result['blocks']} blocks in {result['span']:.1f} s", flush=True)
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"\n{args.pipelines} pipelines x {args.blocks} blocks x {args.rows} rows\n")
        print("| path | blocks | seconds | blocks per minute | s per block |")
        print("|---|---|---|---|---|")
        for label, blocks, seconds, _ in rows:
            print(f"| {label} | {blocks} | {seconds:.1f} | {60 * blocks / seconds:.1f} | {seconds / blocks:.2f} |")
        print("\nwhere a Celery block's time goes (mean per block, seconds; steps per block in brackets):\n")
        names = ["run start", "queue", "worker set-up", "step", "result"]
        print("| path | " + " | ".join(names) + " | run total | S3 requests per block |")
        print("|---|" + "---|" * (len(names) + 2))
        for label, blocks, _, result in rows:
            if result is None:
                continue
            runs = result["runs"]
            means = [statistics.fmean(r["parts"][name] for r in runs) for name in names]
            run_total = statistics.fmean(r["end"] - r["start"] for r in runs)
            print(f"| {label} ({runs[0]['steps']} steps) | " + " | ".join(f"{m:.2f}" for m in means)
                  + f" | {run_total:.2f} | {result['s3_requests'] / blocks:.0f} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
