"""An object store that fails (CALMOPS_STORAGE_URL=s3://..., moto's server stopped, or answering 503): each
command says so in one line naming the store, a run marks the block that failed and stops, transient errors
are retried a bounded number of times first, and once the store answers again what is pending is decided
from the store's own record (a new, empty bucket: every block again, from the first)."""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from calmops_dagster.errors import StoreUnavailableError
from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.generators.writer import write_blocks
from calmops_dagster.interfaces.cli import EXIT_STORE_UNAVAILABLE, main
from calmops_dagster.store.object_store import STORE_ATTEMPTS
from calmops_dagster.store.storage import StoragePath
from tests.moto_s3 import RestartableS3

BUCKET, PREFIX, NAME = "calmops-outage", "team/prod", "outage"
STORE = f"s3://{BUCKET}/{PREFIX}"


@pytest.fixture
def s3_home(tmp_path, monkeypatch):
    """(store, data_dir, block files): a restartable moto server, CALMOPS_HOME and CALMOPS_STORAGE_URL in the
    environment, and three block files (drift at block 3) in a staging folder."""
    frame = make_drifting_blocks(n_blocks=3, rows_per_block=150, drift_at=3, seed=3)
    files = sorted(write_blocks(frame, tmp_path / "staging", block_col="block"), key=lambda p: p.name)
    data = tmp_path / "data"
    data.mkdir()
    with RestartableS3(BUCKET) as store:
        for key, value in {**store.env, "CALMOPS_HOME": str(tmp_path / "home"),
                           "CALMOPS_STORAGE_URL": STORE}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        yield store, data, files


def _init(data, model: str = "sklearn.ensemble.RandomForestClassifier", *params: str) -> None:
    assert main(["init", NAME, "--type", "block", "--data-dir", str(data), "--target", "y", "--block-col",
                 "block", "--model", model, *(arg for p in params for arg in ("--param", p))]) == 0


def _drop(files, data) -> None:
    old = time.time() - 60  # copied a minute ago: settled
    for path in files:
        os.utime(shutil.copy(path, data), (old, old))


def _calmops(*args: str, env: dict | None = None, wait: bool = True):
    """``calmops ARGS`` in its own process (as in production, and free of earlier tests' Dagster state)."""
    command = [sys.executable, "-m", "calmops_dagster.interfaces.cli", *args]
    if not wait:
        return subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    return subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=900, check=False)


def _block_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("block ")]


def _assert_one_store_line(text: str, store) -> str:
    """``text`` (a command's stderr) is one line naming the store, its endpoint and the failure; returned."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert STORE in lines[0] and store.endpoint in lines[0] and "cannot connect" in lines[0], lines[0]
    return lines[0]


def test_list_sql_and_run_say_in_one_line_that_the_store_is_gone(s3_home, capsys):
    store, data, files = s3_home
    _init(data)
    _drop(files[:1], data)
    assert main(["sql", "SELECT count(*) AS n FROM blocks"]) == 0  # this process has read the store once
    capsys.readouterr()
    store.stop()

    for command in (["list"], ["sql", "SELECT block, rows FROM blocks"]):
        assert main(command) == EXIT_STORE_UNAVAILABLE, command
        out, err = capsys.readouterr()
        assert out == "" and "Traceback" not in err
        line = _assert_one_store_line(err, store)
        assert line.startswith("error: object store ")

    run = _calmops("run", NAME)
    assert run.returncode == EXIT_STORE_UNAVAILABLE, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    _assert_one_store_line(run.stderr, store)


def test_a_run_marks_the_block_the_store_failed_and_stops(s3_home, tmp_path):
    store, data, files = s3_home
    _init(data, "calmops_dagster.learning.testing_models.ControlledTree", "max_depth=5", "random_state=0")
    _drop(files, data)
    marker = tmp_path / "training-started"
    proc = _calmops("run", NAME, env={"CALMOPS_TEST_FIT_SIGNAL": str(marker), "CALMOPS_TEST_FIT_SLEEP": "3"},
                    wait=False)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():  # block 1 trains the first champion: take the store away meanwhile
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.1)
        store.stop()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_STORE_UNAVAILABLE, out + err
    assert "Traceback" not in out + err
    lines = _block_lines(out)
    assert len(lines) == 1 and lines[0].startswith("block 1: FAILED"), out
    assert STORE in lines[0] and store.endpoint in lines[0], lines[0]
    stopped = [line for line in err.splitlines() if line.strip()]
    assert len(stopped) == 1 and "stopped at block 1" in stopped[0] and "2 more block(s)" in stopped[0], err


def test_after_the_store_comes_back_empty_every_block_is_processed_from_the_first(s3_home, tmp_path):
    store, data, files = s3_home
    _init(data, "sklearn.ensemble.RandomForestClassifier", "n_estimators=10", "random_state=0")
    _drop(files[:2], data)
    first = _calmops("run", NAME)
    assert first.returncode == 0, first.stdout + first.stderr
    assert [line.split(":")[0] for line in _block_lines(first.stdout)] == ["block 1", "block 2"]

    store.stop()
    store.start()  # the endpoint answers again, with a new, empty bucket: nothing of blocks 1-2 is in it
    _drop(files[2:], data)
    again = _calmops("run", NAME)
    assert again.returncode == 0, again.stdout + again.stderr
    assert [line.split(":")[0] for line in _block_lines(again.stdout)] == ["block 1", "block 2", "block 3"]
    assert "first champion" in _block_lines(again.stdout)[0]
    assert "new file version" not in again.stdout  # no file changed: the store lost its record of them
    sql = _calmops("sql", "SELECT block, late FROM drift_summary ORDER BY block", "--format", "csv")
    assert sql.stdout.split() == ["block,late", "1,False", "2,False", "3,False"], sql.stdout + sql.stderr

    shutil.rmtree(tmp_path / "home" / "dagster")  # this machine's run history gone, the store intact
    fresh = _calmops("run", NAME)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert _block_lines(fresh.stdout) == [] and f"{NAME}: nothing pending" in fresh.stdout, fresh.stdout


class FlakyS3:
    """An HTTP proxy in front of moto's server that answers the first ``failures`` requests with S3's
    ``503 ServiceUnavailable`` and forwards the others; counts what it received."""

    def __init__(self, upstream: str, failures: int):
        self.upstream = upstream.removeprefix("http://")
        self.failures, self.received = failures, 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    proxy.received += 1
                    fail = proxy.received <= proxy.failures
                if fail:
                    payload = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ServiceUnavailable</Code>"
                               b"<Message>Please reduce your request rate.</Message></Error>")
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                connection = http.client.HTTPConnection(proxy.upstream, timeout=30)
                connection.request(self.command, self.path, body=body, headers=dict(self.headers))
                response = connection.getresponse()
                payload = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "server", "date"):
                        self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                connection.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_transient_store_errors_are_retried_then_fail_in_one_line(s3_home, monkeypatch):
    store, _data, _files = s3_home
    path = StoragePath("s3", f"{BUCKET}/{PREFIX}/probe.txt")
    path.write_bytes(b"hello")

    flaky = FlakyS3(store.endpoint, failures=STORE_ATTEMPTS - 1)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", flaky.endpoint)  # a new client, through the proxy
        assert path.read_bytes() == b"hello"  # its first request was refused 3 times; the 4th got through
        assert flaky.received > STORE_ATTEMPTS - 1

        flaky.received, flaky.failures = 0, 10**6  # it keeps failing: given up after the bounded attempts
        with pytest.raises(StoreUnavailableError) as failure:
            path.read_bytes()
        assert flaky.received == STORE_ATTEMPTS
        message = str(failure.value)
        assert "\n" not in message and STORE in message and flaky.endpoint in message, message
        assert "unavailable: " in message and "HTTP 503" in message and f"{STORE_ATTEMPTS} attempts" in message, message
    finally:
        flaky.close()
