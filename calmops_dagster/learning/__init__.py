"""Training, the model factory, retrain modes and policy, promotion tests, evaluation, IPIP, river adapters.
May import: :mod:`calmops_dagster.drift` and the scientific stack — never Dagster, ingest, store or above."""
