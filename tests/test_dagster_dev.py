"""End to end with the real `dagster dev` (webserver, daemon, sensor, run launcher) on a temporary home.

A block file copied into the watched folder must be processed with nobody clicking, and stopping
`dagster dev` must leave no process behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def processed_blocks(db: Path) -> set[str]:
    if not db.exists():
        return set()
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            return {row[0] for row in con.execute("SELECT block FROM promotions").fetchall()}
    except duckdb.Error:  # a run holds the write lock, or tables are not created yet
        return set()


@pytest.fixture
def dev_server(tmp_path):
    """`calmops demo` then `calmops dev` in its own process group; the whole group is stopped after."""
    home = tmp_path / "home"
    env = {**os.environ, "CALMOPS_HOME": str(home)}
    calmops = [sys.executable, "-m", "calmops_dagster.cli"]
    subprocess.run([*calmops, "demo", "--initial", "0", "--blocks", "3", "--rows-per-block", "200"],
                   env=env, check=True, capture_output=True)
    port = free_port()
    with open(tmp_path / "dagster_dev.log", "w") as log:
        # `calmops dev` restores default SIGINT/SIGTERM handling before it execs dagster dev
        process = subprocess.Popen([*calmops, "dev", "--port", str(port)], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        pgid = os.getpgid(process.pid)
        try:
            yield home, port, process
        finally:
            os.killpg(pgid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
                wait_for(lambda: not group_alive(pgid), 30, "dagster dev's children to exit", 0.5)
            finally:
                if group_alive(pgid):
                    os.killpg(pgid, signal.SIGKILL)
    assert not group_alive(pgid), "dagster dev left processes behind"


def test_dropped_block_file_is_processed_unattended(dev_server):
    home, port, process = dev_server

    def server_up():
        assert process.poll() is None, "dagster dev exited early"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(server_up, 120, "the webserver to answer /server_info")
    blocks_dir, data_dir = home / "demo" / "demo" / "blocks", home / "demo" / "demo" / "data"
    first = min(blocks_dir.glob("*.csv"))
    shutil.copy(first, data_dir / first.name)
    wait_for(lambda: "1" in processed_blocks(home / "metrics.duckdb"), 240, "block 1 to be processed")
    assert (home / "pipelines" / "demo" / "models" / "champion.json").is_file()
    assert (home / "dagster" / "dagster.yaml").is_file()
