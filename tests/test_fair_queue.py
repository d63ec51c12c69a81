"""The run queue's fairness rule (issue 36): a pipeline's block runs carry ``dagster/priority`` = minus the
number of its runs ahead of them, so every pipeline's next block goes before any pipeline's later ones."""

from __future__ import annotations

import os
import shutil
import time

from conftest import evaluate_file_sensor
from dagster import DagsterRunStatus, Definitions

from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
from calmops_dagster.orchestration.run_tags import PIPELINE_TAG
from calmops_dagster.resources import build_resources


def drop(files, data_dir):
    old = time.time() - 60
    for path in files:
        os.utime(shutil.copy(path, data_dir / path.name), (old, old))


def priorities(result) -> dict[str, str]:
    return {request.partition_key: request.tags["dagster/priority"] for request in result.run_requests}


def test_a_pipelines_blocks_queue_behind_every_pipelines_next_block(demo_spec, home, block_files, instance):
    drop(block_files[:3], demo_spec.data_dir)
    first = evaluate_file_sensor(demo_spec, home, instance)
    assert priorities(first) == {"1": "0", "2": "-1", "3": "-2"}

    defs = Definitions.merge(build_pipeline_definitions(demo_spec), Definitions(resources=build_resources(home)))
    job = defs.resolve_job_def(job_name(demo_spec))
    for _ in range(3):  # the three runs requested, not finished yet
        instance.create_run_for_job(job, status=DagsterRunStatus.NOT_STARTED, tags={PIPELINE_TAG: demo_spec.name})
    drop(block_files[3:], demo_spec.data_dir)
    later = evaluate_file_sensor(demo_spec, home, instance, cursor=first.cursor)
    assert priorities(later) == {"4": "-3"}  # behind its own three, and behind any other pipeline's first three
