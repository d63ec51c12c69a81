"""The assets' IO manager: Dagster's filesystem pickles (under the storage root, S3 too), with one clear error
when a block's stored value is not what this release's steps take.

A value pickled by an earlier release (a dict where the steps now hand dataclasses) is met when one asset of
an old block is materialized alone; Dagster's own type check would fail without naming the block or the fix.
"""

from __future__ import annotations

from collections.abc import Callable

from dagster import FilesystemIOManager, InitResourceContext, InputContext, IOManager, OutputContext

from calmops_dagster.errors import StaleAssetValueError
from calmops_dagster.steps import results


class StepResultsIOManager(FilesystemIOManager):
    """:class:`~dagster.FilesystemIOManager` whose loads check the value against the step's result type."""

    def create_io_manager(self, context: InitResourceContext) -> IOManager:
        return CheckedLoads(super().create_io_manager(context))


class CheckedLoads(IOManager):
    """Stores as ``pickles`` does; a load of a step's result that is not one raises
    :class:`~calmops_dagster.errors.StaleAssetValueError`."""

    def __init__(self, pickles: IOManager):
        self.pickles = pickles

    def handle_output(self, context: OutputContext, obj) -> None:
        self.pickles.handle_output(context, obj)

    def load_input(self, context: InputContext):
        return checked_load(context, lambda: self.pickles.load_input(context))


def checked_load(context: InputContext, load: Callable[[], object]):
    """``load()``, the value of ``context``'s input; :class:`StaleAssetValueError` when the input takes a
    step's result and the value is not one."""
    expected = context.dagster_type.typing_type
    wanted = isinstance(expected, type) and expected.__module__ == results.__name__
    try:
        value = load()
    except ModuleNotFoundError as exc:  # a class of the earlier release's modules, since moved
        if not wanted:
            raise
        raise StaleAssetValueError(stale_message(context, f"an object of module {exc.name}")) from exc
    if wanted and not isinstance(value, expected):
        raise StaleAssetValueError(stale_message(context, f"a {type(value).__name__}"))
    return value


def asset_partition(context: InputContext) -> str:
    """``<asset> partition <block>`` (the asset alone when it is not partitioned)."""
    asset = context.asset_key.to_user_string()
    return f"{asset} partition {context.asset_partition_key}" if context.has_asset_partitions else asset


def stale_message(context: InputContext, found: str) -> str:
    """One line: which asset and partition, what was found instead of the step's result, what to do."""
    where = asset_partition(context)
    return (f"{where}: its stored value is {found} from an earlier calmops-dagster release, not the "
            f"{context.dagster_type.typing_type.__name__} this release takes: materialize {where} and its "
            "upstream assets again, then retry")
