"""A throw-away ``redis-server`` for tests (Debian's package; ``make redis``, run by ``make test``, installs it):
on a free port of 127.0.0.1, without persistence, stopped (its process group) afterwards."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path

from live_processes import free_port, stop_group, wait_for


def redis_answers(port: int) -> bool:
    return b"PONG" in subprocess.run(["redis-cli", "-p", str(port), "ping"], check=False,
                                     capture_output=True).stdout


@contextmanager
def redis_server(log_path: Path, port: int | None = None):
    """A redis-server on ``port`` (default: a free one) of 127.0.0.1; yields its URL."""
    port = port or free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            wait_for(lambda: redis_answers(port), 30, "redis-server", 0.2)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop_group(proc, timeout=10)
