"""A throw-away S3-compatible server for tests: moto's ``moto_server`` (dev extra ``moto[server]``).

Started as a subprocess on a free port of 127.0.0.1, polled until it answers, stopped (its whole process
group) afterwards. Everything it stores lives in its memory and goes with it. It implements S3's
conditional writes (``If-None-Match: *``, ``If-Match: <etag>``), which the storage seam relies on.

:class:`RestartableS3` stops and starts the server on the same port: an outage of the store, after which
the endpoint answers again with a new, empty bucket (what moto keeps in memory goes with its process).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from live_processes import free_port, stop_group

#: Dummy credentials: moto accepts any; botocore needs some to sign requests.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def moto_s3(bucket: str = "calmops-test", timeout: float = 60.0, log_path: Path | None = None):
    """Start moto's S3 server with ``bucket`` in it; yield the environment that points clients at it
    (``AWS_ENDPOINT_URL`` and dummy credentials); stop it after. ``log_path``: where moto's log (a line per
    request) is kept, instead of a temporary file."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = Path(sys.executable).parent / "moto_server"
    # a file, not a pipe: moto logs every request, and a full pipe would stall it
    with open(log_path, "w+b") if log_path else tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        yield from _serve(proc, log, endpoint, bucket, timeout)


def _serve(proc, log, endpoint: str, bucket: str, timeout: float):
    try:
        _wait_ready(proc, log, endpoint, bucket, timeout)
        yield {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
    finally:
        stop_group(proc, timeout=20)


def _wait_ready(proc, log, endpoint: str, bucket: str, timeout: float) -> None:
    """Poll the server until it answers, then create ``bucket`` in it."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"moto_server exited {proc.returncode}: {log.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not answer on {endpoint} within {timeout:.0f} s") from None
            time.sleep(0.2)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)


class RestartableS3:
    """moto's S3 server on a fixed port that a test stops (the store is gone: connections are refused) and
    starts again (the endpoint answers, with ``bucket`` new and empty). A context manager: started on entry,
    stopped on exit; :attr:`env` points clients at it."""

    def __init__(self, bucket: str = "calmops-test", timeout: float = 60.0):
        self.bucket, self.timeout = bucket, timeout
        self.endpoint = f"http://127.0.0.1:{free_port()}"
        self.env = {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}
        self._proc = None
        self._log = None

    def start(self) -> None:
        server = Path(sys.executable).parent / "moto_server"
        port = self.endpoint.rsplit(":", 1)[1]
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 -- kept open while the server runs; closed by stop()
        self._proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", port], stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        _wait_ready(self._proc, self._log, self.endpoint, self.bucket, self.timeout)

    def stop(self) -> None:
        if self._proc is not None:
            stop_group(self._proc, timeout=20)
            self._log.close()
            self._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
