"""Helpers for tests that start a real process (dagster dev, calmops serve, PostgreSQL, moto): a free port,
a poll with a deadline, whether a process group is still alive, and stopping one."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def answers_200(url: str, process, timeout: float = 60) -> bool:
    """Whether ``url`` answers 200; fails at once when the ``process`` serving it has exited."""
    assert process.poll() is None, f"the server for {url} exited with {process.returncode}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` is still running."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def stop_group(process, timeout: float = 30) -> None:
    """Stop ``process`` and every process of its group (started with ``start_new_session=True``).

    SIGTERM goes to ``process`` first, alone: `dagster dev` then stops its webserver, daemon and code servers
    in order. Signalled together, a code server may exit before `dagster dev`'s code-server manager stops
    watching it, and the manager starts a new one, which waits 45 s for a heartbeat before it exits (seen:
    the suite's `dagster dev` module spent 53 s in its teardown). What is left of the group once ``process``
    has exited gets SIGTERM, then SIGKILL when it has not exited within ``timeout`` seconds.
    """
    pgid = process.pid  # a session leader's group id is its pid
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGTERM)
        wait_for(lambda: not group_alive(pgid), timeout, "the process group to exit", 0.5)
    except (subprocess.TimeoutExpired, AssertionError):
        pass
    finally:
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
            process.wait()
