"""Asset values an earlier release stored: materializing one asset of an old block loads its upstream values
from Dagster's IO manager, and a value that is not this release's step result (a dict where the steps now hand
dataclasses, an object of a module since moved) fails in one line naming the asset, the partition and the fix
(``resources/step_results_io.py``; ``data_block``'s pickle is read when its Parquet file lacks the step's fields,
``resources/block_files_io.py``)."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterEventType, materialize

from calmops_dagster.assets.pipeline_assets import build_pipeline_assets
from calmops_dagster.resources import build_resources
from tests.test_alerts import run_blocks, spec_with_alerts


def old_module_object() -> bytes:
    """The pickle of an object whose class lived in a module that no longer exists."""
    module = types.ModuleType("calmops_dagster_old_release")
    module.Outcome = type("Outcome", (), {"__module__": module.__name__})
    sys.modules[module.__name__] = module
    try:
        return pickle.dumps(module.Outcome())
    finally:
        del sys.modules[module.__name__]


#: (the upstream asset whose stored value is replaced, the value, the asset materialized alone, the words)
OLD_VALUES = [
    ("drift_report", pickle.dumps({"block": "1", "reference_version": None, "drift_detected": False,
                                   "retrain": True, "reason": "no champion yet"}),
     "challenger_model", "a dict", "Assessment"),
    ("data_block", pickle.dumps(pd.DataFrame({"x1": [0.1], "y": [1]})), "drift_report", "a DataFrame", "LoadedBlock"),
    ("drift_report", old_module_object(), "champion_model", "an object of module calmops_dagster_old_release",
     "Assessment"),
]


def failure_messages(result) -> list[str]:
    """Every message in the chain of each failed step's error."""
    found = []
    for event in result.all_events:
        if event.event_type == DagsterEventType.STEP_FAILURE:
            error = event.event_specific_data.error
            while error is not None:
                found.append(error.message.strip())
                error = error.cause
    return found


@pytest.mark.parametrize("upstream, stored, selected, found, expected", OLD_VALUES,
                         ids=[f"{v[0]} stored as {v[3]}" for v in OLD_VALUES])
def test_an_old_stored_value_fails_in_one_line_naming_asset_partition_and_fix(
        home, tmp_path, instance, block_files, upstream, stored, selected, found, expected):
    spec = spec_with_alerts(home, tmp_path)
    results, _ = run_blocks(home, spec, instance, block_files[:1])
    assert [r.success for r in results] == [True]
    pickled = Path(str(home.storage_dir)) / spec.name / upstream / "1"
    pickled.parent.mkdir(parents=True, exist_ok=True)
    pickled.write_bytes(stored)
    if upstream == "data_block":  # the earlier release's copy of the rows beside the pickle: no step fields
        kept = Path(str(home.blocks_dir(spec.name))) / "1.parquet"
        pd.read_parquet(kept).to_parquet(kept, index=False)

    def materialize_alone(name: str):
        return materialize(build_pipeline_assets(spec), selection=[AssetKey([spec.name, name])], partition_key="1",
                           instance=instance, resources=build_resources(home), raise_on_error=False)

    result = materialize_alone(selected)
    assert not result.success
    line = (f"calmops_dagster.errors.StaleAssetValueError: demo/{upstream} partition 1: its stored value is "
            f"{found} from an earlier calmops-dagster release, not the {expected} this release takes: "
            f"materialize demo/{upstream} partition 1 and its upstream assets again, then retry")
    assert line in failure_messages(result)

    assert materialize_alone(upstream).success  # doing what the line says
    assert materialize_alone(selected).success
