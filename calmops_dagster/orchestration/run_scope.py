"""Which pipelines a process's code location builds: every one, or in a run worker only its run's pipeline.

A run worker imports the code location to find its run's job, and the code location builds every pipeline of
the home (reading its spec, making its assets, jobs and sensors): work that grows with the number of
pipelines, before each run's first step, for one job (figures: benchmarks/RESULTS.md). A run worker whose launcher names the run's job in
``CALMOPS_RUN_JOB`` (the warm run launcher's workers do) builds only the pipeline that owns that job: the
same job, its assets, partitions, checks and resources as in the full code location, since a pipeline's
job selects its own asset group only. So does a run container of Dagster's Docker launcher (the launcher of
``deploy/dagster.yaml``), which Dagster starts with ``DAGSTER_RUN_JOB_NAME``. Any other process (the code
server, the daemon, ``calmops``, a worker of Dagster's default launcher) builds every pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

#: The environment variable naming the job of the run this process executes (set by the warm run worker).
RUN_JOB_ENV = "CALMOPS_RUN_JOB"
#: The variable Dagster's Docker run launcher and executor set in a run's (or step's) container.
DOCKER_RUN_JOB_ENV = "DAGSTER_RUN_JOB_NAME"

#: The jobs every pipeline ``<name>`` has: ``<name>_job`` (a block, :func:`~calmops_dagster.orchestration.
#: pipeline_defs.job_name`) and ``<name>_reevaluate`` (:mod:`~calmops_dagster.orchestration.reevaluation`).
JOB_SUFFIXES = ("_job", "_reevaluate")


def run_job_from_env(environ: Mapping[str, str]) -> str | None:
    """The job of the run this process executes, when its launcher says: ``CALMOPS_RUN_JOB``, else
    ``DAGSTER_RUN_JOB_NAME``."""
    return environ.get(RUN_JOB_ENV) or environ.get(DOCKER_RUN_JOB_ENV) or None


def spec_files_to_build(spec_files: list[Path], run_job: str | None) -> list[Path]:
    """Of ``spec_files`` (``pipelines/<name>/pipeline.yaml``), the one whose pipeline owns ``run_job``; all of
    them when ``run_job`` is unset or no pipeline's job has that name (then the full code location decides)."""
    if not run_job:
        return spec_files
    owner = [path for path in spec_files if any(run_job == path.parent.name + suffix for suffix in JOB_SUFFIXES)]
    return owner or spec_files
