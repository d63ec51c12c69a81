"""What users touch: the ``calmops`` CLI, the prediction server, the pipeline report, the tutorials.
May import: every layer below (orchestration, learning, ingest, store, drift, estimation)."""
