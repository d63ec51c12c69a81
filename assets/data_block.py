"""``data_block``: the block's rows, over :func:`calmops_dagster.steps.load_block.load_block`."""

from dagster import AssetCheckResult, AssetCheckSeverity, AssetExecutionContext, Output, asset

from calmops_dagster.assets.metadata import check_description, check_metadata, ui_metadata
from calmops_dagster.assets.wiring import SCHEMA_CHECK, check_spec, common, open_step
from calmops_dagster.orchestration.run_tags import VERSION_TAG
from calmops_dagster.resources.block_files_io import BLOCK_FILES_IO_MANAGER
from calmops_dagster.resources.home import CalmOpsHomeResource, MetricsStoreResource
from calmops_dagster.spec import PipelineSpec
from calmops_dagster.steps.results import LoadedBlock


def data_block_metadata(rows: LoadedBlock) -> dict:
    labels = {f"labels_{k}": int(v) for k, v in rows.labels.as_row().items()} if rows.labels else {}
    return ui_metadata({
        "rows": len(rows.frame), "columns": len(rows.frame.columns), "null_cells": rows.null_cells,
        "source_files": ", ".join(rows.source_files), "content_hash": rows.content_hash,
        "block_version": rows.version, **labels,
        "circuit_breaker": rows.breaker,
    })


def build_data_block(spec: PipelineSpec):
    @asset(
        name="data_block",
        description=f"Rows of one block of {spec.data_dir}: exactly the file versions the ingest record holds "
        "for it (block_files), schema-checked.",
        check_specs=[check_spec(spec, SCHEMA_CHECK, "data_block",
                                "Feature null share within data_quality.max_null_share")],
        io_manager_key=BLOCK_FILES_IO_MANAGER,
        **common(spec),
    )
    def data_block(context: AssetExecutionContext, home: CalmOpsHomeResource, metrics: MetricsStoreResource):
        from calmops_dagster.steps.load_block import load_block

        rows = load_block(open_step(spec, context, home, metrics))
        context.instance.add_run_tags(context.run_id, {VERSION_TAG: rows.version})
        yield Output(rows, metadata=data_block_metadata(rows))
        yield AssetCheckResult(
            check_name=SCHEMA_CHECK, passed=rows.nulls_within_limit, severity=AssetCheckSeverity.WARN,
            description=check_description(rows.block, rows.nulls_within_limit,
                                          f"largest null share {rows.max_null_share:.3g} ({rows.worst_column}), "
                                          f"allowed {spec.data_quality.max_null_share:.3g}"),
            metadata=check_metadata(rows.block, {"max_null_share": rows.max_null_share,
                                                 "worst_column": rows.worst_column,
                                                 "allowed": spec.data_quality.max_null_share}),
        )

    return data_block
