"""Alerts (calmops_dagster.interfaces.alerts): events derived from a block's rows, POSTed to a real local HTTP
receiver with retries, once per event, block and webhook, also across reruns; a failing webhook never fails a
block and no URL reaches a log or a table."""

from __future__ import annotations

import logging
import shutil

import pandas as pd
import pytest
import yaml
from conftest import block_spec_dict
from dagster import DagsterEventType, Definitions, build_run_status_sensor_context
from sklearn.linear_model import LogisticRegression
from webhook_receiver import WebhookReceiver

from calmops_dagster.errors import SpecError
from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.interfaces.alerts import BlockRecord, block_events, deliver, send_block_alerts
from calmops_dagster.interfaces.cli import main
from calmops_dagster.orchestration.headless_runs import run_pending
from calmops_dagster.orchestration.ingest_registration import register_new_blocks
from calmops_dagster.orchestration.pipeline_defs import (
    build_breaker_definitions,
    build_pipeline_definitions,
    job_name,
)
from calmops_dagster.resources import build_resources
from calmops_dagster.spec import AlertsConfig, load_spec, parse_spec, save_spec
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore
from calmops_dagster.store.skops_io import skops_io

TOKEN = "T0K3N-s3cr3t"
FIELDS = {"event", "pipeline", "block", "summary", "report_url", "at", "text"}


@pytest.fixture
def hooks():
    with WebhookReceiver() as receiver:
        yield receiver


def spec_with_alerts(home, tmp_path, name="demo", alerts=None, **overrides):
    raw = block_spec_dict(name, tmp_path / f"{name}_data", alerts=alerts or {}, **overrides)
    (tmp_path / f"{name}_data").mkdir(exist_ok=True)
    spec = parse_spec(raw, home.spec_path(name))
    save_spec(spec, home.spec_path(name))
    return spec


def run_blocks(home, spec, instance, files):
    for file in files:
        shutil.copy(file, spec.data_dir)
    pipeline = build_pipeline_definitions(spec)
    defs = Definitions.merge(pipeline, build_breaker_definitions([spec], [pipeline]),
                             Definitions(resources=build_resources(home)))
    metrics, models = MetricsStore(home.metrics_db), ModelStore(home.models_dir(spec.name))
    register_new_blocks(instance, spec, metrics, models, logging.getLogger("test"))
    return run_pending(instance, spec, defs.resolve_job_def(job_name(spec)), metrics), defs


# ---- events from rows (pure) -------------------------------------------------------------------------------
@pytest.fixture
def demo(home, tmp_path):
    return spec_with_alerts(home, tmp_path)


@pytest.mark.parametrize(("record", "events", "words"), [
    ({"drift": {"drift_detected": True, "drifted_features": "x1,x2", "n_tested": 5, "drift_share": 0.4,
                "reference_version": "v0001", "computed_at": "2026-01-01T00:00:00+00:00"}},
     ["drift"], "Block 3 of demo drifted against champion v0001: 2 of 5 features drifted (x1, x2), drift share 0.4."),
    ({"drift": {"drift_detected": False, "drifted_features": "", "n_tested": 5, "drift_share": 0.0}}, [], ""),
    ({"promotion": {"decision": "promoted", "champion_before": "v0001", "champion_after": "v0002",
                    "metric": "balanced_accuracy", "champion_score": 0.5627, "challenger_score": 0.8661}},
     ["promotion"], "promoted challenger v0002 over v0001: balanced_accuracy 0.866 against 0.563."),
    ({"promotion": {"decision": "promoted", "champion_before": None, "champion_after": "v0001"}},
     ["promotion"], "Block 3 of demo trained its first champion, v0001."),
    ({"promotion": {"decision": "rolled_back", "champion_before": "v0003", "champion_after": "v0001",
                    "reason": "champion 40% below its reference"}},
     ["rollback"], "rolled the champion back from v0003 to v0001: champion 40% below its reference."),
    ({"promotion": {"decision": "kept", "champion_before": "v0001", "champion_after": "v0001"}}, [], ""),
    ({"estimate": {"model_version": "v0001", "value": 0.718, "ci_low": 0.679, "ci_high": 0.761,
                   "reference": 0.878}},
     ["estimated_drop"], "is 0.718 (interval 0.679 to 0.761), below 0.79 (its reference 0.878 less 10%)"),
    ({"estimate": {"model_version": "v0001", "value": 0.80, "ci_low": 0.76, "ci_high": 0.84, "reference": 0.878}},
     [], ""),  # the interval reaches above the threshold: no drop
    ({"estimate": {"model_version": "v0001", "value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "reference": None}},
     [], ""),  # no reference score: nothing to compare with
    ({"failed_checks": {"champion_meets_thresholds": "balanced_accuracy 0.53 < 0.6"}},
     ["check_failed"], "Check failed on block 3 of demo: champion_meets_thresholds (balanced_accuracy 0.53 < 0.6)."),
    ({"breaker_openings": [{"consecutive_failures": 2, "reason": "block 3: challenger_model: boom"}]},
     ["breaker_open"], "Circuit breaker of demo opened at block 3 after 2 consecutive training/promotion failures"),
])
def test_events_are_derived_from_the_rows_of_a_block(demo, record, events, words):
    found = block_events(demo, BlockRecord("demo", "3", **record))
    assert [e.event for e in found] == events
    if words:
        assert words in found[0].summary
        assert found[0].summary.endswith(".") and "\n" not in found[0].summary  # one sentence


def test_events_come_in_one_order(demo):
    record = BlockRecord("demo", "3", drift={"drift_detected": True, "drifted_features": "x1", "n_tested": 5},
                         promotion={"decision": "promoted", "champion_before": "v1", "champion_after": "v2"},
                         estimate={"model_version": "v1", "value": 0.5, "ci_high": 0.6, "reference": 0.9},
                         failed_checks={"schema_and_nulls": "max_null_share 0.3"},
                         breaker_openings=[{"consecutive_failures": 3}])
    assert [e.event for e in block_events(demo, record)] == [
        "drift", "promotion", "breaker_open", "check_failed", "estimated_drop"]


# ---- delivery ----------------------------------------------------------------------------------------------
def test_delivery_retries_with_backoff_until_the_receiver_answers(hooks):
    hooks.plan("/flaky", [503, 502])
    waits = []
    result = deliver(hooks.url("/flaky"), {"text": "hi"}, AlertsConfig(max_attempts=4, retry_seconds=0.5), waits.append)
    assert (result.status, result.attempts, result.http_status) == ("sent", 3, 200)
    assert waits == [0.5, 1.0]  # doubling
    assert len(hooks.bodies("/flaky")) == 3 and hooks.bodies("/flaky")[-1] == {"text": "hi"}


def test_delivery_honours_retry_after_and_gives_up_after_max_attempts(hooks):
    hooks.plan("/busy", [429, 429, 429], {"Retry-After": "7"})
    waits = []
    result = deliver(hooks.url("/busy"), {}, AlertsConfig(max_attempts=3, retry_seconds=0.1), waits.append)
    assert (result.status, result.attempts, result.http_status) == ("failed", 3, 429)
    assert waits == [7.0, 7.0] and result.error == "HTTP 429 Too Many Requests"


def test_a_client_error_is_not_retried(hooks):
    hooks.plan("/gone", [404])
    result = deliver(hooks.url("/gone"), {}, AlertsConfig(max_attempts=4, retry_seconds=0), lambda s: None)
    assert (result.status, result.attempts, result.http_status) == ("failed", 1, 404)


def test_an_unreachable_webhook_fails_without_naming_its_url(hooks):
    url = hooks.url(f"/{TOKEN}")
    hooks.server.server_close()  # nothing listens there any more
    waits = []
    result = deliver(url, {}, AlertsConfig(max_attempts=2, retry_seconds=0.01), waits.append)
    assert result.status == "failed" and result.attempts == 2 and waits == [0.01]
    assert "Connection" in result.error and TOKEN not in result.error and "127.0.0.1" not in result.error


def test_spec_errors_name_the_field_and_never_the_url(home, tmp_path):
    path = home.spec_path("bad")
    path.parent.mkdir(parents=True)
    raw = block_spec_dict("bad", tmp_path, alerts={"webhooks": [f"hooks.example/{TOKEN}"]})
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "field 'alerts.webhooks': webhook 1 is not an http(s) URL" in str(err.value)
    assert TOKEN not in str(err.value)
    raw["alerts"] = {"events": ["drift", "drifted"]}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="field 'alerts.events.1': Input should be 'drift'"):
        load_spec(path)
    raw["alerts"] = {"webhooks": ["${SLACK_WEBHOOK_URL}"]}  # a URL kept in the environment
    path.write_text(yaml.safe_dump(raw))
    assert load_spec(path).alerts.webhooks == ["${SLACK_WEBHOOK_URL}"]


# ---- through Dagster ---------------------------------------------------------------------------------------
def _everything_logged(home, instance, name) -> str:
    """Every line of the pipeline's log file and every message of every run's Dagster event log."""
    text = (home.pipeline_dir(name) / "logs" / "pipeline.log").read_text()
    for run in instance.get_runs():
        text += "\n".join(entry.user_message or "" for entry in instance.all_logs(run.run_id))
    return text


def test_a_pipeline_alerts_each_event_once_and_a_failing_webhook_never_fails_a_block(
        home, tmp_path, instance, block_files, hooks, monkeypatch):
    spec = spec_with_alerts(home, tmp_path, alerts={
        "webhooks": [hooks.url(f"/ok/{TOKEN}"), hooks.url(f"/down/{TOKEN}")], "retry_seconds": 0, "max_attempts": 2})
    hooks.plan(f"/down/{TOKEN}", [500] * 100)
    monkeypatch.setenv("CALMOPS_REPORTS_URL", "http://reports.example:5001")
    results, defs = run_blocks(home, spec, instance, block_files)
    assert [r.success for r in results] == [True] * 4  # the webhook that answers 500 failed no block

    sent = hooks.bodies(f"/ok/{TOKEN}")
    assert [(b["block"], b["event"]) for b in sent] == [  # block 3's concept flip leaves the estimate high
        ("1", "promotion"), ("3", "drift"), ("3", "promotion")]
    for body in sent:
        assert FIELDS <= set(body) and body["pipeline"] == "demo"
        assert body["summary"] in body["text"] and body["report_url"] in body["text"]
    drift = sent[1]
    assert drift["report_url"] == "http://reports.example:5001/reports/demo/3.html"
    assert drift["summary"].startswith("Block 3 of demo drifted against champion v0001:")
    assert sent[2]["report_url"] == "http://reports.example:5001/reports/demo/"
    assert len(hooks.bodies(f"/down/{TOKEN}")) == 2 * 3  # every alert tried twice there

    metrics = MetricsStore(home.metrics_db)
    rows = metrics.query("SELECT * FROM alerts WHERE pipeline = 'demo' ORDER BY block, event, status")
    assert sorted(set(rows["status"])) == ["failed", "sent"]
    assert len(rows) == 6 and set(rows.loc[rows["status"] == "failed", "http_status"]) == {500}
    assert all(w.startswith("sha256:") for w in rows["webhook"])
    assert not rows.astype(str).apply(lambda c: c.str.contains(TOKEN)).any().any()  # no URL in the table

    # a rerun of block 3 sends nothing twice to the webhook that got it; the failed one is tried again
    job = defs.resolve_job_def(job_name(spec))
    assert job.execute_in_process(instance=instance, partition_key="3").success
    assert len(hooks.bodies(f"/ok/{TOKEN}")) == 3
    assert len(hooks.bodies(f"/down/{TOKEN}")) == 2 * 3 + 2 * 2

    logged = _everything_logged(home, instance, "demo")
    assert "NOT sent to webhook sha256:" in logged and "HTTP 500" in logged
    assert TOKEN not in logged and hooks.url("/") not in logged


def test_check_failures_are_alerts(home, tmp_path, instance, block_files, hooks):
    spec = spec_with_alerts(home, tmp_path, name="strict", alerts={"webhooks": [hooks.url("/hook")],
                                                                   "events": ["check_failed"]},
                            performance={"thresholds": {"balanced_accuracy": 0.99}})
    results, _ = run_blocks(home, spec, instance, block_files[:1])
    assert [r.success for r in results] == [False]  # the blocking check stopped the run
    (body,) = hooks.bodies("/hook")
    assert body["event"] == "check_failed" and body["block"] == "1"
    # the first challenger is below the bar, so it is not promoted: the block ends without a champion
    assert body["summary"].startswith("Check failed on block 1 of strict: champion_meets_thresholds (no champion (")
    assert "challenger fails thresholds: balanced_accuracy" in body["summary"]


def test_without_webhooks_alerts_are_recorded_not_sent(home, tmp_path, instance, block_files):
    spec = spec_with_alerts(home, tmp_path)
    run_blocks(home, spec, instance, block_files[:1])
    rows = MetricsStore(home.metrics_db).query("SELECT block, event, status, webhook FROM alerts")
    assert rows.to_dict(orient="records") == [{"block": "1", "event": "promotion", "status": "no_webhook",
                                               "webhook": None}]
    assert send_block_alerts(spec, home, MetricsStore(home.metrics_db), "1") == []  # recorded once


def test_a_prediction_only_pipeline_records_its_alerts(home, tmp_path, instance, block_files):
    """No champion step: the predictions step tells the block's events (the drift of blocks 3 and 4 from the
    model's reference, which no retraining moves). The univariate tests alone: the domain classifier's AUC on
    block 2, drawn like block 1, lies by chance at its 0.55 floor with these 300 rows (0.54 with 255 histogram
    bins, 0.56 with 31), and this test is about the alerts, not about that chance."""
    frame = pd.concat(pd.read_csv(file) for file in block_files[:1])
    features = ["x1", "x2", "x3", "x4"]
    skops_io().dump(LogisticRegression().fit(frame[features], frame["y"]), tmp_path / "model.skops")
    frame[[*features, "y"]].to_parquet(tmp_path / "reference.parquet")
    spec = spec_with_alerts(home, tmp_path, name="scoring", prediction_only=True,
                            model_file=str(tmp_path / "model.skops"),
                            reference_file=str(tmp_path / "reference.parquet"), features=features,
                            drift={"multivariate": False})
    results, _ = run_blocks(home, spec, instance, block_files)
    assert [r.success for r in results] == [True] * 4
    rows = MetricsStore(home.metrics_db).query("SELECT block, event, status FROM alerts ORDER BY block")
    assert rows.to_dict(orient="records") == [{"block": block, "event": "drift", "status": "no_webhook"}
                                              for block in ("3", "4")]


@pytest.fixture
def flaky_files(tmp_path):
    frame = make_drifting_blocks(n_blocks=3, rows_per_block=200, drift_at=3, seed=11)
    return sorted(write_blocks(frame, tmp_path / "flaky_staging", block_col="block"))


def flaky_spec(home, tmp_path, hooks):
    return spec_with_alerts(
        home, tmp_path, name="flaky", performance={},
        model_spec={"module": "calmops_dagster.learning.testing_models", "class": "ControlledTree",
                    "params": {"max_depth": 5, "random_state": 0}},
        circuit_breaker={"max_failures": 1, "backoff_minutes": 60},
        alerts={"webhooks": [hooks.url("/hook")], "events": ["breaker_open", "drift"], "retry_seconds": 0})


def test_the_run_failure_sensor_alerts_when_the_breaker_opens(home, tmp_path, instance, flaky_files, hooks,
                                                              monkeypatch):
    spec = flaky_spec(home, tmp_path, hooks)
    run_blocks(home, spec, instance, flaky_files[:2])
    shutil.copy(flaky_files[2], spec.data_dir)
    pipeline = build_pipeline_definitions(spec)
    defs = Definitions.merge(pipeline, build_breaker_definitions([spec], [pipeline]),
                             Definitions(resources=build_resources(home)))
    register_new_blocks(instance, spec, MetricsStore(home.metrics_db), ModelStore(home.models_dir("flaky")),
                        logging.getLogger("test"))
    monkeypatch.setenv("CALMOPS_TEST_FIT_FAIL", "1")  # block 3 drifts; its challenger's training fails
    result = defs.resolve_job_def(job_name(spec)).execute_in_process(
        instance=instance, partition_key="3", raise_on_error=False)  # launched as dagster dev would
    assert not result.success and hooks.bodies("/hook") == []  # the run never reached its end
    sensor = next(s for s in defs.sensors if s.name == "calmops_run_failures")
    failure = next(iter(instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_FAILURE)))
    resources = build_resources(home)
    for _ in range(2):  # a second evaluation of the same run sends nothing again
        sensor(build_run_status_sensor_context(
            sensor_name="calmops_run_failures", dagster_event=failure.dagster_event, dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id),
            resources={k: resources[k] for k in ("home", "metrics")}).for_run_failure())
    assert [(b["block"], b["event"]) for b in hooks.bodies("/hook")] == [("3", "drift"), ("3", "breaker_open")]
    opened = hooks.bodies("/hook")[1]
    assert "after 1 consecutive training/promotion failures" in opened["summary"]
    assert "injected training failure" in opened["summary"]


def test_calmops_run_alerts_for_a_block_whose_run_failed(home, tmp_path, flaky_files, hooks, monkeypatch):
    spec = flaky_spec(home, tmp_path, hooks)
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))
    for file in flaky_files[:2]:
        shutil.copy(file, spec.data_dir)
    assert main(["run", "flaky"]) == 0
    shutil.copy(flaky_files[2], spec.data_dir)
    monkeypatch.setenv("CALMOPS_TEST_FIT_FAIL", "1")
    assert main(["run", "flaky"]) == 1
    assert [(b["block"], b["event"]) for b in hooks.bodies("/hook")] == [("3", "drift"), ("3", "breaker_open")]
