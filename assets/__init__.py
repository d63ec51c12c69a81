"""Asset and asset-check factories: a pipeline spec in, Dagster definitions out."""
