"""schemathesis against a live ``calmops serve``: every check, no failure.

The server is started by the test on a copy of the processed demo home, on a free loopback port, and stopped
(its whole process group) at the end. schemathesis reads ``/openapi.json`` and runs its examples, coverage
and fuzzing phases (the stateful phase is off: the API has no resources to create) with every check:
``not_a_server_error``, response schema conformance, ``positive_data_acceptance`` (a request the document
allows gets a 2xx) and ``negative_data_rejection`` (one it forbids gets a 4xx) among them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from live_processes import answers_200, free_port, stop_group, wait_for
from processed_home import copy_home

EXAMPLES_PER_OPERATION = 100


def test_schemathesis_finds_no_failure_of_any_check(processed_home, tmp_path):
    home = copy_home(processed_home, tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CALMOPS_API_KEY", "CALMOPS_MODEL_KEY",
                                                            "CALMOPS_MODEL_KEY_FILE")}
    calmops = Path(sys.executable).parent / "calmops"
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([str(calmops), "--home", str(home.root), "serve", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        health = f"http://127.0.0.1:{port}/health"
        wait_for(lambda: answers_200(health, server), 120, health, interval=0.5)
        # the document names the champion's columns, so the first one loads the champion: let that happen
        # here, with a generous timeout, rather than within schemathesis' 10 s for loading a schema
        openapi = f"http://127.0.0.1:{port}/openapi.json"
        wait_for(lambda: answers_200(openapi, server), 120, openapi, interval=0.5)
        run = subprocess.run(
            [str(Path(sys.executable).parent / "st"), "run", f"http://127.0.0.1:{port}/openapi.json",
             "--checks", "all", "--phases", "examples,coverage,fuzzing", "--max-examples",
             str(EXAMPLES_PER_OPERATION), "--workers", "1", "--seed", "13", "--no-color"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    finally:
        stop_group(server)
        log.close()
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    assert "No issues found" in report and "Operations:       4 selected / 4 total" in report, report[-3000:]
