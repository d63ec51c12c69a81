"""Load the block: exactly the file versions the ingest record holds for it, schema-checked and recorded.

Stream pipelines load the one file version accepted under the partition's key. A prediction-only pipeline
drops the target column; a pipeline with delayed labels joins the labels landed so far. The block's row in
``blocks`` is written; the assets' IO manager keeps its rows, as ``blocks/<block>.parquet``, for later
retraining (``window``, ``replay_mix``). When the rows differ from those the block was first processed with,
they are a new version of the block: processed as new data, not as a rerun.
"""

from __future__ import annotations

from datetime import UTC, datetime

from calmops_dagster.ingest.block_data import frame_sha256, incoming_dir, load_stream_block
from calmops_dagster.ingest.ingest_record import block_records, block_version, load_recorded_block
from calmops_dagster.ingest.labels import attach_labels, read_label_files
from calmops_dagster.steps import circuit_breaker
from calmops_dagster.steps.block_context import write_context
from calmops_dagster.steps.results import LoadedBlock
from calmops_dagster.steps.step_context import StepContext
from calmops_dagster.store.model_store import now_utc


def load_block(ctx: StepContext) -> LoadedBlock:
    """Load, check and record the rows of ``ctx.block``."""
    spec, block, db = ctx.spec, ctx.block, ctx.metrics
    champion = ctx.recorded.champion_version if ctx.rerun else ctx.models.champion_version()
    expected = ctx.models.manifest(champion).get("feature_kinds") if champion else None
    folder = ctx.paths.state_dir(spec.name)
    if spec.type == "stream":  # exactly the file version accepted under this key
        rows = load_stream_block(spec, block, incoming_dir(folder), expected)
        version = block_version([sha for _file, sha, _rows in block_records(db, spec, block)])
    else:  # exactly the file versions the ingest record holds for this block
        rows, version = load_recorded_block(spec, db, folder, block)
    frame = rows.frame
    if spec.prediction_only and spec.target and spec.target in frame.columns:
        ctx.log.info(f"prediction-only pipeline: column '{spec.target}' is ignored")
        frame = frame.drop(columns=[spec.target])
    count = None
    if spec.labels is not None and spec.target not in frame.columns:  # delayed labels: join what landed
        labels = read_label_files(spec.labels.dir, spec.labels.id_col, spec.target)
        attached, count = attach_labels(frame, labels.frame, spec.labels.id_col, spec.target)
        frame = frame if attached is None else attached
        db.replace_block_rows("labels", spec.name, block, [{
            **count.as_row(), "label_files": ",".join(labels.files), "computed_at": now_utc()}])
        if not count.complete:
            ctx.log.info(f"block {block}: {count.missing} of {count.rows} rows have no label yet; "
                         "processed without labels")
    features = spec.feature_columns(frame.columns)
    null_share = frame[features].isna().mean()
    null_cells = int(frame[features].isna().sum().sum())
    content_hash = frame_sha256(frame)
    if ctx.rerun and ctx.recorded.content_hash not in (None, content_hash):
        ctx.log.warning(f"block {block}: its rows changed since it was processed; the new version is "
                        "processed as new data, not as a rerun")
        write_context(db, spec, block, ctx.run_id, decided=False)
    db.replace_block_rows("blocks", spec.name, block, [{
        "rows": len(frame), "source_file": ",".join(rows.source_files), "content_hash": content_hash,
        "null_cells": null_cells, "loaded_at": now_utc(),
    }], run_id=ctx.run_id)
    breaker = None if spec.prediction_only else circuit_breaker.describe(db.breaker_state(spec.name),
                                                                          datetime.now(UTC))
    return LoadedBlock(
        block=block, frame=frame, features=features, source_files=rows.source_files, version=version,
        content_hash=content_hash, null_cells=null_cells, max_null_share=float(null_share.max()),
        worst_column=str(null_share.idxmax()),
        nulls_within_limit=bool(null_share.max() <= spec.data_quality.max_null_share), labels=count,
        breaker=breaker,
    )
