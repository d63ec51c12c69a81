"""The steps of a block run without Dagster: load, assess, train a challenger, decide the champion, predict.

:func:`run_steps` processes four blocks (an abrupt drift at block 3) through the five steps in order, as the
assets do, then reruns block 2 and re-evaluates it. It runs in a fresh interpreter that must never import
Dagster; this module imports nothing of Dagster at its top for that reason (``tests/conftest.py`` does, so
the spec is written out here).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def spec_dict(name: str, data_dir: Path) -> dict:
    return {
        "name": name, "type": "block", "data_dir": str(data_dir), "target": "y", "block_col": "block",
        "model_spec": {"module": "sklearn.ensemble", "class": "RandomForestClassifier",
                       "params": {"n_estimators": 10, "random_state": 0}},
        "performance": {"thresholds": {"balanced_accuracy": 0.6}},
        "sensor": {"interval_seconds": 1, "settle_seconds": 0},
    }


def run_steps(root: Path) -> dict:
    """Four blocks through the steps, a rerun of block 2 and its re-evaluation; what each step returned."""
    from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
    from calmops_dagster.generators.writer import write_blocks
    from calmops_dagster.ingest.ingest_record import ingest_data_dir
    from calmops_dagster.spec import parse_spec, save_spec
    from calmops_dagster.steps.assess_block import assess_block
    from calmops_dagster.steps.decide_champion import decide_champion
    from calmops_dagster.steps.load_block import load_block
    from calmops_dagster.steps.predict_block import predict_block
    from calmops_dagster.steps.reevaluate_block import reevaluate_block
    from calmops_dagster.steps.result_files import result_bytes
    from calmops_dagster.steps.step_context import BlockOrder, step_context
    from calmops_dagster.steps.train_challenger import train_challenger
    from calmops_dagster.store.metrics_store import MetricsStore
    from calmops_dagster.store.model_store import ModelStore
    from calmops_dagster.store.paths import CalmOpsHome

    home = CalmOpsHome(root / "home")
    data_dir = root / "data"
    write_blocks(make_drifting_blocks(n_blocks=4, rows_per_block=300, drift_at=3, seed=7), data_dir,
                 block_col="block")
    spec = parse_spec(spec_dict("demo", data_dir), home.spec_path("demo"))
    save_spec(spec, home.spec_path("demo"))
    metrics, models = MetricsStore(home.metrics_db), ModelStore(home.models_dir("demo"))
    ingest_data_dir(spec, metrics, home.state_dir("demo"))  # the ingest record the load step reads
    order = BlockOrder(registered=lambda: ["1", "2", "3", "4"])
    log = logging.getLogger("test_steps")

    alerted = []  # what each step asked to send: the orchestrator adds the run's failed checks and sends them

    def run(block: str, run_id: str) -> dict:
        def alerts(checks=None):
            alerted.append([block, run_id, checks])

        def ctx():  # each step opens its context as its asset does: the recorded context as it stands now
            return step_context(spec, block, run_id, models, metrics, home, order, log, alerts)

        def store(result, folder: Path) -> Path:  # what the assets' IO manager does with a step's rows
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{block}.parquet").write_bytes(result_bytes(result))
            return folder / f"{block}.parquet"

        rows = load_block(ctx())
        store(rows, home.blocks_dir("demo"))  # the history later blocks and the rerun read
        assessment = assess_block(ctx(), rows)
        challenger = train_challenger(ctx(), rows, assessment)
        decision = decide_champion(ctx(), rows, assessment, challenger)
        predictions = predict_block(ctx(), rows, rows.version)  # this run loaded the block
        return {"rows": len(rows.frame), "judged_against": assessment.champion, "drift": assessment.drift_detected,
                "retrain": assessment.decision.retrain, "challenger": challenger.version,
                "trained": challenger.trained, "paired": challenger.paired is not None,
                "decision": decision.decision.decision, "after": decision.after, "rerun": decision.rerun,
                "predicted_by": predictions.version, "predicted_rows": predictions.rows,
                "predictions_file": store(predictions, home.predictions_dir("demo")).is_file(),
                "failures": decision.failures}

    blocks = {block: run(block, f"run-{block}") for block in ("1", "2", "3", "4")}
    pointer = models.champion_version(), models.versions()
    rerun = run("2", "run-rerun-2")
    reevaluation = reevaluate_block(step_context(spec, "2", "run-reevaluate-2", models, metrics, home, order, log,
                                                 lambda checks=None: alerted.append(["2", "reevaluate", checks])),
                                    "r1", against="current", changes={"drift.alpha": 0.0001})
    tables = {table: int(metrics.query(f"SELECT count(*) AS n FROM {table}")["n"][0])
              for table in ("blocks", "drift_summary", "promotions", "block_context", "processed_blocks",
                            "reevaluation_summary")}
    return {"blocks": blocks, "rerun": rerun, "pointer_before_rerun": list(pointer[:1]) + [pointer[1]],
            "pointer_after_rerun": [models.champion_version(), models.versions()],
            "reevaluation": {"against": reevaluation.against, "changes": reevaluation.changes,
                             "original_drift_detected": reevaluation.original_drift_detected},
            "tables": tables, "alerted": alerted, "dagster_modules": sorted(m for m in sys.modules if m.split(".")[0].startswith("dagster"))}


def test_the_steps_process_blocks_and_a_rerun_without_dagster(tmp_path):
    code = f"import json\nfrom tests.test_steps import run_steps\nprint(json.dumps(run_steps(__import__('pathlib').Path({str(tmp_path)!r}))))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["dagster_modules"] == []

    first, drifted = result["blocks"]["1"], result["blocks"]["3"]
    assert first["judged_against"] is None and first["trained"] and not first["paired"]
    assert first["decision"] == "promoted" and first["after"] == "v0001" == first["predicted_by"]
    assert result["blocks"]["2"]["judged_against"] == "v0001" and not result["blocks"]["2"]["drift"]
    assert drifted["drift"] and drifted["retrain"] and drifted["paired"] and drifted["challenger"] == "v0002"
    assert drifted["decision"] == "promoted" and drifted["after"] == "v0002"
    assert all(b["rows"] == b["predicted_rows"] == 300 and b["predictions_file"] and not b["rerun"]
               for b in result["blocks"].values())

    rerun, before = result["rerun"], result["blocks"]["2"]
    assert rerun["rerun"] and rerun["judged_against"] == "v0001"  # the champion in force then, not v0002
    assert rerun["predicted_by"] == "v0001"  # the champion block 2's decision left in force
    assert {k: rerun[k] for k in ("drift", "decision", "after", "challenger")} == {
        k: before[k] for k in ("drift", "decision", "after", "challenger")}
    assert result["pointer_after_rerun"] == result["pointer_before_rerun"]  # nothing moved, nothing trained

    # the champion step sends each run's alerts once, with the check its asset reports; a re-evaluation none
    assert result["alerted"] == [[block, f"run-{block}", {"champion_meets_thresholds": result["blocks"][block]["failures"]}]
                                 for block in ("1", "2", "3", "4")] + [
        ["2", "run-rerun-2", {"champion_meets_thresholds": rerun["failures"]}]]

    assert result["reevaluation"] == {"against": "v0002", "changes": {"against": "v0002", "drift.alpha": 0.0001},
                                      "original_drift_detected": False}
    assert result["tables"] == {"blocks": 4, "drift_summary": 4, "promotions": 4, "block_context": 4,
                                "processed_blocks": 4, "reevaluation_summary": 1}
