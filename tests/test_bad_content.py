"""Content that is not a table is set aside by the run that first reads it; only a table cut short waits for
``sensor.incomplete_wait_seconds`` (issue 30, point 2)."""

from __future__ import annotations

import os
import random
import shutil
import time

import pandas as pd
import pytest

from calmops_dagster.errors import CorruptFileError
from calmops_dagster.ingest.block_data import incomplete_reason, not_a_table_reason, read_data_file
from calmops_dagster.interfaces.cli import EXIT_WAITING, main
from calmops_dagster.store.metrics_store import MetricsStore


@pytest.fixture(autouse=True)
def _own_dagster_home(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # calmops run points it at CALMOPS_HOME/dagster


def age(path, seconds=60):
    """Settled (``settle_seconds`` is 0) but younger than ``incomplete_wait_seconds`` (600): the age at which
    a file cut short is waited for."""
    old = time.time() - seconds
    os.utime(path, (old, old))
    return path


def not_tables(block_file, folder) -> dict[str, bytes]:
    """Bytes that are no table, each under a table's name: random bytes, a Parquet file with the wrong magic,
    Latin-1 text (its last line cut short, which made it look like a CSV still being written)."""
    frame = pd.read_csv(block_file)
    parquet = folder / "valid.parquet"
    frame.to_parquet(parquet)
    latin = frame.head(50).assign(segment="café").to_csv(index=False).encode("latin-1")
    return {"random.csv": random.Random(0).randbytes(4096),
            "magic.parquet": b"PARX" + parquet.read_bytes()[4:],
            "latin.csv": latin[:-5]}


def test_content_that_is_not_a_table_is_set_aside_in_the_run_that_reads_it(demo_spec, home, block_files, tmp_path,
                                                                            capsys):
    age(shutil.copy(block_files[0], demo_spec.data_dir / "good.csv"))
    for name, data in not_tables(block_files[1], tmp_path).items():
        (demo_spec.data_dir / name).write_bytes(data)
        age(demo_spec.data_dir / name)

    assert main(["run", "demo"]) == 0  # nothing is left waiting
    out = capsys.readouterr().out
    assert "waiting for" not in out
    assert "set aside random.csv: not CSV text: " in out
    assert "set aside magic.parquet: not a Parquet file: it starts with b'PARX', not b'PAR1'" in out
    assert "set aside latin.csv: not CSV text: byte 0xe9 at offset " in out
    reasons = MetricsStore(home.metrics_db).query("SELECT file, reason FROM quarantine ORDER BY file")
    assert [os.path.basename(f) for f in reasons["file"]] == ["latin.csv", "magic.parquet", "random.csv"]
    assert sorted(p.name for p in (demo_spec.data_dir / "quarantine").iterdir()) == [
        "latin.csv", "magic.parquet", "random.csv"]
    blocks = MetricsStore(home.metrics_db).query("SELECT block, rows, source_file FROM blocks")
    assert list(blocks.itertuples(index=False, name=None)) == [("1", 300, "good.csv")]  # not magic.parquet's


def cut_short(block_file, folder) -> dict[str, bytes]:
    """Tables still being written: a CSV cut in the middle of a UTF-8 character, a Parquet file with its
    header and not its footer, a Parquet file with half its magic."""
    frame = pd.read_csv(block_file).assign(segment="é")
    text = frame.to_csv(index=False).encode()
    parquet = folder / "valid.parquet"
    frame.to_parquet(parquet)
    return {"mid_char.csv": text[: text.rindex("é".encode()) + 1],
            "no_footer.parquet": parquet.read_bytes()[:-100],
            "half_magic.parquet": b"PA"}


def test_a_table_cut_short_waits(demo_spec, home, block_files, tmp_path, capsys):
    for name, data in cut_short(block_files[0], tmp_path).items():
        (demo_spec.data_dir / name).write_bytes(data)
        age(demo_spec.data_dir / name)

    assert main(["run", "demo"]) == EXIT_WAITING
    out = capsys.readouterr().out
    assert sorted(line.split()[3] for line in out.splitlines() if "waiting for" in line) == [
        "half_magic.parquet", "mid_char.csv", "no_footer.parquet"]
    assert not (demo_spec.data_dir / "quarantine").exists()


@pytest.mark.parametrize(("data", "suffix", "reason"), [
    (b"\x89PNG\r\n\x1a\n", ".csv", "not CSV text: byte 0x89 at offset 0 is not UTF-8"),
    (b"x,y\n1,\x002\n", ".csv", "not CSV text: a NUL byte at offset 6 (binary data)"),
    (b"x,y\n1,caf\xe9\n", ".csv", "not CSV text: byte 0xe9 at offset 9 is not UTF-8"),
    (b"x,y\n", ".parquet", "not a Parquet file: it starts with b'x,y\\n', not b'PAR1'"),
    (b"PAR0 ... PAR1", ".pq", "not a Parquet file: it starts with b'PAR0', not b'PAR1'"),
])
def test_bytes_that_are_no_table_are_named_and_never_waited_for(tmp_path, data, suffix, reason):
    assert not_a_table_reason(data, suffix) == reason
    assert incomplete_reason(data, suffix) is None
    path = tmp_path / f"f{suffix}"
    path.write_bytes(data)
    with pytest.raises(CorruptFileError) as caught:
        read_data_file(path)
    assert caught.value.reason == reason


@pytest.mark.parametrize(("data", "suffix", "reason"), [
    ("x,y\n1,café".encode()[:-1], ".csv", "its last line has no newline"),
    (b"x,y\n1,2\n3", ".csv", "its last line has no newline"),
    (b"PAR1\x15\x04", ".parquet", "the Parquet footer is missing"),
    (b"PAR", ".parquet", "the Parquet footer is missing"),
])
def test_tables_cut_short_are_waited_for(data, suffix, reason):
    assert not_a_table_reason(data, suffix) is None
    assert incomplete_reason(data, suffix) == reason
