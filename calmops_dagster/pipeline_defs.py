"""Everything Dagster needs for one valid pipeline spec: assets, job, file sensor, schedule."""

from dagster import AssetSelection, Definitions, define_asset_job

from assets.pipeline_assets import build_pipeline_assets
from calmops_dagster.runner import PIPELINE_TAG
from calmops_dagster.spec import PipelineSpec
from sensors.file_sensor import build_file_sensor
from sensors.schedules import build_schedule


def job_name(spec: PipelineSpec) -> str:
    return f"{spec.name}_job"


def build_job(spec: PipelineSpec):
    """The job that materializes one block of the pipeline (all of its assets and checks)."""
    return define_asset_job(
        job_name(spec),
        selection=AssetSelection.groups(spec.name),
        tags={PIPELINE_TAG: spec.name},
        description=f"Process one block of pipeline {spec.name}.",
    )


def build_pipeline_definitions(spec: PipelineSpec) -> Definitions:
    """Assets, job, sensor and schedule of one valid spec."""
    job = build_job(spec)
    schedules = [build_schedule(spec, job)] if spec.schedule else []
    return Definitions(assets=build_pipeline_assets(spec), jobs=[job],
                       sensors=[build_file_sensor(spec, job)], schedules=schedules)


