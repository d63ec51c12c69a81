"""Which files make up which block: scanning ``data_dir``, reading and checking block files, block history.
May import: :mod:`calmops_dagster.store` and the scientific stack — never Dagster or a layer above."""
