"""The labels sensor of a pipeline with delayed labels (``labels: {dir, id_col}``): ``<name>_labels``.

A tick stats every label file and hashes only the new ones and those whose size or mtime changed since the
cursor (:func:`~calmops_dagster.ingest.labels.label_file_versions`; a file modified less than
``sensor.settle_seconds`` ago is left for a later tick). When the settled files' contents changed, it
matches all labels to the kept blocks that came without their target
(:func:`~calmops_dagster.ingest.labels.label_arrival`), records each such block's counts (and labels for
rows never seen, as block ``__unmatched__``) in the ``labels`` table, and requests one run per block whose
labels are now complete, in block order: the block is processed again with its target (``data_block``
joins the labels), so its realized performance is recorded beside the estimate and its retrain/promotion
decision is made then, under the late-block rule. A file touched but not changed only updates the cursor
(:func:`~calmops_dagster.ingest.labels.labels_cursor`).
"""

import hashlib
import json

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from calmops_dagster.ingest.block_data import sort_block_keys
from calmops_dagster.ingest.labels import (
    UNMATCHED,
    label_arrival,
    label_file_versions,
    labels_cursor,
    read_label_files,
    read_labels_cursor,
)
from calmops_dagster.orchestration.run_tags import PIPELINE_TAG
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.speedups.daemon_interval import daemon_min_interval
from calmops_dagster.store.model_store import now_utc


def build_labels_sensor(spec: PipelineSpec, job):
    """The sensor watching ``spec.labels.dir``; on by default, like the file sensor."""

    @sensor(
        name=f"{spec.name}_labels",
        job=job,
        minimum_interval_seconds=daemon_min_interval(spec.sensor.interval_seconds),
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Watches {spec.labels.dir} for label files ({spec.labels.id_col}, {spec.target}).",
    )
    def labels_sensor(context: SensorEvaluationContext, home: CalmOpsHomeResource, metrics: MetricsStoreResource):
        previous, known = read_labels_cursor(context.cursor)
        versions = label_file_versions(spec.labels.dir, spec.sensor.settle_seconds, known)
        for name in versions.waiting:
            context.log.info(f"label file {name} is not settled yet (still being written?); will look again")
        hashes = versions.hashes
        if context.cursor and previous == hashes:
            if not versions.hashed and versions.files.keys() == known.keys():  # the cursor holds them as they are
                return SkipReason("no new label files")
            return SensorResult(skip_reason=SkipReason("no label file changed its content"),
                                cursor=labels_cursor(versions.files))
        labels = read_label_files(spec.labels.dir, spec.labels.id_col, spec.target, only=set(hashes))
        for name, reason in labels.bad.items():
            context.log.error(f"label file {name} not read: {reason}")
        arrival = label_arrival(home.paths.blocks_dir(spec.name), labels.frame, spec.labels.id_col, spec.target,
                                sort_block_keys)
        db, stamp, files = metrics.store(), now_utc(), ",".join(labels.files)
        for block, count in arrival.counts.items():
            db.replace_block_rows("labels", spec.name, block, [{**count.as_row(), "label_files": files,
                                                               "computed_at": stamp}])
        db.replace_block_rows("labels", spec.name, UNMATCHED, [{
            "unknown_ids": arrival.unmatched, "label_files": files, "bad_files": len(labels.bad),
            "computed_at": stamp}])
        if arrival.unmatched:
            context.log.warning(f"{arrival.unmatched} labelled id(s) match no row of any block seen so far")
        digest = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]
        requests = [RunRequest(run_key=f"labels:{block}:{digest}", partition_key=block,
                               tags={PIPELINE_TAG: spec.name}) for block in arrival.complete]
        cursor = labels_cursor(versions.files)
        if not requests:
            return SensorResult(skip_reason=SkipReason("no block has all its labels yet"), cursor=cursor)
        return SensorResult(run_requests=requests, cursor=cursor)

    return labels_sensor
