"""Alerts through the real `dagster dev` (sensor, daemon, run launcher, run-failure sensor) to a real local HTTP
receiver: a two-block demo (block 2 drifts and promotes) and a pipeline whose training fails, whose
`breaker_open` comes from the run-failure sensor. Each alert arrives once; no webhook URL reaches a log.

Its own module: one life of `dagster dev` (about a minute), apart from test_dagster_dev.py's story.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter

import yaml
from live_processes import free_port, wait_for
from test_dagster_dev import demo_files, make_demo, running_dev, server_up
from webhook_receiver import WebhookReceiver

TOKEN = "T0K3N-d3v"


def _add_alerts(spec_path, webhook: str, **extra) -> None:
    raw = yaml.safe_load(spec_path.read_text())
    raw["alerts"] = {"webhooks": [webhook], "retry_seconds": 0}
    raw.update(extra)
    spec_path.write_text(yaml.safe_dump(raw))


def test_dagster_dev_sends_each_alert_once(tmp_path):
    home, port = tmp_path / "home", free_port()
    make_demo(home, "--blocks", "2", "--drift-at", "2")
    make_demo(home, "--name", "flaky", "--blocks", "1")
    with WebhookReceiver() as hooks:
        _add_alerts(home / "pipelines" / "demo" / "pipeline.yaml", hooks.url(f"/demo/{TOKEN}"))
        _add_alerts(home / "pipelines" / "flaky" / "pipeline.yaml", hooks.url(f"/flaky/{TOKEN}"),
                    model_spec={"module": "calmops_dagster.learning.testing_models", "class": "ControlledTree",
                                "params": {"random_state": 0}},
                    circuit_breaker={"max_failures": 1, "backoff_minutes": 60})
        log = tmp_path / "dev.log"
        with running_dev(home, port, log, CALMOPS_TEST_FIT_FAIL="1") as process:  # only ControlledTree fails
            wait_for(lambda: server_up(process, port), 300, "the webserver to answer /server_info")
            for pipeline in ("demo", "flaky"):
                files, data = demo_files(home, pipeline)
                for path in files:
                    shutil.copy(path, data / path.name)
            wait_for(lambda: ("2", "promotion") in [(b["block"], b["event"]) for b in hooks.bodies(f"/demo/{TOKEN}")],
                     600, "demo's block 2 alerts")
            wait_for(lambda: hooks.bodies(f"/flaky/{TOKEN}"), 300, "flaky's breaker_open from the run-failure sensor")
            time.sleep(12)  # the run-failure sensor ticks again (every 10 s): nothing more may arrive

        demo = [(b["block"], b["event"]) for b in hooks.bodies(f"/demo/{TOKEN}")]
        flaky = hooks.bodies(f"/flaky/{TOKEN}")
    assert demo[0] == ("1", "promotion") and ("2", "drift") in demo
    assert demo.index(("2", "drift")) < demo.index(("2", "promotion"))
    assert not [key for key, count in Counter(demo).items() if count > 1]  # once each
    assert [(b["block"], b["event"]) for b in flaky] == [("1", "breaker_open")]
    assert "injected training failure" in flaky[0]["summary"] and flaky[0]["text"].startswith("calmops breaker_open")
    logged = log.read_text() + "".join(p.read_text() for p in (home / "pipelines").glob("*/logs/pipeline.log"))
    assert "alert promotion of block 1 sent to webhook sha256:" in logged
    assert TOKEN not in logged
