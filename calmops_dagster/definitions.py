"""The code location: one asset group and job (and schedule) per pipeline spec, and the file sensor and the
circuit breaker's two sensors serving them all.

``workspace.yaml`` names this module; ``dagster dev`` and ``calmops run`` load it. A broken spec is logged and
shown in the UI as a sensor named ``<name>_spec_error`` whose description and skip reason carry the error;
it never takes the other pipelines down. Changed specs need a reload of the code location (the "Reload"
button under Deployment, or restart ``dagster dev``).
"""

from __future__ import annotations

import logging
import re

from dagster import DefaultSensorStatus, Definitions, SkipReason, sensor

from calmops_dagster.orchestration.pipeline_defs import (
    build_breaker_definitions,
    build_files_definitions,
    build_pipeline_definitions,
)
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


def build_definitions(home: CalmOpsHome) -> Definitions:
    """Definitions for every spec under ``home``; broken specs are reported and skipped."""
    specs, parts = [], []
    for path in home.spec_files():
        try:
            spec = load_spec(path)
            parts.append(build_pipeline_definitions(spec))
            specs.append(spec)
        except Exception as exc:  # noqa: BLE001 -- one broken pipeline must never take the others down
            log.error("skipping pipeline spec %s: %s", path, exc)
            parts.append(Definitions(sensors=[_spec_error_sensor(path.parent.name, str(exc))]))
    return Definitions.merge(*parts, build_files_definitions(specs, parts), build_breaker_definitions(specs, parts),
                             Definitions(resources=build_resources(home)))


defs = build_definitions(CalmOpsHome.from_env())
