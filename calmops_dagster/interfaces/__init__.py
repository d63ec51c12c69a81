"""What users touch: the ``calmops`` CLI and its demo, the prediction server (and report pages), the pipeline
report and overview, the block drift report, the tutorials.
May import: every layer below (orchestration, learning, ingest, store, drift, estimation)."""
