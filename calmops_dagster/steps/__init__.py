"""The steps of a block: one typed function per asset, dataclasses in and out, no Dagster.

Each asset of a pipeline reads its inputs, calls one step and turns the step's result into Dagster output,
metadata and check results. The step does the work: it reads and writes the stores it is given (DuckDB rows,
the model store, the block's files), applies the rules below it and returns what it decided.
May import: drift, estimation, learning, ingest and store — never Dagster, orchestration or interfaces.
"""
