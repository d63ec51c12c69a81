"""State that outlives a run: model store, metrics store (DuckDB), CALMOPS_HOME paths, atomic writes.
The storage seam. May import: the scientific stack, fsspec, duckdb, skops — never Dagster or a layer above."""
