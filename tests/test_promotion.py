"""Promotion is gated by significance: refused for a challenger better by noise, accepted when clearly
better; rollback to a previous champion when the current one has degraded badly."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, Definitions
from scipy.stats import binomtest

from calmops_dagster.interfaces.cli import main
from calmops_dagster.learning.promotion import (
    decide_promotion,
    gain_evidence,
    mcnemar_test,
    paired_bootstrap_test,
)
from calmops_dagster.learning.training import fit_full
from calmops_dagster.orchestration.headless_runs import run_pending
from calmops_dagster.orchestration.ingest_registration import register_new_blocks
from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
from calmops_dagster.resources import build_resources
from calmops_dagster.spec import parse_spec, save_spec
from calmops_dagster.steps import circuit_breaker
from calmops_dagster.steps.decide_champion import settle_champion
from calmops_dagster.steps.results import ChallengerOutcome
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from tests.conftest import block_spec_dict


def predictions_with_accuracy(y, accuracy, rng):
    return np.where(rng.random(len(y)) < accuracy, y, 1 - y)


def test_mcnemar_matches_the_exact_binomial():
    champion = np.array([1] * 50 + [0] * 12 + [1] * 3 + [0] * 35, dtype=bool)
    challenger = np.array([1] * 50 + [1] * 12 + [0] * 3 + [0] * 35, dtype=bool)
    evidence = mcnemar_test(champion, challenger, 0.05)
    assert evidence.p_value == pytest.approx(binomtest(12, 15, 0.5, alternative="greater").pvalue)
    assert evidence.significant
    assert mcnemar_test(champion, champion, 0.05).p_value == 1.0


def test_better_by_noise_is_refused_and_clearly_better_is_promoted():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    champion = predictions_with_accuracy(y, 0.80, rng)
    noisy = predictions_with_accuracy(y, 0.80, rng)
    while (noisy == y).mean() <= (champion == y).mean():  # a raw gain, from noise alone
        noisy = predictions_with_accuracy(y, 0.80, rng)
    better = predictions_with_accuracy(y, 0.93, rng)

    def decide(challenger_pred):
        scores = {"accuracy": float((challenger_pred == y).mean())}
        evidence = gain_evidence("classification", "accuracy", y, champion, challenger_pred, 0.0, 0.05)
        return decide_promotion("accuracy", scores, {"accuracy": float((champion == y).mean())}, {}, 0.0, evidence)

    noise_decision = decide(noisy)
    assert noise_decision.decision == "rejected" and "not significant" in noise_decision.reason
    assert noise_decision.challenger_score > noise_decision.champion_score  # CalmOps would have promoted it
    clear = decide(better)
    assert clear.decision == "promoted" and clear.p_value < 1e-6 and clear.test == "mcnemar"


def test_paired_bootstrap_for_regression():
    rng = np.random.default_rng(1)
    y = rng.normal(size=500)
    champion = y + rng.normal(scale=1.0, size=500)
    same = y + rng.normal(scale=1.0, size=500)
    better = y + rng.normal(scale=0.5, size=500)
    noise = paired_bootstrap_test(y, champion, same, "rmse", 0.0, 0.05, 500, seed=0)
    assert not noise.significant and noise.ci_low < 0 < noise.ci_high
    clear = paired_bootstrap_test(y, champion, better, "rmse", 0.0, 0.05, 500, seed=0)
    assert clear.significant and clear.ci_low > 0.3


def test_min_improvement_and_thresholds_still_apply():
    evidence = mcnemar_test([False] * 50, [True] * 50, 0.05)
    small = decide_promotion("accuracy", {"accuracy": 0.81}, {"accuracy": 0.80}, {}, 0.05, evidence)
    assert small.decision == "rejected" and "not more than 0.05" in small.reason
    below = decide_promotion("accuracy", {"accuracy": 0.81}, {"accuracy": 0.5}, {"accuracy": 0.9}, 0, evidence)
    assert below.decision == "rejected" and "fails thresholds" in below.reason


def concept(seed, flip=False, n=400):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = (x[:, 0] > 0).astype(int)
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": 1 - y if flip else y, "block": 1})


def test_automatic_and_manual_rollback(home, tmp_path, capsys):
    spec = parse_spec(block_spec_dict("p", str(tmp_path)), home.spec_path("p"))
    save_spec(spec, home.spec_path("p"))
    store = ModelStore(home.models_dir("p"))
    features = ["a", "b"]
    for block, flip in (("1", False), ("2", True)):
        frame = concept(int(block), flip)
        model = fit_full(spec, frame[features], frame["y"])
        version = store.save(model, reference=frame, features=features, metrics={"balanced_accuracy": 0.99})
        store.set_champion(version, block, "promoted")
    assert store.champion_version() == "v0002"

    block3 = concept(3, flip=False)  # the old concept is back: v0002 fails, v0001 is right
    v2_scores = {"balanced_accuracy": 0.02}
    no_challenger = ChallengerOutcome(None, "v0002", "no retrain")
    decision, in_force = settle_champion(spec, store, "3", block3, no_challenger, v2_scores)
    assert decision.decision == "rolled_back" and store.champion_version() == "v0001"
    assert in_force["balanced_accuracy"] > 0.9 and "previous champion v0001" in decision.reason

    assert main(["rollback", "p", "--to", "v0002"]) == 0
    assert store.champion_version() == "v0002"
    assert main(["rollback", "p"]) == 0  # default: the previous champion
    assert store.champion_version() == "v0001"
    assert main(["rollback", "p", "--to", "v0001"]) == 2
    assert "already the champion" in capsys.readouterr().err


def test_pipeline_records_the_test_and_keeps_rejected_challengers(home, tmp_path, block_files):
    """Through Dagster: block 3 drifts, its challenger is clearly better (tiny p-value) but not by the
    spec's min_improvement, so it is rejected: recorded with its figures, kept on disk, not served."""
    data = tmp_path / "data"
    data.mkdir()
    for path in block_files[:3]:
        shutil.copy(path, data)
    spec = parse_spec(block_spec_dict("gate", str(data), performance={"min_improvement": 0.9}),
                      home.spec_path("gate"))
    save_spec(spec, home.spec_path("gate"))
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    metrics, store = MetricsStore(home.metrics_db), ModelStore(home.models_dir("gate"))
    with DagsterInstance.ephemeral() as instance:
        register_new_blocks(instance, spec, metrics, store, logging.getLogger("test"))
        results = run_pending(instance, spec, defs.resolve_job_def(job_name(spec)), metrics)
        assert all(r.success for r in results), [r.summary for r in results]
        event = instance.get_latest_materialization_event(AssetKey(["gate", "champion_model"]))
        metadata = event.asset_materialization.metadata
    with duckdb.connect(str(home.metrics_db), read_only=True) as con:
        rows = con.execute("SELECT * FROM promotions ORDER BY block").df().set_index("block")
    row = rows.loc["3"]
    assert row["decision"] == "rejected" and "is not more than 0.9" in row["reason"]
    assert row["test"] == "mcnemar" and row["p_value"] < 0.01 and row["challenger_score"] > row["champion_score"]
    assert row["champion_after"] == row["champion_before"] == store.champion_version() == "v0001"
    assert row["challenger"] in store.versions() and store.load(row["challenger"]) is not None
    assert rows.loc["2", "decision"] == "kept" and pd.isna(rows.loc["2", "p_value"])
    assert metadata["decision"].value == "rejected" and metadata["test"].value == "mcnemar"
    assert metadata["p_value"].value == pytest.approx(row["p_value"], rel=5e-4)  # shown to 4 digits


def test_pipeline_rolls_back_by_itself_when_the_old_concept_returns_while_retraining_is_paused(home, tmp_path):
    """Through Dagster: concept A trains v0001, the flipped concept B gets v0002 promoted; then retraining is
    paused (circuit breaker open) and concept A returns. v0002 collapses on the block, no challenger can be
    trained, and the pipeline restores v0001, which then makes the block's predictions."""
    data = tmp_path / "data"
    data.mkdir()
    spec = parse_spec(block_spec_dict("recur", str(data)), home.spec_path("recur"))
    save_spec(spec, home.spec_path("recur"))
    defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
    metrics, store = MetricsStore(home.metrics_db), ModelStore(home.models_dir("recur"))

    def deliver_and_run(instance, *blocks):
        for block, flip in blocks:
            concept(block, flip).assign(block=block).to_csv(data / f"block_{block}.csv", index=False)
        register_new_blocks(instance, spec, metrics, store, logging.getLogger("test"))
        results = run_pending(instance, spec, defs.resolve_job_def(job_name(spec)), metrics)
        assert all(r.success for r in results), [r.summary for r in results]

    with DagsterInstance.ephemeral() as instance:
        deliver_and_run(instance, (1, False), (2, True))
        assert store.champion_version() == "v0002"
        metrics.update_breaker("recur", lambda s: circuit_breaker.on_failure(
            s, 1, 60, datetime.now(UTC), "test: retraining paused"))
        deliver_and_run(instance, (3, False))
        event = instance.get_latest_materialization_event(AssetKey(["recur", "champion_model"]))
    with duckdb.connect(str(home.metrics_db), read_only=True) as con:
        row = con.execute("SELECT * FROM promotions WHERE block = '3'").df().iloc[0]
        trained = con.execute("SELECT count(*) FROM performance WHERE block = '3' AND role = 'challenger'").fetchone()
    assert row["decision"] == "rolled_back" and row["champion_before"] == "v0002"
    assert row["champion_after"] == store.champion_version() == "v0001"
    assert "previous champion v0001" in row["reason"] and row["challenger_score"] > 0.9
    assert trained == (0,)  # the breaker kept the challenger from being trained
    assert event.asset_materialization.metadata["decision"].value == "rolled_back"
    predictions = pd.read_parquet(home.pipeline_dir("recur") / "predictions" / "3.parquet")
    truth = concept(3, False)["y"].to_numpy()
    assert set(predictions["model_version"]) == {"v0001"}
    assert (predictions["prediction"].to_numpy() == truth).mean() > 0.9
