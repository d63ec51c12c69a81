"""What users touch: the ``calmops`` CLI and its demo, the prediction server (and report pages), the pipeline
report, the tutorials.
May import: every layer below (orchestration, steps, reports, learning, ingest, store, drift, estimation)."""
