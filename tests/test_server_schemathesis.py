"""schemathesis against a live ``calmops serve``: every check, no failure.

The server is started by the test on a copy of the processed demo home, on a free loopback port, and stopped
(its whole process group) at the end. schemathesis reads ``/openapi.json`` and runs its examples, coverage
and fuzzing phases (the stateful phase is off: the API has no resources to create) with every check:
``not_a_server_error``, response schema conformance, ``positive_data_acceptance`` (a request the document
allows gets a 2xx) and ``negative_data_rejection`` (one it forbids gets a 4xx) among them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from processed_home import copy_home, processed_home  # noqa: F401 -- session fixture

EXAMPLES_PER_OPERATION = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, deadline_seconds: float = 120) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, f"calmops serve exited with {server.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {deadline_seconds} s")


def test_schemathesis_finds_no_failure_of_any_check(processed_home, tmp_path):  # noqa: F811
    home = copy_home(processed_home, tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CALMOPS_API_KEY", "CALMOPS_MODEL_KEY",
                                                            "CALMOPS_MODEL_KEY_FILE")}
    calmops = Path(sys.executable).parent / "calmops"
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([str(calmops), "--home", str(home.root), "serve", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", server)
        # the document names the champion's columns, so the first one loads the champion: let that happen
        # here, with a generous timeout, rather than within schemathesis' 10 s for loading a schema
        wait_for(f"http://127.0.0.1:{port}/openapi.json", server)
        run = subprocess.run(
            [str(Path(sys.executable).parent / "st"), "run", f"http://127.0.0.1:{port}/openapi.json",
             "--checks", "all", "--phases", "examples,coverage,fuzzing", "--max-examples",
             str(EXAMPLES_PER_OPERATION), "--workers", "1", "--seed", "13", "--no-color"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    assert "No issues found" in report and "Operations:       4 selected / 4 total" in report, report[-3000:]
