"""File sensors and schedules of calmops-dagster."""
