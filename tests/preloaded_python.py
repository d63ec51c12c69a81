"""Python scripts run as ``python SCRIPT ARGS`` runs them, in processes forked from one warm interpreter.

A fresh interpreter per tutorial script spent about 4-5 s of CPU importing Dagster, pandas, scikit-learn,
DuckDB and skops before the script's first line did anything. :class:`PreloadedPython` starts one helper
process that imports them once (:data:`PRELOADED`, then the warm run launcher's ``preload()``: a run's modules
and skops' trusted list), then forks a child per script, the way the warm run launcher forks run workers. Each
child is its own process and runs the script as the interpreter would: module ``__main__``, ``sys.argv`` the
script and its arguments, the script's folder first on ``sys.path``, the given working directory, its own
standard output and error. The script's imports and code run as written; only modules already imported by the
helper are found in ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

#: What the tutorials import at the top or at their first ``calmops`` command (imported once, in the helper).
PRELOADED = ("dagster", "pandas", "duckdb", "sklearn.ensemble", "lightgbm", "calmops_dagster.interfaces.cli",
             "calmops_dagster.orchestration.headless_runs",
             "calmops_dagster.orchestration.ingest_registration", "calmops_dagster.orchestration.pipeline_defs",
             "calmops_dagster.generators.drifting_blocks", "calmops_dagster.generators.writer", "calmops_dagster.resources")

HELPER = r'''
import importlib, json, os, runpy, sys, traceback

def run_script(request):
    # in the forked child: the script's streams, folder, arguments and module __main__, as `python SCRIPT`
    # sets them; its exit code, as the interpreter would give it
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.chdir(request["cwd"])
    sys.argv = [request["script"], *request["args"]]
    sys.path[0] = os.path.dirname(os.path.abspath(request["script"]))
    try:
        runpy.run_path(request["script"], run_name="__main__")
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0

for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
from calmops_dagster.speedups.warm_run_worker import preload
preload()  # a run's modules and skops' trusted list too; checks that no thread runs (forking is then safe)
print("ready", flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        sys.exit(run_script(json.loads(line)))  # the interpreter's own exit: atexit handlers, flushed streams
    print(f"pid {pid}", flush=True)
    print(f"exit {os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}", flush=True)
'''


class PreloadedPython:
    """The helper process; :meth:`run` runs one script in a child forked from it. One script at a time."""

    def __init__(self, preloaded=PRELOADED):
        # without DAGSTER_HOME, preload() opens no instance: a script's instance is the one its own home gives
        env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
        self._helper = subprocess.Popen([sys.executable, "-c", HELPER, json.dumps(list(preloaded))],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._pending = b""
        if self._read_line(600) != "ready":
            self.close()
            raise RuntimeError(f"the preloading helper did not start (exit code {self._helper.returncode})")

    def run(self, script: str, args: list[str], cwd: Path, output: Path, timeout: float = 600):
        """Run ``script`` with ``args`` in ``cwd``; ``(exit code, stdout, stderr)``. The streams are kept in
        ``output`` (a folder). A child still running after ``timeout`` seconds is killed and fails the run."""
        output.mkdir(parents=True, exist_ok=True)
        request = {"script": script, "args": args, "cwd": str(cwd),
                   "stdout": str(output / "stdout.txt"), "stderr": str(output / "stderr.txt")}
        self._helper.stdin.write(json.dumps(request).encode() + b"\n")
        self._helper.stdin.flush()
        answer = self._read_line(60)
        if answer is None or not answer.startswith("pid "):
            raise RuntimeError(f"the preloading helper did not fork {script} (exit code {self._helper.poll()})")
        pid = int(answer.removeprefix("pid "))
        answer = self._read_line(timeout)
        if answer is None:
            os.kill(pid, signal.SIGKILL)
            self._read_line(60)
            raise AssertionError(f"{script} still running after {timeout}s: killed")
        code = int(answer.removeprefix("exit "))
        return code, (output / "stdout.txt").read_text(), (output / "stderr.txt").read_text()

    def _read_line(self, timeout: float) -> str | None:
        """The helper's next line, or ``None`` when none came within ``timeout`` seconds or it exited."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._helper.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self._helper.stdout.fileno(), 4096)
            if not chunk:
                return None
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        if self._helper.stdin:
            self._helper.stdin.close()
        self._helper.wait(timeout=60)
