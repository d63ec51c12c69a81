"""What the stores ask of S3, counted in moto's request log (``benchmarks/s3_requests_bench.py`` counts whole
commands the same way): each request a store makes is one a real bucket bills and waits for."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from calmops_dagster.store.storage import StoragePath
from tests.moto_s3 import moto_s3

#: A request line of moto's log: ``"GET /bucket/key HTTP/1.1" 200 -``.
REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP')


def requests(log: Path) -> list[tuple[str, str]]:
    return REQUEST.findall(log.read_text(errors="replace"))


def test_reading_an_object_is_one_get(tmp_path, monkeypatch):
    bucket, log = "requests-bucket", tmp_path / "moto.log"
    with moto_s3(bucket, log_path=log) as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        path = StoragePath("s3", f"{bucket}/{uuid.uuid4().hex}/champion.json")
        path.write_bytes(b"{}")
        before = len(requests(log))
        assert path.read_bytes() == b"{}"
        assert [method for method, _ in requests(log)[before:]] == ["GET"]
