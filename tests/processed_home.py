"""A CALMOPS_HOME with one block pipeline processed through Dagster (models, metrics, logs), built once.

Built by the session fixture ``processed_home`` of conftest.py, once per test run: the first pytest worker
that needs it builds it in the run's temporary folder (:func:`shared_processed_home`), the others wait for
that and read it. Shared by the server, report, reruns and logs tests, which never write into it. The
pipeline runs in-process on an ephemeral Dagster instance, as in ``test_block_pipeline.py``; block 3
drifts, so there are two champion versions and a promotion.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil

from conftest import block_spec_dict
from dagster import DagsterInstance, Definitions

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.orchestration.headless_runs import run_pending
from calmops_dagster.orchestration.ingest_registration import register_new_blocks
from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
from calmops_dagster.resources import build_resources
from calmops_dagster.spec import load_spec, parse_spec, save_spec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from calmops_dagster.store.paths import CalmOpsHome

NAME = "demo"


def build_processed_home(root, n_blocks: int = 4):
    """Write a ``demo`` block pipeline under ``root`` and process ``n_blocks`` blocks; return (home, spec)."""
    home = CalmOpsHome(root / "calmops")
    data_dir = root / "data"
    frame = make_drifting_blocks(n_blocks=n_blocks, rows_per_block=300, drift_at=3, seed=7)
    write_blocks(frame, data_dir, block_col="block")
    path = home.spec_path(NAME)
    spec = parse_spec(block_spec_dict(NAME, data_dir), path)
    save_spec(spec, path)
    previous = os.environ.get("CALMOPS_HOME")
    os.environ["CALMOPS_HOME"] = str(home.root)  # the per-pipeline file logger finds the home here
    try:
        with DagsterInstance.ephemeral() as instance:
            defs = Definitions.merge(build_pipeline_definitions(spec),
                                     Definitions(resources=build_resources(home)))
            metrics, models = MetricsStore(home.metrics_db), ModelStore(home.models_dir(NAME))
            register_new_blocks(instance, spec, metrics, models, logging.getLogger("test"))
            results = run_pending(instance, spec, defs.resolve_job_def(job_name(spec)), metrics)
    finally:
        if previous is None:
            os.environ.pop("CALMOPS_HOME", None)
        else:
            os.environ["CALMOPS_HOME"] = previous
    assert all(r.success for r in results), [r.summary for r in results]
    return home, spec


def copy_home(processed, dest) -> CalmOpsHome:
    """A writable copy of the processed home (for tests that promote or break models)."""
    home, _ = processed
    shutil.copytree(home.root, dest / "calmops")
    return CalmOpsHome(dest / "calmops")


def shared_processed_home(root):
    """(home, spec) of the processed home under ``root``, built there by the first process to ask (the others
    wait on a lock beside it, then read what it built)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    built = root / "built"
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built.exists():
            shutil.rmtree(root, ignore_errors=True)  # a build that died halfway
            root.mkdir()
            build_processed_home(root)
            built.touch()
    home = CalmOpsHome(root / "calmops")
    return home, load_spec(home.spec_path(NAME))
