"""The code location: one asset group and job (and schedule) per pipeline spec, and the file sensor and the
circuit breaker's two sensors serving them all.

``workspace.yaml`` names this module; ``dagster dev`` and ``calmops run`` load it. A broken spec is logged and
shown in the UI as a sensor named ``<name>_spec_error`` whose description and skip reason carry the error;
it never takes the other pipelines down. Changed specs need a reload of the code location (the "Reload"
button under Deployment, or restart ``dagster dev``). A run worker of the warm launcher builds only its run's
pipeline (:mod:`~calmops_dagster.orchestration.run_scope`).
"""

from __future__ import annotations

import logging
import os
import re

from dagster import DefaultSensorStatus, Definitions, SkipReason, sensor

from calmops_dagster.orchestration.pipeline_defs import (
    build_breaker_definitions,
    build_files_definitions,
    build_pipeline_definitions,
)
from calmops_dagster.orchestration.run_scope import run_job_from_env, spec_files_to_build
from calmops_dagster.resources import build_resources
from calmops_dagster.spec import load_spec
from calmops_dagster.store.paths import CalmOpsHome

log = logging.getLogger("calmops_dagster")


def _spec_error_sensor(folder: str, message: str):
    """A sensor that only reports a broken spec, so the error is visible in the UI."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", folder)

    @sensor(name=f"{safe}_spec_error", description=f"BROKEN SPEC, pipeline skipped:\n{message}",
            default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=3600)
    def spec_error(_context):
        return SkipReason(f"pipeline skipped, its spec is broken: {message}")

    return spec_error


def build_definitions(home: CalmOpsHome, run_job: str | None = None) -> Definitions:
    """Definitions for every spec under ``home`` (``run_job``: only for the pipeline that owns that job);
    broken specs are reported and skipped."""
    specs, parts = [], []
    for path in spec_files_to_build(home.spec_files(), run_job):
        try:
            spec = load_spec(path)
            parts.append(build_pipeline_definitions(spec))
            specs.append(spec)
        except Exception as exc:  # noqa: BLE001 -- one broken pipeline must never take the others down
            log.error("skipping pipeline spec %s: %s", path, exc)
            parts.append(Definitions(sensors=[_spec_error_sensor(path.parent.name, str(exc))]))
    return Definitions.merge(*parts, build_files_definitions(specs, parts), build_breaker_definitions(specs, parts),
                             Definitions(resources=build_resources(home)))


defs = build_definitions(CalmOpsHome.from_env(), run_job_from_env(os.environ))
