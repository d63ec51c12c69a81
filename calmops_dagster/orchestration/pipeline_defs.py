"""Everything Dagster needs for the valid pipeline specs: per pipeline its assets, job, schedule (and labels
sensor); shared by all, the file sensor and the circuit breaker's run-status sensors."""

import os

from dagster import (
    AssetSelection,
    Definitions,
    colored_console_logger,
    define_asset_job,
    in_process_executor,
    multiprocess_executor,
)

from calmops_dagster.assets.pipeline_assets import build_pipeline_assets
from calmops_dagster.orchestration.pipeline_logs import headless_console_logger, pipeline_file_logger
from calmops_dagster.orchestration.reevaluation import build_reevaluation_job
from calmops_dagster.orchestration.run_tags import CODE_VERSION_TAG, PIPELINE_TAG
from calmops_dagster.sensors.file_sensor import build_files_sensor
from calmops_dagster.sensors.labels_sensor import build_labels_sensor
from calmops_dagster.sensors.run_failure_sensor import build_breaker_sensors
from calmops_dagster.sensors.schedules import build_schedule
from calmops_dagster.spec import PipelineSpec

#: Dagster's console logger plus the per-pipeline log file (CALMOPS_HOME/pipelines/<name>/logs/), and the
#: console of `calmops run` (warnings only: it reports each block, failures included, itself).
PIPELINE_LOGGERS = {"console": colored_console_logger, "calmops_file": pipeline_file_logger,
                    "calmops_console": headless_console_logger}


def job_name(spec: PipelineSpec) -> str:
    return f"{spec.name}_job"


#: ``executor`` of the spec -> Dagster executor. A run is always its own process under ``dagster dev`` (run
#: launcher) and runs of one pipeline are serialised by the run queue; the executor only decides whether the
#: steps inside a run share that process (``in_process``: no process start and no imports per step) or get
#: one process each (``multiprocess``: step isolation).
EXECUTORS = {"in_process": in_process_executor, "multiprocess": multiprocess_executor}

#: A Celery broker URL (``redis://host:6379/0``): every pipeline's steps become Celery tasks on the workers
#: listening to it (deploy/celery/). Unset, the spec's ``executor`` runs the steps.
CELERY_BROKER_ENV = "CALMOPS_CELERY_BROKER"
#: Where Celery keeps task results; the broker's URL when unset.
CELERY_BACKEND_ENV = "CALMOPS_CELERY_BACKEND"


def pipeline_executor(spec: PipelineSpec):
    """Dagster's Celery executor, its broker checked (:mod:`~calmops_dagster.orchestration.celery_executor`), when
    a broker is configured, else the executor the spec names."""
    broker = os.environ.get(CELERY_BROKER_ENV)
    if not broker:
        return EXECUTORS[spec.executor]
    from calmops_dagster.orchestration.celery_executor import checked_celery_executor

    return checked_celery_executor.configured(
        {"broker": broker, "backend": os.environ.get(CELERY_BACKEND_ENV) or broker},
        name="celery")


def code_version_tags() -> dict[str, str]:
    """The code version tag of the runs whose steps go to Celery workers (each step compares it with its own
    code: :mod:`~calmops_dagster.orchestration.code_version`); none when the steps run on this machine."""
    if not os.environ.get(CELERY_BROKER_ENV):
        return {}
    from calmops_dagster.orchestration.code_version import code_version

    return {CODE_VERSION_TAG: code_version()}


def build_job(spec: PipelineSpec):
    """The job that materializes one block of the pipeline (all of its assets and checks)."""
    return define_asset_job(
        job_name(spec),
        selection=AssetSelection.groups(spec.name),
        tags={PIPELINE_TAG: spec.name, **code_version_tags()},
        executor_def=pipeline_executor(spec),
        # Default run config: a logger runs only when named in the run config; these defaults are merged
        # into whatever run config a sensor, schedule, the UI or `calmops run` passes.
        # The console logger at INFO: one line per block (its decision) and failures, not Dagster's DEBUG line
        # for every event, which under `dagster dev` fill the terminal (the UI keeps every event anyway).
        config={"loggers": {"console": {"config": {"log_level": "INFO"}}, "calmops_file": {}}},
        description=f"Process one block of pipeline {spec.name}.",
    )


def build_pipeline_definitions(spec: PipelineSpec) -> Definitions:
    """Assets, job, labels sensor and schedule of one valid spec; the re-evaluation job unless
    prediction-only. (Its file sensor and circuit breaker's sensors are shared by all pipelines:
    :func:`build_files_definitions`, :func:`build_breaker_definitions`.)"""
    job = build_job(spec)
    schedules = [build_schedule(spec, job)] if spec.schedule else []
    labels = [build_labels_sensor(spec, job)] if spec.labels else []
    reevaluate = [] if spec.prediction_only else [build_reevaluation_job(spec)]
    return Definitions(assets=build_pipeline_assets(spec), jobs=[job, *reevaluate],
                       sensors=labels, schedules=schedules,
                       loggers=PIPELINE_LOGGERS)


def block_jobs(specs: list[PipelineSpec], parts: list[Definitions]) -> list:
    """The block jobs of ``specs``, found in their ``parts`` (the :func:`build_pipeline_definitions` of each)."""
    names = {job_name(spec) for spec in specs}
    return [job for part in parts for job in part.jobs or [] if job.name in names]


def build_files_definitions(specs: list[PipelineSpec], parts: list[Definitions]) -> Definitions:
    """The one file sensor watching the ``data_dir`` of every spec of ``specs`` (none without specs)."""
    sensor = build_files_sensor(specs, block_jobs(specs, parts))
    return Definitions(sensors=[sensor] if sensor else [])


def build_breaker_definitions(specs: list[PipelineSpec], parts: list[Definitions]) -> Definitions:
    """The one pair of breaker sensors watching the block jobs of ``specs`` (found in their ``parts``, the
    :func:`build_pipeline_definitions` of each)."""
    return Definitions(sensors=build_breaker_sensors(specs, block_jobs(specs, parts)))


