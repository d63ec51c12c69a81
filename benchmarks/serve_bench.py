"""Prediction server throughput and latency on loopback, beside the model's own predict time (the floor).

A real uvicorn process (`calmops serve demo`) serves the champion of a small block pipeline (random forest,
30 trees, 5 features incl. one categorical). One keep-alive HTTP client sends requests one after another:
1-row and 1,000-row JSON record bodies. The floor is `predict` + `predict_proba` of the same model on the
same rows, in this process, as a DataFrame (what the server calls after parsing and checking the body).

    .venv/bin/python benchmarks/serve_bench.py [--requests-1 500] [--requests-1000 100]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.interfaces.cli import main as calmops
from calmops_dagster.store.model_store import ModelStore

FEATURES = ["x1", "x2", "x3", "x4", "segment"]


def build_home(root: Path) -> Path:
    home = root / "home"
    os.environ["CALMOPS_HOME"] = str(home)
    data = root / "data"
    frame = make_drifting_blocks(n_blocks=2, rows_per_block=400, drift_at=9, seed=0)
    for path in write_blocks(frame, data, block_col="block"):
        os.utime(path, (0, 0))
    assert calmops(["init", "demo", "--data-dir", str(data), "--target", "y", "--block-col", "block",
                    "--param", "n_estimators=30", "--param", "random_state=0"]) == 0
    assert calmops(["run", "demo"]) == 0
    return home


def timings(fn, n: int) -> np.ndarray:
    fn()  # warm-up
    out = np.empty(n)
    for i in range(n):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out


def line(label: str, t: np.ndarray) -> str:
    return (f"{label:34} {len(t) / t.sum():9.1f} req/s   p50 {np.percentile(t, 50) * 1e3:8.2f} ms   "
            f"p99 {np.percentile(t, 99) * 1e3:8.2f} ms")


def run(n1: int, n1000: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = build_home(Path(tmp))
        store = ModelStore(home / "pipelines" / "demo" / "models")
        model = store.load(store.champion_version())
        rows = make_drifting_blocks(n_blocks=1, rows_per_block=1000, drift_at=9, seed=5)[FEATURES]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "calmops_dagster.interfaces.cli", "serve", "demo", "--port",
                                   str(port)], env={**os.environ, "CALMOPS_HOME": str(home)},
                                  stdout=subprocess.DEVNULL, start_new_session=True)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                for _ in range(300):
                    try:
                        client.get("/health")
                        break
                    except httpx.TransportError:
                        time.sleep(0.1)
                print(f"python {sys.version.split()[0]}, uvicorn single worker, loopback, sequential keep-alive client")
                for size, n in ((1, n1), (1000, n1000)):
                    frame = rows.head(size)
                    records = frame.to_dict(orient="records")

                    def call(records=records, size=size):
                        response = client.post("/predict/demo", json=records)
                        assert response.status_code == 200 and len(response.json()["predictions"]) == size

                    def floor(frame=frame):
                        model.predict(frame)
                        model.predict_proba(frame)

                    served, bare = timings(call, n), timings(floor, n)
                    print(line(f"server, {size}-row requests", served))
                    print(line(f"model predict+proba, {size} rows", bare))
                    print(f"{'':34} server overhead at p50: {np.percentile(served, 50) / np.percentile(bare, 50):.2f}x"
                          f" the floor; {size * len(served) / served.sum():,.0f} rows/s served")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests-1", type=int, default=500)
    parser.add_argument("--requests-1000", type=int, default=100)
    args = parser.parse_args()
    run(args.requests_1, args.requests_1000)
