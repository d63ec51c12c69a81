"""The steps of a block: one typed function per asset step, dataclasses in and out, no Dagster.

Each asset of a pipeline reads its inputs, calls one step and turns the step's result
(:mod:`~calmops_dagster.steps.results`) into Dagster output, metadata and check results. The step does the
work: it reads and writes the stores its :class:`~calmops_dagster.steps.step_context.StepContext` holds
(DuckDB rows, the model store, the block's files) and applies the rules of the layers below.

- ``load_block``: the block's rows (``data_block``)
- ``assess_block``: drift and performance, whether to train a challenger (``drift_report``)
- ``train_challenger``: the challenger and its paired scores (``challenger_model``)
- ``decide_champion``: promotion or rollback (``champion_model``)
- ``train_and_decide``: the two above, the one step behind ``challenger_model`` and ``champion_model``
- ``predict_block``: the champion's predictions (``predictions``)
- ``reevaluate_block``: a processed block judged again (``calmops reevaluate``)

What they share: ``step_context`` (rerun or first run, the settings in force), ``block_context`` (what a
rerun reproduces), ``circuit_breaker``, ``estimated_performance`` and ``drift_profile`` (the champion's drift
reference, prepared once); the reports they write are in :mod:`calmops_dagster.reports`.
May import: drift, estimation, learning, ingest, store and reports — never Dagster, orchestration or
interfaces.
"""
