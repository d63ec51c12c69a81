"""CALMOPS_STORAGE_URL=s3://bucket/prefix end to end, against moto's S3 server: init, run, list, sql,
report, serve and delete work, and no pipeline state is written to the local disk."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import boto3
import pandas as pd
from live_processes import answers_200, free_port, stop_group, wait_for

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.interfaces.cli import main
from tests.moto_s3 import moto_s3

BUCKET, PREFIX, NAME = "calmops-e2e", "team/prod", "s3demo"
#: What may exist under the local CALMOPS_HOME: the spec, the run lock, the pipeline log, the Dagster
#: instance, the metrics catalog (views only) and its lock files. No model, block, piece, prediction,
#: report or metric row.
LOCAL_ALLOWED = re.compile(rf"^(pipelines/{NAME}/(pipeline\.yaml|\.run\.lock|logs/pipeline\.log.*)"
                           r"|dagster/.*|metrics\.duckdb(\.wal)?|\.locks/.*)$")


def _objects(s3, prefix: str) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [item["Key"][len(prefix):] for item in page.get("Contents", [])]
    return keys


def _local_files(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _serve_one_prediction(env: dict, row: dict) -> tuple[dict, int]:
    """Start ``calmops serve`` on a free port, predict one row, fetch block 2's report; stop it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "calmops_dagster.interfaces.cli", "serve", NAME, "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers_200(f"{base}/health", proc, timeout=5), 180, "calmops serve's /health", 0.5)
        request = urllib.request.Request(f"{base}/predict/{NAME}", data=json.dumps([row]).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        with urllib.request.urlopen(f"{base}/reports/{NAME}/2.html", timeout=60) as response:
            report_status = response.status
        return answer, report_status
    finally:
        stop_group(proc)


def test_every_command_works_on_s3_and_leaves_no_state_on_the_local_disk(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    data = tmp_path / "data"
    data.mkdir()
    frame = make_drifting_blocks(n_blocks=2, rows_per_block=150, drift_at=2, seed=3)
    old = time.time() - 60  # copied a minute ago: stable for the default settle time
    for path in write_blocks(frame, tmp_path / "staging", block_col="block"):
        os.utime(shutil.copy(path, data), (old, old))
    with moto_s3(BUCKET) as aws:
        for key, value in {**aws, "CALMOPS_HOME": str(home),
                           "CALMOPS_STORAGE_URL": f"s3://{BUCKET}/{PREFIX}"}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        s3 = boto3.client("s3")

        assert main(["init", NAME, "--type", "block", "--data-dir", str(data), "--target", "y",
                     "--block-col", "block", "--model", "sklearn.ensemble.RandomForestClassifier",
                     "--param", "n_estimators=10", "--param", "random_state=0"]) == 0
        # its own process, as in production (and free of Dagster state earlier in-process tests leave behind)
        run = subprocess.run([sys.executable, "-m", "calmops_dagster.interfaces.cli", "run", NAME],
                             env=dict(os.environ), capture_output=True, text=True, timeout=900, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        assert [line.split(":")[0] for line in run.stdout.splitlines() if line.startswith("block ")] == [
            "block 1", "block 2"]
        assert main(["list"]) == 0
        assert re.search(rf"{NAME}\s.*v000[12]", capsys.readouterr().out)
        assert main(["sql", "SELECT block, rows FROM blocks ORDER BY block", "--format", "csv"]) == 0
        assert capsys.readouterr().out.split() == ["block,rows", "1,150", "2,150"]
        assert main(["report", NAME]) == 0
        assert f"s3://{BUCKET}/{PREFIX}/pipelines/{NAME}/reports/{NAME}_report.html" in capsys.readouterr().out

        row = frame.drop(columns=["y", "block"]).iloc[0].to_dict()
        answer, report_status = _serve_one_prediction(dict(os.environ), row)
        assert answer["n_rows"] == 1 and answer["model_version"].startswith("v000")
        assert report_status == 200

        state = _objects(s3, f"{PREFIX}/pipelines/{NAME}/")
        for expected in ("models/v0001/manifest.json", "models/v0001/model.skops", "models/champion.json",
                         "blocks/1.parquet", "predictions/2.parquet", "reports/2.html", f"reports/{NAME}_report.html"):
            assert expected in state, (expected, state)
        assert any(key.startswith("incoming/pieces/2/") for key in state)
        pointer = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/pipelines/{NAME}/models/champion.json")
                             ["Body"].read())
        assert pointer["version"] == pointer["history"][-1]["version"]
        metrics = _objects(s3, f"{PREFIX}/metrics/")
        assert "drift_results/_delta_log/00000000000000000000.json" in metrics  # a Delta table in the bucket
        assert f"_breaker/{NAME}/head.json" in metrics  # the circuit breaker's state, beside its rows
        assert not [f for f in _local_files(home) if not LOCAL_ALLOWED.match(f)], _local_files(home)
        assert not list(home.rglob("*.parquet")) and not list(home.rglob("*.skops"))

        assert main(["delete", NAME, "--yes"]) == 0  # archived in the bucket, spec included
        archived = _objects(s3, f"{PREFIX}/archive/")
        assert any(key.endswith("/pipeline/models/v0001/manifest.json") for key in archived)
        assert any(key.endswith("/pipeline/pipeline.yaml") for key in archived)
        assert any(key.endswith("/metrics/blocks.parquet") for key in archived)
        assert _objects(s3, f"{PREFIX}/pipelines/{NAME}/") == []
        assert f"_breaker/{NAME}/head.json" not in _objects(s3, f"{PREFIX}/metrics/")
        blocks = pd.read_parquet(f"s3://{BUCKET}/{PREFIX}/archive/" + next(k for k in archived if k.endswith("/blocks.parquet")))
        assert sorted(blocks["block"]) == ["1", "2"]
