"""What the stores ask of S3, counted in moto's request log (``benchmarks/s3_requests_bench.py`` counts whole
commands the same way): each request a store makes is one a real bucket bills and waits for."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from urllib.parse import unquote

from calmops_dagster.store.storage import StoragePath
from tests.live_processes import wait_for
from tests.moto_s3 import moto_s3

#: A request line of moto's log: ``"GET /bucket/key HTTP/1.1" 200 -``.
REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP')


def requests(log: Path) -> list[tuple[str, str]]:
    """``(method, what)`` of each request: ``/bucket/key``, or for a listing ``/bucket/prefix`` it lists."""
    found = []
    for method, path in REQUEST.findall(log.read_text(errors="replace")):
        bucket, _, query = path.partition("?")
        listed = re.search(r"(?:^|&)prefix=([^&]*)", query)
        found.append((method, f"{bucket}/{unquote(listed.group(1))}" if listed else bucket))
    return found


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


def test_opening_a_store_on_s3_creates_no_table_and_binds_its_catalog_unread(tmp_path, monkeypatch):
    """A table is created by its first write, and the catalog's views are typed by the schema, so opening a
    store (tables checked, catalog built) sends no request under any table's folder."""
    from calmops_dagster.store.metrics_store import MetricsStore

    bucket, log = "requests-bucket", tmp_path / "moto.log"
    with moto_s3(bucket, log_path=log) as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        data = StoragePath("s3", f"{bucket}/{uuid.uuid4().hex}/metrics")
        store = MetricsStore(tmp_path / "metrics.duckdb", data_dir=data)
        before = len(requests(log))
        store._ensure_ready()
        opened = requests(log)[before:]
        assert (tmp_path / "metrics.duckdb").is_file()
        under = {path.removeprefix(f"/{data.path}/") for _, path in opened if path.startswith(f"/{data.path}/")}
        assert under <= {"", "_tables.json"}  # the metrics folder listed, the marker written: no table
        before = len(requests(log))
        store.replace_block_rows("blocks", "p", "1", [{"rows": 1}])
        written = {path.removeprefix(f"/{data.path}/").split("/")[0]
                   for _, path in requests(log)[before:] if path.startswith(f"/{data.path}/")}
        assert written == {"blocks"}


def test_calmops_run_of_two_blocks_keeps_to_its_s3_request_budget():
    """Issue 35's budget: no more than 503 requests for ``calmops run`` of two 150-row blocks."""
    import sys

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    from s3_requests_bench import requests_per_command

    assert requests_per_command(root, 150, commands=("init", "run"))["run"] <= 503


def test_two_homes_writing_one_bucket_lose_no_row_and_see_each_others_tables(tmp_path):
    """Two processes, each its own CALMOPS_HOME and catalog, write the same tables of one bucket at once (and
    each a table the other never writes): every row arrives, and each home's catalog shows the other's rows
    and the table only the other created."""
    import os
    import subprocess
    import sys

    import duckdb

    from calmops_dagster.store.metrics_store import MetricsStore
    from calmops_dagster.store.storage import reader_filesystem, storage_root

    # each writer, its imports done and its store open, says it is ready and waits for the go: the writes at
    # one moment, as soon as both can write
    code = """
import sys, time
from pathlib import Path
from calmops_dagster.store.metrics_store import MetricsStore
home, go, own = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
store = MetricsStore(home + '/metrics.duckdb')
store._ensure_ready()
Path(home + '.ready').touch()
while not go.exists():
    time.sleep(0.005)
[store.replace_block_rows('blocks', home, str(b), [{'rows': b}]) for b in range(5)]
[store.append_rows('data_files', [{'pipeline': home, 'file': f'{b}.csv'}]) for b in range(5)]
store.append_rows(own, [{'pipeline': home}])
"""
    with moto_s3("two-homes") as env:
        url = f"s3://two-homes/{uuid.uuid4().hex}"
        homes, go = [tmp_path / "a", tmp_path / "b"], tmp_path / "go"
        writers = [subprocess.Popen([sys.executable, "-c", code, str(home), str(go), own],
                                    env={**os.environ, **env, "CALMOPS_HOME": str(home), "CALMOPS_STORAGE_URL": url})
                   for home, own in zip(homes, ("quarantine", "alerts"), strict=True)]

        def ready() -> bool:
            assert not [w.returncode for w in writers if w.poll() is not None], "a writer ended before the go"
            return all(Path(f"{home}.ready").exists() for home in homes)

        wait_for(ready, 600, "both writers to be ready", 0.05)
        go.touch()
        assert [w.wait(timeout=600) for w in writers] == [0, 0]
        os.environ.update(env)
        try:
            os.environ["CALMOPS_STORAGE_URL"] = url
            for home in homes:
                store = MetricsStore(home / "metrics.duckdb")
                with duckdb.connect(str(store.path), read_only=True) as con:  # the catalog, as a client reads it
                    con.register_filesystem(reader_filesystem(storage_root(home)))
                    assert con.execute("SELECT count(*), count(DISTINCT pipeline) FROM blocks").fetchone() == (10, 2)
                    assert con.execute("SELECT count(*) FROM data_files").fetchone() == (10,)
                    assert con.execute("SELECT pipeline FROM quarantine").fetchall() == [(str(homes[0]),)]
                    assert con.execute("SELECT pipeline FROM alerts").fetchall() == [(str(homes[1]),)]
        finally:
            for key in (*env, "CALMOPS_STORAGE_URL"):
                os.environ.pop(key, None)
