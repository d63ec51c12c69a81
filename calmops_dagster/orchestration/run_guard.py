"""One headless run of a pipeline at a time, and a clean stop on SIGTERM / Ctrl-C.

``calmops run`` (and ``calmops relaunch`` without ``dagster dev``) executes blocks in its own process,
outside the instance's run queue, so two of them (an overlapping cron job) would process the same blocks
twice. :func:`pipeline_lock` takes an exclusive ``fcntl`` lock on ``pipelines/<name>/.run.lock`` for the
whole invocation: a second invocation exits with a message naming the holder, or waits with ``--wait``. The
kernel drops the lock when the holder dies, so a killed run never leaves a stale lock behind.

:class:`StopSignals` turns SIGTERM and SIGINT into a request to stop: a block's run executes in a worker
thread (Dagster's interrupt handlers are only installed on the main thread, so no step is cut halfway),
the main thread notes the signal, and once the run has finished no next block starts.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self, TypeVar

from calmops_dagster.errors import CalmOpsError

T = TypeVar("T")
LOCK_FILE = ".run.lock"
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PipelineBusyError(CalmOpsError):
    """Another process holds the pipeline's run lock."""


@contextmanager
def pipeline_lock(pipeline_dir: Path, name: str, wait: bool = False, say=print) -> Iterator[None]:
    """Hold the run lock of pipeline ``name`` (``pipeline_dir/.run.lock``) for the ``with`` block.

    Raises :class:`PipelineBusyError` when another process holds it, unless ``wait`` (then ``say`` is told
    once and the call blocks until the lock is free).
    """
    path = Path(pipeline_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            if not wait:
                raise PipelineBusyError(f"pipeline '{name}' is already being processed ({holder}); this run "
                                        "does nothing. Run it again later, or pass --wait to wait for it")
            say(f"{name}: waiting for the run in progress ({holder}) to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


class StopSignals:
    """SIGTERM / SIGINT as a stop request, noticed between blocks (use as a context manager)."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self) -> Self:
        for signo in SIGNALS:
            self._previous[signo] = signal.signal(signo, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for signo, handler in self._previous.items():
            signal.signal(signo, handler)

    def _note(self, signo, _frame) -> None:
        self.received = signo

    @property
    def name(self) -> str | None:
        return signal.Signals(self.received).name if self.received else None

    def finish(self, work: Callable[[], T]) -> T:
        """Run ``work`` (a block's run) to its end whatever signal arrives meanwhile, and return its result.

        It runs in a worker thread: Dagster installs its interrupt handlers only on the main thread, so it
        never turns a signal into an error inside a step, while the main thread waits here and records the
        signal (:attr:`received`) for the caller to stop before the next block.
        """
        outcome: dict = {}

        def target():
            try:
                outcome["value"] = work()
            except BaseException as exc:  # noqa: BLE001 -- handed back to the caller's thread
                outcome["error"] = exc

        worker = threading.Thread(target=target, name="calmops-block-run")
        worker.start()
        while worker.is_alive():
            worker.join(timeout=0.2)  # short waits: the main thread runs the signal handler in between
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
