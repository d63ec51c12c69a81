"""A run reads a block's recorded context from the store once; its later steps get what it read or wrote."""

from __future__ import annotations

from conftest import block_spec_dict

from calmops_dagster.spec import parse_spec
from calmops_dagster.steps.block_context import read_context, settings_of, write_context
from calmops_dagster.store.metrics_store import MetricsStore


def test_a_run_asks_the_store_once_then_gets_what_it_read_or_wrote(tmp_path, monkeypatch):
    metrics = MetricsStore(tmp_path / "metrics.duckdb")
    spec = parse_spec(block_spec_dict("demo", tmp_path / "data"), tmp_path / "demo" / "pipeline.yaml")
    queries = []
    query = metrics.query
    monkeypatch.setattr(metrics, "query", lambda *args, **kwargs: queries.append(args) or query(*args, **kwargs))

    assert read_context(metrics, spec, "1", "run-1") is None and len(queries) == 1  # nothing recorded yet
    assert read_context(metrics, spec, "1", "run-1") is None and len(queries) == 1
    written = write_context(metrics, spec, "1", "run-1", champion_version="v0001", settings=settings_of(spec))
    kept = read_context(metrics, spec, "1", "run-1")
    assert len(queries) == 1
    kept.settings["drift"] = "changed by a caller"  # a copy: what the run wrote is unchanged
    stored = read_context(metrics, spec, "1", "run-2")  # another run: from the store
    assert len(queries) == 2
    assert stored == read_context(metrics, spec, "1", "run-2") == read_context(metrics, spec, "1")
    assert read_context(metrics, spec, "1", "run-1") == stored  # as the store has it: written, then read back
    assert stored.champion_version == written.champion_version == "v0001"
    assert stored.settings == settings_of(spec) and stored.recorded_at is not None

    decided = write_context(metrics, spec, "1", "run-2", stored, decided=True)
    assert read_context(metrics, spec, "1", "run-2").decided and decided.decided
    count = len(queries)
    assert read_context(metrics, spec, "2", "run-2") is None and len(queries) == count + 1  # another block
    assert read_context(metrics, spec, "1", "run-3").decided  # the store holds what run-2 wrote
