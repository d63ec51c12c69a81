"""CPU of a block's run in-process, and the DuckDB views the metric store makes for it: this tree against a
baseline version of ``calmops_dagster/store/metrics_store.py`` (a git ref, default ``main``), alternating.

Each side runs in a fresh process on a fresh home: a demo block pipeline (300-row blocks, drift at block 3)
through ``calmops run``'s in-process path (register the blocks, then execute each pending partition), then
one more block in a new process, as a run worker of ``dagster dev`` does. The baseline side loads the
baseline's ``metrics_store.py`` in place of this tree's before anything imports it, so the two sides differ
in that module only. Per side and block: CPU seconds (user + system, every thread) of the blocks' runs, of
which in the metric store's reads (``MetricsStore._read``: views, file lists, queries), and the views made
(``CREATE VIEW`` statements the store sent to DuckDB). Medians over the rounds.

    python benchmarks/store_views_bench.py [--blocks 4] [--rounds 3] [--baseline main]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIEW_CREATED = re.compile(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\s+)?VIEW\b", re.IGNORECASE)


def side(root: Path, blocks: list[str], module: str | None) -> dict:
    """In this process: run ``blocks`` of the pipeline under ``root`` (made by :func:`prepare` when absent);
    CPU seconds and views made."""
    if module:  # the baseline's metrics_store, before anything imports this tree's
        import importlib.util

        spec = importlib.util.spec_from_file_location("calmops_dagster.store.metrics_store", module)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = loaded
        spec.loader.exec_module(loaded)
    import logging
    from contextlib import contextmanager

    from dagster import DagsterInstance, Definitions

    from calmops_dagster.orchestration.ingest_registration import register_new_blocks
    from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
    from calmops_dagster.resources import build_resources
    from calmops_dagster.spec import load_spec
    from calmops_dagster.store import metrics_store
    from calmops_dagster.store.model_store import ModelStore
    from calmops_dagster.store.paths import CalmOpsHome

    made = [0]
    real = metrics_store._memory

    class Counting:
        def __init__(self, cursor):
            self._cursor = cursor

        def execute(self, sql, *args, **kwargs):
            made[0] += len(VIEW_CREATED.findall(sql))
            return self._cursor.execute(sql, *args, **kwargs)

        def __getattr__(self, name):
            return getattr(self._cursor, name)

    @contextmanager
    def counting(where=None):
        with real(where) as cursor:
            yield Counting(cursor)

    metrics_store._memory = counting
    reads = [0.0]
    real_read = metrics_store.MetricsStore._read

    def timed_read(self, sql, pipeline, read):
        start = time.process_time()
        try:
            return real_read(self, sql, pipeline, read)
        finally:
            reads[0] += time.process_time() - start

    metrics_store.MetricsStore._read = timed_read
    home = CalmOpsHome(root / "calmops")
    os.environ["CALMOPS_HOME"] = str(home.root)
    spec = load_spec(home.spec_path("demo"))
    storage = root / "instance"
    storage.mkdir(exist_ok=True)
    with DagsterInstance.local_temp(str(storage)) as instance:
        defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
        metrics = metrics_store.MetricsStore(home.metrics_db)
        register_new_blocks(instance, spec, metrics, ModelStore(home.models_dir("demo")), logging.getLogger("bench"))
        job = defs.resolve_job_def(job_name(spec))
        made[0], reads[0] = 0, 0.0
        start = time.process_time()
        for block in blocks:
            result = job.execute_in_process(instance=instance, partition_key=block, raise_on_error=True)
            assert result.success
        cpu = time.process_time() - start
    return {"cpu": cpu, "reads": reads[0], "views": made[0], "blocks": len(blocks)}


def prepare(root: Path, n_blocks: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import block_spec_dict

    from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
    from calmops_dagster.generators.writer import write_blocks
    from calmops_dagster.spec import parse_spec, save_spec
    from calmops_dagster.store.paths import CalmOpsHome

    home = CalmOpsHome(root / "calmops")
    frame = make_drifting_blocks(n_blocks=n_blocks, rows_per_block=300, drift_at=3, seed=7)
    write_blocks(frame, root / "data", block_col="block")
    save_spec(parse_spec(block_spec_dict("demo", root / "data"), home.spec_path("demo")), home.spec_path("demo"))


def run_side(label: str, module: str | None, n_blocks: int, work: Path) -> dict:
    root = Path(tempfile.mkdtemp(prefix=label.replace(" ", "-") + "-", dir=work))
    subprocess.run([sys.executable, __file__, "--prepare", str(root), "--blocks", str(n_blocks)], check=True)
    figures = {}
    for kind, blocks in (("calmops run", range(1, n_blocks)), ("one run, fresh process", [n_blocks])):
        out = subprocess.run([sys.executable, __file__, "--side", str(root), "--module", module or "",
                              "--run", ",".join(map(str, blocks))], check=False, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{label}, {kind}: failed\n{out.stderr[-3000:]}")
        figures[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default="main")
    parser.add_argument("--prepare")
    parser.add_argument("--side")
    parser.add_argument("--module", default="")
    parser.add_argument("--run", default="")
    args = parser.parse_args()
    if args.prepare:
        prepare(Path(args.prepare), args.blocks)
        return
    if args.side:
        print(json.dumps(side(Path(args.side), args.run.split(","), args.module or None)))
        return
    work = Path(tempfile.mkdtemp(prefix="store-views-bench-"))
    baseline = work / "baseline_metrics_store.py"
    baseline.write_text(subprocess.run(["git", "-C", str(ROOT), "show",
                                        f"{args.baseline}:calmops_dagster/store/metrics_store.py"],
                                       check=True, capture_output=True, text=True).stdout)
    rows = []
    for round_ in range(args.rounds):
        for label, module in ((args.baseline, str(baseline)), ("this tree", None)):
            load = os.getloadavg()[0]
            figures = run_side(label, module, args.blocks, work)
            for kind, f in figures.items():
                per_block = [f[k] / f["blocks"] for k in ("cpu", "reads", "views")]
                rows.append((round_, label, kind, *per_block, load))
                print(f"round {round_} {label:>10} {kind:<24} CPU s/block {per_block[0]:.3f}  of which store reads "
                      f"{per_block[1]:.3f}  views made/block {per_block[2]:.1f}  load {load:.1f}", flush=True)
    print("\nmedian over rounds:")
    for kind in ("calmops run", "one run, fresh process"):
        for label in (args.baseline, "this tree"):
            cpu, reads, views = (sorted(r[i] for r in rows if r[1] == label and r[2] == kind) for i in (3, 4, 5))
            print(f"  {kind:<24} {label:>10}: CPU s/block {cpu[len(cpu) // 2]:.3f}  of which store reads "
                  f"{reads[len(reads) // 2]:.3f}  views made/block {views[len(views) // 2]:.1f}")


if __name__ == "__main__":
    main()
