# ruff: noqa: N999 -- numbered tutorial scripts are run, never imported
"""Tutorial 5: the prediction server, and a promotion picked up without a restart.

``calmops serve NAME`` serves the pipeline's champion over HTTP (FastAPI + uvicorn, 127.0.0.1:5001 by
default; binding elsewhere needs ``CALMOPS_API_KEY``, sent by clients as ``X-API-Key``). ``POST
/predict/NAME`` takes JSON records or ``{"columns": [...], "data": [[...]]}`` and answers predictions, class
probabilities and the champion version. When a block promotes a new champion, the server loads it on the
next request, before switching: no restart, no failed request. Docs: http://127.0.0.1:PORT/docs.

    python 05_prediction_server.py [--home DIR]
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from _common import calmops, deliver, tutorial_home

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks

home = tutorial_home(__doc__.splitlines()[0])

# 1. A block pipeline with one champion (blocks 1-2; drift comes later).
frame = make_drifting_blocks(n_blocks=4, rows_per_block=300, drift_at=3, seed=7)
staged = write_blocks(frame, home / "incoming", block_col="block")
data_dir = home / "data"
data_dir.mkdir()
deliver(staged[:2], data_dir)
calmops("init", "demo", "--data-dir", str(data_dir), "--target", "y", "--block-col", "block",
        "--param", "n_estimators=30", "--param", "random_state=0")
calmops("run", "demo")

# 2. Start the server (what `calmops serve demo --port PORT` does in a shell).
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = subprocess.Popen([sys.executable, "-m", "calmops_dagster.interfaces.cli", "serve", "demo", "--port", str(port)],
                          env={**os.environ, "CALMOPS_HOME": str(home)}, start_new_session=True)
base = f"http://127.0.0.1:{port}"


def request(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


try:
    for _ in range(300):
        try:
            request("/health")
            break
        except OSError:
            time.sleep(0.1)
    rows = frame[frame["block"] == 4].head(3).drop(columns=["y", "block"])

    status, answer = request("/predict/demo", rows.to_dict(orient="records"))
    print(status, answer)
    status, answer = request("/predict/demo", {"columns": list(rows.columns), "data": rows.values.tolist()})
    print("columns/data form:", status, answer["predictions"], answer["model_version"])

    # 3. What a bad request gets: a 4xx saying what is wrong.
    print(request("/predict/demo", [{"x1": "high"}]))
    print(request("/predict/nope", [{"x1": 1.0}]))

    # 4. Drift arrives, a challenger is promoted; the running server picks it up.
    deliver(staged[2:], data_dir)
    calmops("run", "demo")
    status, answer = request("/predict/demo", rows.to_dict(orient="records"))
    print("after the promotion:", status, answer["model_version"], answer["predictions"])
    print(request("/pipelines/demo")[1]["last_drift"])
finally:
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
