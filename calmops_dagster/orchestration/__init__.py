"""Dagster wiring and control: pipeline definitions, runner, instance set-up, pipeline logs,
and the steps that join learning to the stores. May import: every layer below, and Dagster."""
