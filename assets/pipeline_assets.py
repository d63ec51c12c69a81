"""The asset group of one pipeline: spec in, Dagster assets and checks out.

```
data_block ──► drift_report ──► challenger_model ──► champion_model ──► predictions
```

Each asset (one module each in this folder) reads its inputs, calls one step of
:mod:`calmops_dagster.steps`, and turns the step's result into Dagster output, metadata and check results;
the steps do the work and write the stores. The champion carries state from block to block through the
model store's champion pointer (runs of one pipeline are processed one at a time, in block order).

The steps, and with them the modules that compute (the drift engine and scipy, training and scikit-learn,
the promotion tests, the estimator, the plotly report), are imported inside the assets, when a step runs:
the code location, which only builds these definitions (``dagster dev``'s code server, every run worker,
the CLI), does not load them, and a run loads only what its steps use.
"""

from calmops_dagster.assets.champion_model import build_champion_model
from calmops_dagster.assets.data_block import build_data_block
from calmops_dagster.assets.drift_report import build_drift_report
from calmops_dagster.assets.monitoring import monitoring_spec
from calmops_dagster.assets.predictions import build_predictions
from calmops_dagster.spec import PipelineSpec


def build_pipeline_assets(spec: PipelineSpec) -> list:
    """The five assets of ``spec`` (``challenger_model`` and ``champion_model`` from one step; two or three
    assets in prediction-only mode) with their checks, and the ``monitoring`` overview they report after
    every block."""
    if spec.prediction_only:
        drift = [build_drift_report(spec)] if spec.reference_file else []
        chain = [build_data_block(spec), *drift, build_predictions(spec)]
    else:
        chain = [build_data_block(spec), build_drift_report(spec), build_champion_model(spec),
                 build_predictions(spec)]
    return [*chain, monitoring_spec(spec)]
