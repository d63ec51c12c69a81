"""The ``calmops`` command line: create, run and inspect pipelines without the UI.

Every command: docs/cli.md. ``CALMOPS_HOME`` is read from the environment (default ``./.calmops``);
``--home`` overrides it. Every command imports what it needs when it runs: this module imports nothing heavier
than the standard library at load, so ``calmops --help`` answers at once (``tests/test_cli_imports.py``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from calmops_dagster.errors import CalmOpsError, StoreUnavailableError
from calmops_dagster.store.model_signing import KEY_HOWTO, MODEL_KEY_ENV, MODEL_KEY_FILE_ENV, model_key
from calmops_dagster.store.paths import CalmOpsHome, check_pipeline_name

log = logging.getLogger("calmops")


def _parse_value(text: str):
    """``k=v`` values are YAML scalars: ``100`` is an int, ``true`` a bool, ``abc`` a string."""
    import yaml

    return yaml.safe_load(text)


def cmd_init(args, home: CalmOpsHome) -> int:
    from calmops_dagster.spec import parse_spec, save_spec

    path = home.spec_path(check_pipeline_name(args.name))
    if path.exists() and not args.force:
        raise CalmOpsError(f"{path} already exists; use --force to overwrite it")
    module, _, class_name = args.model.rpartition(".")
    params = dict(item.split("=", 1) for item in args.param)
    raw = {
        "name": args.name, "type": args.type, "data_dir": str(Path(args.data_dir).resolve()),
        "file_pattern": args.file_pattern, "target": args.target, "block_col": args.block_col,
        "model_spec": {"module": module, "class": class_name,
                       "params": {k: _parse_value(v) for k, v in params.items()}},
    }
    spec = parse_spec({k: v for k, v in raw.items() if v is not None}, path)
    save_spec(spec, path)
    print(f"created {path}")
    if _model_key(home) is None:
        print(f"no model signing key is set: model versions are not signed. To {KEY_HOWTO}")
    return 0


def _model_key(home: CalmOpsHome) -> bytes | None:
    """The model signing key of the environment, refused when its file lies inside this home."""
    return model_key(forbidden=(home.root,))


def _warn_without_key(home: CalmOpsHome) -> None:
    if _model_key(home) is None:
        print(f"WARNING: no model signing key (${MODEL_KEY_ENV} or ${MODEL_KEY_FILE_ENV}): a model version "
              f"is believed on its manifest's word, which anyone who can write {home.root} can forge. To "
              f"{KEY_HOWTO}", file=sys.stderr)


@contextmanager
def _pipeline_runtime(home: CalmOpsHome, name: str):
    """The spec and resolved job of one pipeline, and the local Dagster instance, open for the ``with``
    block: the job is resolved inside it (against that instance's state) and its storage connections are
    closed at the end."""
    from dagster import DagsterInstance, Definitions

    from calmops_dagster.orchestration.instance import prepare_instance
    from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions, job_name
    from calmops_dagster.resources import build_resources
    from calmops_dagster.spec import load_spec

    prepare_instance(home)
    spec = load_spec(home.spec_path(_checked_name(home, name)))
    with DagsterInstance.get() as instance:
        defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
        yield spec, defs.resolve_job_def(job_name(spec)), instance


def cmd_run(args, home: CalmOpsHome) -> int:
    from calmops_dagster.orchestration.headless_runs import run_pending
    from calmops_dagster.orchestration.ingest_registration import register_new_blocks
    from calmops_dagster.orchestration.run_guard import StopSignals, pipeline_lock
    from calmops_dagster.store.metrics_store import MetricsStore
    from calmops_dagster.store.model_store import ModelStore

    name = _checked_name(home, args.name)
    with (pipeline_lock(home.pipeline_dir(name), name, wait=args.wait), StopSignals() as stop,
          _pipeline_runtime(home, name) as (spec, job, instance)):
        metrics, models = MetricsStore(home.metrics_db), ModelStore(home.models_dir(spec.name))
        if leftovers := models.remove_stale_staging():
            print(f"{spec.name}: removed {len(leftovers)} staging folder(s) of a model publish that did not finish "
                  f"({', '.join(leftovers)})")
        _check_champion(spec, models)
        found = register_new_blocks(instance, spec, metrics, models, log, _settle_waiter(spec.name, stop))
        _print_registered(spec.name, found)
        results = run_pending(instance, spec, job, metrics, stop=stop)
        return _report_results(spec, results, stop, instance, metrics, home, found.waiting)


def _check_champion(spec, models) -> None:
    """Refuse to run blocks on a champion that fails its checks (pointer, signature, hash, format): one line
    naming the file and what is wrong, instead of every block's step failing on it with a stack trace."""
    from calmops_dagster.errors import ModelIntegrityError

    version = models.champion_version()
    if version is None:
        return
    try:
        models.load(version, spec.pickle_trusted)  # kept in memory: the blocks' steps load it again for free
    except ModelIntegrityError as exc:
        raise ModelIntegrityError(f"champion {version} of '{spec.name}' cannot be loaded, no block was run: {exc} "
                                  f"(make a sound version the champion: calmops rollback {spec.name} --to VERSION)"
                                  ) from None


#: ``calmops run``'s exit status when every pending block was processed but files of ``data_dir`` are still
#: being written (sysexits' EX_TEMPFAIL): automation can tell "done" (0) from "run again later".
EXIT_WAITING = 75
#: Every command's exit status when the object store (``CALMOPS_STORAGE_URL``) failed after its client's
#: retries (sysexits' EX_UNAVAILABLE): the store's failure, not the data's or the model's; run again once it
#: answers.
EXIT_STORE_UNAVAILABLE = 69


def _settle_waiter(name: str, stop):
    """What a headless run does with files younger than ``settle_seconds``: say so once and wait them out
    (a stop signal ends the wait early)."""
    import time

    def wait(young) -> None:
        count = len(young.seen)
        print(f"{name}: waiting {young.seconds:.1f} s for {count} file{'s' if count != 1 else ''} to settle",
              flush=True)
        deadline = time.monotonic() + young.seconds + 0.05
        while not stop.received and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))

    return wait


def _report_results(spec, results, stop, instance, metrics, home: CalmOpsHome, waiting=()) -> int:
    """Print one line per processed block (and send a failed block's alerts, which its run did not reach);
    the exit code: 0 all ok, 1 a block failed, 128+N stopped by signal N (SIGTERM 143, Ctrl-C 130),
    :data:`EXIT_WAITING` (75) files still being written, :data:`EXIT_STORE_UNAVAILABLE` (69) the object
    store failed (the run stopped at that block)."""
    from calmops_dagster.interfaces.alerts import send_block_alerts
    from calmops_dagster.orchestration.headless_runs import pending_blocks

    name = spec.name
    if not results and not stop.received and not waiting:
        print(f"{name}: nothing pending")
    for result in results:
        status = "ok" if result.success else "FAILED"
        print(f"block {result.block}: {status} in {result.seconds:.1f}s: {result.summary}")
        if not result.success and not result.store_failure:  # the store is down: its alerts cannot be recorded
            send_block_alerts(spec, home, metrics, result.block)
    failed = next((result for result in results if result.store_failure), None)
    if failed is not None:
        left = failed.not_started
        named = f" ({', '.join(left)})" if left else ""
        print(f"{name}: stopped {'after' if failed.success else 'at'} block {failed.block}: the object store "
              f"failed; {len(left)} more block(s) not started{named}: run again once it answers (exit status "
              f"{EXIT_STORE_UNAVAILABLE})", file=sys.stderr)
        return EXIT_STORE_UNAVAILABLE
    if stop.received:
        left = pending_blocks(instance, spec, metrics=metrics)
        print(f"{name}: stopped by {stop.name}" + (f" after block {results[-1].block}" if results else "")
              + f"; {len(left)} block(s) still pending ({', '.join(left) or 'none'}): run again to go on",
              file=sys.stderr)
        return 128 + stop.received
    if not all(r.success for r in results):
        return 1
    if waiting:
        print(f"{name}: {len(waiting)} file(s) not read yet, still being written: run again once they are "
              f"complete (exit status {EXIT_WAITING})", file=sys.stderr)
        return EXIT_WAITING
    return 0


def _print_registered(name: str, found) -> None:
    """What a scan of ``data_dir`` found, one line per kind (files set aside: one line each)."""
    if found.new_blocks:
        print(f"{name}: {len(found.new_blocks)} new block(s): {', '.join(found.new_blocks)}")
    if found.changed_blocks:
        print(f"{name}: new file version(s) for block(s) {', '.join(found.changed_blocks)}: processed again")
    if found.unrecorded:
        print(f"{name}: the store has no record of block(s) {', '.join(found.unrecorded)} being processed (a new "
              "or emptied store, or a run that failed): processing them")
    for line in found.duplicates:
        print(f"{name}: ignored {line}")
    for line in found.waiting:
        print(f"{name}: waiting for {line}")
    for line in found.set_aside:
        print(f"{name}: set aside {line} (see data_dir/quarantine/ and the quarantine table)")
    for line in found.withdrawn:
        print(f"{name}: withdrew block {line}")


def cmd_list(args, home: CalmOpsHome) -> int:
    """Specs are read without importing their model classes and metrics without pandas: it stays quick."""
    from calmops_dagster.spec import load_spec
    from calmops_dagster.store.metrics_store import MetricsStore
    from calmops_dagster.store.model_store import ModelStore

    metrics = MetricsStore(home.metrics_db)
    specs = home.spec_files()
    if not specs:
        print(f"no pipelines under {home.pipelines_dir}")
        return 0
    blocks = metrics.rows("SELECT pipeline, count(*) AS n FROM blocks GROUP BY pipeline")
    processed = {row["pipeline"]: row["n"] for row in blocks}
    print(f"{'pipeline':20} {'type':7} {'blocks':>6} {'champion':9} {'breaker':22} status")
    for path in specs:
        name = path.parent.name
        try:
            spec = load_spec(path, import_model=False)
        except CalmOpsError as exc:
            print(f"{name:20} {'?':7} {'':>6} {'':9} {'':22} BROKEN SPEC: {str(exc).splitlines()[0]}")
            continue
        champion = ModelStore(home.models_dir(name)).champion_version() or "-"
        mode = "prediction-only" if spec.prediction_only else "ok"
        breaker = "-" if spec.prediction_only else _breaker_text(metrics, name)
        print(f"{name:20} {spec.type:7} {processed.get(name, 0):>6} {champion:9} {breaker:22} {mode}")
    return 0


def cmd_demo(args, home: CalmOpsHome) -> int:
    from calmops_dagster.interfaces.demo import create_demo, drop_next, load_demo, story_lines

    check_pipeline_name(args.name)
    if args.next:
        demo = load_demo(home, args.name)
        dropped = drop_next(demo)
        if dropped is None:
            print(f"all {len(demo.files)} block files are already in {demo.data_dir}: the demo is complete")
            return 0
        print(f"copied {dropped.path.name} (block {dropped.block}) into {demo.data_dir}; "
              "the sensor processes it within seconds")
    else:
        demo = create_demo(home, args.name, blocks=args.blocks, rows_per_block=args.rows_per_block,
                           drift_at=args.drift_at, initial=args.initial, seed=args.seed)
        print(f"demo pipeline '{args.name}': spec {home.spec_path(args.name)}")
        print(f"  {len(demo.files)} block files in {demo.blocks_dir} (file number = block number), "
              f"watched folder {demo.data_dir}:")
    for line in story_lines(demo):
        print(line)
    if demo.pending():
        print(f"  drop the next one with: calmops demo --next{_name_flag(args.name)}")
    return 0


def _name_flag(name: str) -> str:
    return "" if name == "demo" else f" --name {name}"


def cmd_rollback(args, home: CalmOpsHome) -> int:
    """Point the champion at ``--to`` (a version of this pipeline, checked and loadable) or the previous one;
    ``--to`` also repairs a pointer that names no version of the pipeline."""
    from calmops_dagster.errors import ModelVersionError
    from calmops_dagster.spec import load_spec
    from calmops_dagster.store.metrics_store import MetricsStore
    from calmops_dagster.store.model_store import ModelStore, now_utc

    spec = load_spec(home.spec_path(_checked_name(home, args.name)))
    store = ModelStore(home.models_dir(args.name))
    try:
        current = store.champion_version()
        previous = [h["version"] for h in store.champion_history() if h["version"] != current]
    except ModelVersionError as exc:
        if args.to is None:
            raise
        current, previous, repaired = None, [], exc
    else:
        repaired = None
    target = args.to or (previous[-1] if previous else None)
    if target is None:
        raise CalmOpsError(f"pipeline '{args.name}' has no previous champion to roll back to")
    if target == current:
        raise CalmOpsError(f"{target} is already the champion of '{args.name}'")
    store.load(target, spec.pickle_trusted)  # refuse a version that fails its checks before switching to it
    store.set_champion(target, block="manual", decision="rolled_back")
    stamp = now_utc()
    MetricsStore(home.metrics_db).replace_block_rows("promotions", args.name, f"manual-{stamp}", [{
        "champion_before": current, "challenger": None, "decision": "rolled_back",
        "reason": f"manual rollback from {current} to {target} (calmops rollback)", "champion_after": target,
        "decided_at": stamp,
    }])
    if repaired is not None:
        print(f"{args.name}: the champion pointer named no version of the pipeline ({repaired})", file=sys.stderr)
    print(f"{args.name}: champion {current or 'none'} -> {target}")
    return 0


def _breaker_text(metrics, name: str) -> str:
    from datetime import UTC, datetime

    from calmops_dagster.steps.circuit_breaker import describe

    return describe(metrics.breaker_state(name), datetime.now(UTC))


def cmd_relaunch(args, home: CalmOpsHome) -> int:
    """Sensors and schedule on, circuit breaker closed, runs requested for pending blocks."""
    from calmops_dagster.orchestration import dagster_control as control
    from calmops_dagster.orchestration.breaker_outcomes import close_breaker
    from calmops_dagster.orchestration.headless_runs import pending_blocks, run_pending
    from calmops_dagster.orchestration.ingest_registration import register_new_blocks
    from calmops_dagster.orchestration.pipeline_defs import job_name
    from calmops_dagster.orchestration.run_guard import StopSignals, pipeline_lock
    from calmops_dagster.store.metrics_store import MetricsStore
    from calmops_dagster.store.model_store import ModelStore

    name = _checked_name(home, args.name)
    with _pipeline_runtime(home, name) as (spec, job, instance):
        metrics = MetricsStore(home.metrics_db)
        close_breaker(metrics, spec)
        print(f"{name}: circuit breaker closed")
        client = control.running_dagster(args.dagster_host, args.dagster_port)
        location = control.find_location(client, name) if client else None
        if location is not None:
            for line in control.start_instigators_graphql(client, location, name, spec.schedule is not None):
                print(f"{name}: {line}")
            _print_registered(name, register_new_blocks(instance, spec, metrics, ModelStore(home.models_dir(name)), log))
            blocks = pending_blocks(instance, spec, metrics=metrics)
            run_ids = control.submit_block_runs(client, location, name, job_name(spec), blocks)
            print(f"{name}: {len(run_ids)} run(s) submitted to dagster dev for pending block(s) {', '.join(blocks)}"
                  if run_ids else f"{name}: nothing pending")
            return 0
        if client is not None:
            print(f"{name}: dagster dev answers but does not know this pipeline (reload its code location?); "
                  "running locally", file=sys.stderr)
        for line in _start_instigators_locally(instance, name, spec.schedule is not None):
            print(f"{name}: {line}")
        with pipeline_lock(home.pipeline_dir(name), name, wait=True), StopSignals() as stop:
            _check_champion(spec, ModelStore(home.models_dir(name)))
            found = register_new_blocks(instance, spec, metrics, ModelStore(home.models_dir(name)), log,
                                        _settle_waiter(name, stop))
            _print_registered(name, found)
            return _report_results(spec, run_pending(instance, spec, job, metrics, stop=stop), stop, instance,
                                   metrics, home, found.waiting)


def _plain(text: str) -> str:
    """Docstring text as help text: reST literals (````x````) become plain words."""
    return text.replace("``", "")


def _start_instigators_locally(instance, name: str, has_schedule: bool) -> list[str]:
    """Start the pipeline's stopped sensors and schedule on the local instance: in its stored state with the
    speed-ups on, with Dagster's CLI (slower: it loads the code location) with them off."""
    from calmops_dagster.speedups import speedups_on

    if speedups_on():
        from calmops_dagster.speedups.instigator_state import start_stopped_instigators

        return start_stopped_instigators(instance, name, has_schedule)
    from calmops_dagster.orchestration.dagster_control import start_instigators_with_dagster_cli

    return start_instigators_with_dagster_cli(instance, name, has_schedule)


def _parse_updates(items: list[str]) -> list[tuple[str, object]]:
    """``["--a.b", "1", "--c=x"]`` -> ``[("a.b", 1), ("c", "x")]`` (values are YAML scalars)."""
    updates, i = [], 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--") or len(item) < 3:
            raise CalmOpsError(f"expected --key value, got '{item}'")
        if "=" in item:
            key, text = item[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                raise CalmOpsError(f"{item} needs a value")
            key, text = item[2:], items[i + 1]
            i += 2
        updates.append((key, _parse_value(text)))
    if not updates:
        raise CalmOpsError("nothing to update: give one or more --key value pairs, e.g. "
                           "--performance.max_relative_drop 0.2")
    return updates


def cmd_update(args, home: CalmOpsHome) -> int:
    """Change spec fields (validated by the spec loader), save atomically, reload the code location."""
    import yaml

    from calmops_dagster.orchestration import dagster_control as control
    from calmops_dagster.spec import parse_spec
    from calmops_dagster.store.atomic import write_text_atomic

    name = _checked_name(home, args.name)
    path = home.spec_path(name)
    raw = yaml.safe_load(path.read_text()) or {}
    changes = []
    updates = _parse_updates(args.changes)
    for key, value in [u for u in updates if u[0] in ("dagster-host", "dagster-port")]:
        setattr(args, key.replace("-", "_"), value)  # REMAINDER also swallows these options
    for key, value in [u for u in updates if u[0] not in ("dagster-host", "dagster-port")]:
        parts = key.split(".")
        if parts[0] == "name":
            raise CalmOpsError("the name of a pipeline cannot be changed (it names its folder and partitions)")
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CalmOpsError(f"'{key}': '{part}' is not a section of the spec")
        changes.append(f"{key}: {node.get(parts[-1], '(default)')!r} -> {value!r}")
        node[parts[-1]] = value
    parse_spec(raw, path)  # SpecError names the file and the field; nothing is written then
    write_text_atomic(path, yaml.safe_dump(raw, sort_keys=False))
    for line in changes:
        print(f"{name}: {line}")
    _reload_code_location(control, args, name)
    return 0


def cmd_reevaluate(args, home: CalmOpsHome) -> int:
    """Re-run drift and performance of processed blocks through the pipeline's ``<name>_reevaluate`` job."""
    from dagster import Definitions

    from calmops_dagster.orchestration.pipeline_defs import build_pipeline_definitions
    from calmops_dagster.orchestration.reevaluation import reevaluation_job_name, run_reevaluation
    from calmops_dagster.resources import build_resources
    from calmops_dagster.steps.reevaluate_block import select_blocks
    from calmops_dagster.store.metrics_store import MetricsStore
    from calmops_dagster.store.model_store import ModelStore

    with _pipeline_runtime(home, args.name) as (spec, _, instance):
        if spec.prediction_only:
            raise CalmOpsError(f"'{spec.name}' is prediction-only: it has no decisions to re-evaluate")
        changes = dict(_parse_updates(args.changes)) if args.changes else {}
        for option in ("blocks", "against"):  # REMAINDER also swallows these options after NAME
            if option in changes:
                setattr(args, option, str(changes.pop(option)))
        if args.against not in (None, "then", "current"):  # a version of this pipeline, before any run starts
            ModelStore(home.models_dir(spec.name)).manifest(args.against)
        metrics = MetricsStore(home.metrics_db)
        processed = metrics.query("SELECT DISTINCT block FROM drift_summary WHERE pipeline = ?", [spec.name],
                                  pipeline=spec.name)
        blocks = select_blocks(args.blocks, processed["block"].tolist())
        if not blocks:
            raise CalmOpsError(f"'{spec.name}' has no processed block to re-evaluate")
        defs = Definitions.merge(build_pipeline_definitions(spec), Definitions(resources=build_resources(home)))
        job = defs.resolve_job_def(reevaluation_job_name(spec))
        against = "" if args.against in (None, "then") else args.against
        reevaluation_id, results = run_reevaluation(instance, spec, job, blocks, against, changes)
        print(f"{spec.name}: re-evaluation {reevaluation_id} of block(s) {', '.join(blocks)} "
              f"(against {args.against or 'the champion of the time'}; changes {changes or 'none'})")
        rows = metrics.query("SELECT * FROM reevaluation_summary WHERE pipeline = ? AND reevaluation_id = ?",
                             [spec.name, reevaluation_id], pipeline=spec.name).set_index("block")
        failed = 0
        for block, outcome in results:
            if not outcome.success or block not in rows.index:
                failed += 1
                errors = [e.step_failure_data.error.message.strip() for e in outcome.all_events if e.is_step_failure]
                print(f"block {block}: FAILED: {'; '.join(errors) or 'failed'}")
                continue
            row = rows.loc[block]

            def verdict(drift, retrain):
                return f"{'drift' if drift else 'no drift'}, {'retrain' if retrain else 'no retrain'}"
            print(f"block {block}: was {verdict(row['original_drift_detected'], row['original_retrain'])} "
                  f"(against {row['original_reference_version']}); now {verdict(row['drift_detected'], row['retrain'])}"
                  f" against {row['against']} (share {row['drift_share']:.2f}): {row['reason']}")
        print(f"rows in reevaluation_summary / reevaluation_results (reevaluation_id = '{reevaluation_id}'); "
              "the original decisions are unchanged")
        return 1 if failed else 0


def _reload_code_location(control, args, name: str) -> None:
    client = control.running_dagster(args.dagster_host, args.dagster_port)
    if client is None:
        print("no dagster dev answers: the change takes effect when it next starts (`calmops dev`)")
        return
    location = control.find_location(client, name)
    locations = [location.location] if location else ["calmops_dagster.definitions"]
    for location_name in locations:
        info = client.graphql_client().reload_repository_location(location_name)
        print(f"reloaded code location {location_name}: {info.status.value}")


def cmd_delete(args, home: CalmOpsHome) -> int:
    """Remove a pipeline; its folder and DuckDB rows are archived unless ``--purge``."""
    from datetime import UTC, datetime

    from calmops_dagster.orchestration import dagster_control as control
    from calmops_dagster.store.metrics_store import MetricsStore
    from calmops_dagster.store.storage import copy_tree, remove_tree

    name = _checked_name(home, args.name)
    folder = home.pipeline_dir(name)
    what = "PERMANENTLY delete" if args.purge else "archive and remove"
    if not args.yes:
        try:
            answer = input(f"{what} pipeline '{name}' ({folder} and its metrics)? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    metrics = MetricsStore(home.metrics_db)
    state = home.state_dir(name)  # the pipeline folder itself unless CALMOPS_STORAGE_URL puts state elsewhere
    if args.purge:
        metrics.delete_pipeline_rows(name)
        if state != folder:
            remove_tree(state)
        shutil.rmtree(folder)
        print(f"{name}: deleted {folder} and its metrics (purged, no archive)")
    else:
        archive = home.state_root / "archive" / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        counts = metrics.export_pipeline_rows(name, archive / "metrics")
        if state == folder:
            archive.mkdir(parents=True, exist_ok=True)
            shutil.move(str(folder), str(archive / "pipeline"))
        else:  # state in object storage, spec and logs local: both into the archive there
            copy_tree(state, archive / "pipeline")
            copy_tree(folder, archive / "pipeline")
            remove_tree(state)
            shutil.rmtree(folder)
        metrics.delete_pipeline_rows(name)  # only once every row is safe in the archive
        print(f"{name}: archived to {archive} (spec, models, blocks, predictions, reports; "
              f"{sum(counts.values())} metric rows in metrics/*.parquet)")
    print("Dagster's run history of the pipeline is kept; a new pipeline under the same name would see its "
          "old blocks as processed (choose a new name)")
    _reload_code_location(control, args, name)
    return 0


def cmd_dev(args, home: CalmOpsHome) -> int:
    from calmops_dagster.orchestration.instance import prepare_instance
    from calmops_dagster.speedups import speedups_on

    _warn_without_key(home)
    prepare_instance(home)
    # A shell without job control starts background jobs with SIGINT ignored, and dagster dev treats
    # SIGTERM like SIGINT: restore both so `kill` (or Ctrl-C) stops webserver, daemon and code server.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Quiet start-up and running: with the speed-ups on, `dagster dev` without its supersession notice (see
    # calmops_dagster/speedups/dagster_dev.py), off, Dagster's own; --log-level warning keeps the daemon's
    # per-tick INFO lines ("Checking for new runs for sensor ...", every few seconds per sensor) off the
    # terminal, while the runs' console logger still prints one INFO line per block decision and the UI keeps
    # every tick.
    dagster = "calmops_dagster.speedups.dagster_dev" if speedups_on() else "dagster"
    command = [sys.executable, "-m", dagster, "dev",
               "-m", "calmops_dagster.definitions", "-h", args.host, "-p", str(args.port), "--log-level", "warning"]
    print(f"DAGSTER_HOME={home.dagster_home}; UI on http://{args.host}:{args.port}")
    os.execvpe(command[0], command, os.environ)
    return 0  # not reached: exec replaces this process


def _checked_name(home: CalmOpsHome, name: str) -> str:
    """A pipeline name that is safe to join to ``CALMOPS_HOME`` and has a spec there."""
    if not home.spec_path(check_pipeline_name(name)).is_file():
        raise CalmOpsError(f"no pipeline '{name}' under {home.pipelines_dir}")
    return name


def cmd_logs(args, home: CalmOpsHome) -> int:
    from calmops_dagster.orchestration.pipeline_logs import LOG_FILE, logs_dir, tail_lines

    name = _checked_name(home, args.name)
    lines = tail_lines(home, name, args.lines)
    if not lines:
        print(f"no log lines yet in {logs_dir(home, name) / LOG_FILE}", file=sys.stderr)
    for line in lines:
        print(line)
    return 0


def cmd_serve(args, home: CalmOpsHome) -> int:
    from calmops_dagster.interfaces.server import serve

    names = [_checked_name(home, args.name)] if args.name else None
    if not args.body_timeout_seconds > 0:
        raise CalmOpsError(f"--body-timeout-seconds must be more than 0, not {args.body_timeout_seconds:g}")
    _warn_without_key(home)
    return serve(home, names, host=args.host, port=args.port, max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                 body_timeout_seconds=args.body_timeout_seconds)


def cmd_report(args, home: CalmOpsHome) -> int:
    from calmops_dagster.interfaces.pipeline_report import write_pipeline_report

    name = _checked_name(home, args.name)
    out = Path(args.out) if args.out else home.reports_dir(name) / f"{name}_report.html"
    path = write_pipeline_report(home, name, out)
    print(f"wrote {path}")
    return 0


def cmd_sql(args, home: CalmOpsHome) -> int:
    from calmops_dagster.store.metrics_store import MetricsStore

    metrics = MetricsStore(home.metrics_db)
    frame = metrics.read_only_query(args.query)
    if args.format == "csv":
        print(frame.to_csv(index=False), end="")
    elif args.format == "json":
        print(frame.to_json(orient="records", date_format="iso"))
    else:
        from calmops_dagster.interfaces.text_table import format_table

        print(format_table(frame) if len(frame) else f"(no rows; columns: {', '.join(frame.columns)})")
    return 0


def cmd_compact(args, home: CalmOpsHome) -> int:
    from calmops_dagster.store.metrics_store import MetricsStore

    name = _checked_name(home, args.name) if args.name else None
    for table, (before, after) in MetricsStore(home.metrics_db).compact(name, days=args.days).items():
        print(f"{table:20} {before:6} -> {after} file(s)")
    return 0


def cmd_migrate(args, home: CalmOpsHome) -> int:
    from calmops_dagster.store.metrics_store import MetricsStore

    converted = MetricsStore(home.metrics_db).migrate()
    if not converted:
        print(f"nothing to convert: {home.metrics_dir} holds Delta tables only")
    for table, (rows, replaced) in converted.items():
        print(f"{table:20} {rows:6} row(s), {replaced} replaced row(s) kept in {table}_history")
    return 0


def cmd_tutorials(args, home: CalmOpsHome) -> int:
    from calmops_dagster.interfaces.tutorials import copy_tutorials

    target = copy_tutorials(Path(args.out), force=args.force)
    print(f"tutorials copied to {target}; start with {target / 'README.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calmops", description=_plain(__doc__.split("\n")[0]))
    parser.add_argument("--home", help="CALMOPS_HOME to use (default: $CALMOPS_HOME or ./.calmops)")
    subparsers = parser.add_subparsers(dest="command", required=True)

    init = subparsers.add_parser("init", help="create a pipeline spec")
    init.add_argument("name")
    init.add_argument("--type", choices=["block", "stream", "ipip"], default="block")
    init.add_argument("--data-dir", required=True)
    init.add_argument("--target", required=True)
    init.add_argument("--block-col")
    init.add_argument("--file-pattern", default="*")
    init.add_argument("--model", default="sklearn.ensemble.RandomForestClassifier",
                      help="dotted class name (sklearn, lightgbm, river or calmops_dagster)")
    init.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                      help="model parameter, repeatable (values are YAML scalars)")
    init.add_argument("--force", action="store_true", help="overwrite an existing spec")
    init.set_defaults(func=cmd_init)

    run = subparsers.add_parser("run", help="process every pending block of a pipeline, in order")
    run.add_argument("name")
    run.add_argument("--wait", action="store_true",
                     help="wait for another `calmops run` of this pipeline to finish instead of exiting")
    run.set_defaults(func=cmd_run)

    subparsers.add_parser("list", help="list pipelines").set_defaults(func=cmd_list)

    demo = subparsers.add_parser("demo", help="generate a drifting dataset and create the demo pipeline")
    demo.add_argument("--name", default="demo")
    demo.add_argument("--blocks", type=int, default=6)
    demo.add_argument("--rows-per-block", type=int, default=400)
    demo.add_argument("--drift-at", type=int, default=4)
    demo.add_argument("--initial", type=int, default=2, help="block files copied into the watched folder")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--next", action="store_true",
                      help="copy the next block file of an existing demo into its watched folder")
    demo.set_defaults(func=cmd_demo)

    rollback = subparsers.add_parser("rollback", help="make a previous champion the champion again")
    rollback.add_argument("name")
    rollback.add_argument("--to", metavar="VERSION", help="version to restore (default: the previous champion)")
    rollback.set_defaults(func=cmd_rollback)

    def add_dagster_address(sub):
        sub.add_argument("--dagster-host", help="dagster dev host (default $CALMOPS_DAGSTER_HOST or 127.0.0.1)")
        sub.add_argument("--dagster-port", type=int, help="dagster dev port (default $CALMOPS_DAGSTER_PORT or 3000)")

    relaunch = subparsers.add_parser("relaunch", help="sensor and schedule on, circuit breaker closed, "
                                     "runs requested for pending blocks")
    relaunch.add_argument("name")
    add_dagster_address(relaunch)
    relaunch.set_defaults(func=cmd_relaunch)

    update = subparsers.add_parser("update", help="change spec fields (--key value, dotted keys) and reload",
                                   usage="calmops update NAME --key value [--key value ...]")
    update.add_argument("name")
    add_dagster_address(update)
    update.add_argument("changes", nargs=argparse.REMAINDER, help="--key value pairs, e.g. "
                        "--performance.max_relative_drop 0.2 --sensor.settle_seconds 10")
    update.set_defaults(func=cmd_update)

    reevaluate = subparsers.add_parser(
        "reevaluate", help="re-run drift and performance of past blocks with another champion and/or settings",
        usage="calmops reevaluate NAME [--blocks 1-5] [--against current|VERSION] [--drift.alpha 0.01 ...]")
    reevaluate.add_argument("name")
    reevaluate.add_argument("--blocks", default=None, help="processed blocks: 1-5, 1,3,7 (default: all)")
    reevaluate.add_argument("--against", default=None, help="current, a model version, or (default) the "
                            "champion in force when each block was first processed")
    reevaluate.add_argument("changes", nargs=argparse.REMAINDER, help="--key value setting changes, "
                            "drift.* and performance.* only, e.g. --drift.alpha 0.01")
    reevaluate.set_defaults(func=cmd_reevaluate)

    delete = subparsers.add_parser("delete", help="remove a pipeline (archived under CALMOPS_HOME/archive "
                                   "unless --purge)")
    delete.add_argument("name")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.add_argument("--purge", action="store_true", help="delete instead of archiving (not recoverable)")
    add_dagster_address(delete)
    delete.set_defaults(func=cmd_delete)

    dev = subparsers.add_parser("dev", help="start dagster dev (UI, daemon, sensors) on this home")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(func=cmd_dev)

    logs = subparsers.add_parser("logs", help="print the latest lines of a pipeline's log")
    logs.add_argument("name")
    logs.add_argument("-n", "--lines", type=int, default=50, help="how many lines (default 50)")
    logs.set_defaults(func=cmd_logs)

    serve = subparsers.add_parser("serve", help="serve champions' predictions over HTTP (FastAPI)")
    serve.add_argument("name", nargs="?", help="serve only this pipeline (default: every pipeline)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="bind address (default 127.0.0.1; any other needs $CALMOPS_API_KEY)")
    serve.add_argument("--port", type=int, default=5001)
    serve.add_argument("--max-body-mb", type=float, default=10.0, help="largest request body (default 10)")
    serve.add_argument("--body-timeout-seconds", type=float, default=30.0,
                       help="a request body not all there this long after its headers gets 408 (default 30)")
    serve.set_defaults(func=cmd_serve)

    report = subparsers.add_parser("report", help="write a self-contained HTML report of a pipeline")
    report.add_argument("name")
    report.add_argument("--out", help="HTML file (default CALMOPS_HOME/pipelines/NAME/reports/NAME_report.html)")
    report.set_defaults(func=cmd_report)

    sql = subparsers.add_parser("sql", help="read-only query over the metric tables (one SELECT)")
    sql.add_argument("query", help='e.g. "SELECT block, decision FROM promotions WHERE pipeline = \'demo\'"')
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table")
    sql.set_defaults(func=cmd_sql)

    compact = subparsers.add_parser("compact", help="optimize and vacuum the metric tables (Delta Lake)")
    compact.add_argument("name", nargs="?", help="a pipeline (accepted; Delta optimizes each table as a whole)")
    compact.add_argument("--days", type=float, default=None,
                         help="keep replaced rows this many days (default: $CALMOPS_METRICS_RETENTION_DAYS or 90)")
    compact.set_defaults(func=cmd_compact)
    migrate = subparsers.add_parser("migrate", help="convert a metric store of Parquet segments to Delta tables")
    migrate.set_defaults(func=cmd_migrate)

    tutorials = subparsers.add_parser("tutorials", help="copy the runnable tutorials to a folder")
    tutorials.add_argument("--out", default="calmops-tutorials", help="target folder (default ./calmops-tutorials)")
    tutorials.add_argument("--force", action="store_true", help="overwrite files of an existing folder")
    tutorials.set_defaults(func=cmd_tutorials)

    from calmops_dagster.generators.cli import add_generate_command

    add_generate_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    home = CalmOpsHome.from_env(args.home)
    try:
        _model_key(home)  # a key file inside the home is refused before anything is loaded or signed
        return args.func(args, home)
    except StoreUnavailableError as exc:  # one line naming the store; its retries are spent
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE_UNAVAILABLE
    except CalmOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader stopped reading (`calmops list | head -1`): stop quietly, as Unix tools do, rather than with
        # a traceback; what is left to print goes to /dev/null, so Python's flush at exit does not fail too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE  # the status a shell reports for a tool stopped by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
