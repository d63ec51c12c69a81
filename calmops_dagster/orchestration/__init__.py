"""Dagster wiring and run control: a pipeline's definitions (pipeline_defs, reevaluation), the instance, the run
tags, the fair run queue, headless runs, ingest registration, dead runs, the circuit breaker's run outcomes,
pipeline logs, the run lock, and talking to a running ``dagster dev``. No domain logic: that is in the steps.
May import: every layer below (steps, reports, learning, ingest, store, drift, estimation), the wiring folders
(assets, sensors, resources), the speed-ups' switch, and Dagster."""
