"""No process forks after touching delta-rs: its runtime does not survive a fork (a forked writer hangs).

The one place that forks without exec is the warm run launcher's process
(:mod:`calmops_dagster.speedups.warm_run_worker`): its preloading must leave delta-rs untouched, and it
refuses to fork once a Delta table was opened in it. Runs through `dagster dev` (whose run workers are forked
from it and write the Delta tables) are tested end to end in ``tests/test_dagster_dev.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys

WARM = """
import io, sys
from calmops_dagster.speedups import warm_run_worker
from calmops_dagster.store import delta_tables
from calmops_dagster.store.metrics_store import MetricsStore

warm_run_worker.preload()
print("after preload:", delta_tables.used_in_this_process())
MetricsStore(sys.argv[1]).replace_block_rows("blocks", "p", "1", [{"rows": 1}])
answers = io.StringIO()
warm_run_worker.serve(["some-run-args\\n"], answers)
print("answer:", answers.getvalue().strip())
"""


def test_the_warm_process_preloads_without_delta_rs_and_never_forks_after_using_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    result = subprocess.run([sys.executable, "-c", WARM, str(tmp_path / "metrics.duckdb")], env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "after preload: False" in lines
    answer = next(line for line in lines if line.startswith("answer:"))
    assert answer.startswith("answer: error: the warm process has used delta-rs"), result.stdout


def test_a_process_that_never_opened_a_table_has_not_used_delta_rs():
    code = ("from calmops_dagster.store import delta_tables, metrics_store\n"
            "import calmops_dagster.resources\n"
            "print(delta_tables.used_in_this_process())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.strip() == "False"


FORKED_WRITER = """
import os, sys
from calmops_dagster.speedups import warm_run_worker
from calmops_dagster.store.metrics_store import MetricsStore

warm_run_worker.preload()
print("library loaded by preload:", "deltalake._internal" in sys.modules)
pid = os.fork()
if pid == 0:
    store = MetricsStore(sys.argv[1])
    store.replace_block_rows("blocks", "p", "1", [{"rows": 1}])
    os._exit(0 if len(store.query("SELECT * FROM blocks")) == 1 else 3)
print("child exit code:", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_the_warm_process_loads_delta_rs_for_its_run_workers_which_write_tables(tmp_path):
    """delta-rs's 130 MB library is loaded once, in the warm process (loading starts no runtime), and a run
    worker forked from it writes and reads a Delta table."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    result = subprocess.run([sys.executable, "-c", FORKED_WRITER, str(tmp_path / "metrics.duckdb")], env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "library loaded by preload: True" in result.stdout.splitlines(), result.stdout
    assert "child exit code: 0" in result.stdout.splitlines(), result.stdout + result.stderr[-3000:]
